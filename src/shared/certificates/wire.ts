/**
 * A bounds-checked reader of SSH wire data (RFC 4251 5: uint32, uint64,
 * string, mpint), for certificates and KRLs, which come from files and
 * peers. Every read past the end throws one RevtunError naming what was
 * being read, so a truncated or forged blob is one line, never a crash.
 */
import { RevtunError } from "../errors.js";

export class WireReader {
  private pos = 0;

  constructor(
    private readonly buf: Buffer,
    /** What the buffer is, for messages ("certificate", "KRL"). */
    private readonly what: string,
  ) {}

  get offset(): number {
    return this.pos;
  }

  get remaining(): number {
    return this.buf.length - this.pos;
  }

  private need(n: number, field: string): void {
    if (n > this.remaining)
      throw new RevtunError(
        "CERTIFICATE",
        `${this.what} is truncated: ${field} at byte ${this.pos} needs ${n} bytes, ${this.remaining} left`,
      );
  }

  byte(field: string): number {
    this.need(1, field);
    return this.buf[this.pos++] as number;
  }

  u32(field: string): number {
    this.need(4, field);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  u64(field: string): bigint {
    this.need(8, field);
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }

  /** A string's bytes (a view, not a copy). */
  string(field: string): Buffer {
    const len = this.u32(field);
    this.need(len, field);
    const v = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return v;
  }

  /**
   * A string that must be text: bytes outside UTF-8 are refused, as names
   * and key ids are text, and so is NUL, as OpenSSH's sshbuf_get_cstring
   * does ("device42\0x" must not pass for one name and print as another).
   */
  text(field: string): string {
    const bytes = this.string(field);
    if (bytes.includes(0)) throw new RevtunError("CERTIFICATE", `${this.what}: ${field} contains a NUL byte`);
    const s = bytes.toString("utf8");
    if (!Buffer.from(s, "utf8").equals(bytes))
      throw new RevtunError("CERTIFICATE", `${this.what}: ${field} is not valid UTF-8`);
    return s;
  }

  /** An mpint's magnitude, without sign and leading zero bytes; negative values are refused. */
  mpint(field: string): Buffer {
    const bytes = this.string(field);
    if (bytes.length > 0 && ((bytes[0] as number) & 0x80) !== 0)
      throw new RevtunError("CERTIFICATE", `${this.what}: ${field} is a negative number`);
    let i = 0;
    while (i < bytes.length && bytes[i] === 0) i++;
    return bytes.subarray(i);
  }

  /** The bytes read so far from `start`. */
  slice(start: number, end = this.pos): Buffer {
    return this.buf.subarray(start, end);
  }

  /** Refuses trailing bytes: a blob is exactly its fields. */
  end(): void {
    if (this.remaining !== 0)
      throw new RevtunError("CERTIFICATE", `${this.what} has ${this.remaining} unexpected trailing bytes`);
  }
}

/** Encodes `data` as an SSH string. */
export function sshString(data: Buffer | string): Buffer {
  const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : data;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(bytes.length);
  return Buffer.concat([len, bytes]);
}
