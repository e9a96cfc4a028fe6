/**
 * The SSH wire encoding (RFC 4251 5) that certificates are made of: uint32,
 * uint64, string, mpint. A writer that appends and a reader that throws one
 * sentence on a short or oversized field, so a malformed blob from a peer is
 * an error, never a crash.
 */

export class WireWriter {
  private readonly parts: Buffer[] = [];

  uint32(n: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n >>> 0);
    this.parts.push(b);
    return this;
  }

  uint64(n: bigint): this {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(n);
    this.parts.push(b);
    return this;
  }

  string(s: string | Buffer): this {
    const b = typeof s === "string" ? Buffer.from(s, "utf8") : s;
    this.uint32(b.length);
    this.parts.push(b);
    return this;
  }

  /** An unsigned big-endian magnitude as an mpint: no leading zeros, one 0x00 if the top bit is set. */
  mpint(magnitude: Buffer): this {
    let i = 0;
    while (i < magnitude.length && magnitude[i] === 0) i++;
    const m = magnitude.subarray(i);
    return this.string(m.length && (m[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.from([0]), m]) : m);
  }

  /** Bytes appended as they are (fields already encoded). */
  raw(b: Buffer): this {
    this.parts.push(b);
    return this;
  }

  toBuffer(): Buffer {
    return Buffer.concat(this.parts);
  }
}

export class WireReader {
  private pos = 0;

  constructor(private readonly buf: Buffer) {}

  get offset(): number {
    return this.pos;
  }

  get done(): boolean {
    return this.pos === this.buf.length;
  }

  uint32(): number {
    if (this.pos + 4 > this.buf.length) throw new Error("truncated uint32");
    const n = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return n;
  }

  uint64(): bigint {
    if (this.pos + 8 > this.buf.length) throw new Error("truncated uint64");
    const n = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return n;
  }

  string(): Buffer {
    const len = this.uint32();
    if (this.pos + len > this.buf.length) throw new Error(`string of ${len} bytes overruns the blob`);
    const s = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return s;
  }

  text(): string {
    return this.string().toString("utf8");
  }
}

/** The type name at the start of a key or certificate blob, and the fields after it. */
export function splitKeyBlob(blob: Buffer): { type: string; fields: Buffer } {
  const r = new WireReader(blob);
  const type = r.text();
  return { type, fields: blob.subarray(r.offset) };
}
