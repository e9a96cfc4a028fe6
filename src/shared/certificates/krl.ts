/**
 * OpenSSH key revocation lists (`ssh-keygen -k`; PROTOCOL.krl, krl.c):
 *
 *   "SSHKRL\n\0" uint32 format version (1) uint64 KRL version
 *   uint64 generated date  uint64 flags  string reserved  string comment
 *   then sections, each: byte type, string data
 *     1 certificates: string CA key (empty: any CA), string reserved, then
 *       subsections (byte type, string data): 0x20 serial list (uint64...),
 *       0x21 serial range (uint64 lo, uint64 hi), 0x22 serial bitmap
 *       (uint64 offset, mpint bits: bit i revokes offset+i), 0x23 key ids
 *     2 explicit keys (string plain key blob...)
 *     3 SHA1 / 5 SHA256 digests of plain key blobs (string...)
 *     4 signature (string key, then a signature string outside the section)
 *
 * Like krl.c, an unknown section or trailing data refuses the whole file:
 * half a revocation list would let revoked keys back in. Signatures are
 * skipped, as sshd does for RevokedKeys (it passes no signing CA).
 */
import { createHash } from "node:crypto";
import { quote } from "../bounded-text.js";
import { RevtunError } from "../errors.js";
import { fingerprintSha256 } from "../keys.js";
import type { Certificate } from "./certificate.js";
import { WireReader } from "./wire.js";

export const KRL_MAGIC = Buffer.from("SSHKRL\n\0", "latin1");

/** Revocations under one CA (or any CA, for `ca` undefined). */
export interface KrlCertificates {
  ca: Buffer | undefined;
  /** Inclusive serial ranges. */
  serials: Array<[bigint, bigint]>;
  keyIds: Set<string>;
}

export interface Krl {
  version: bigint;
  generatedAt: bigint;
  comment: string;
  certificates: KrlCertificates[];
  /** Plain key blobs, base64 (a Set of strings finds a Buffer by value). */
  keys: Set<string>;
  sha1: Set<string>;
  sha256: Set<string>;
}

/** Most serial ranges one bitmap may expand to; bounds memory for a hostile file. */
const MAX_BITMAP_BITS = 1 << 24;

/** Whether `data` starts with the KRL magic. */
export function isKrl(data: Buffer): boolean {
  return data.length >= KRL_MAGIC.length && data.subarray(0, KRL_MAGIC.length).equals(KRL_MAGIC);
}

/** Parses a binary KRL; throws RevtunError("CERTIFICATE") with one line when it is malformed. */
export function parseKrl(data: Buffer): Krl {
  if (!isKrl(data)) throw new RevtunError("CERTIFICATE", 'not a KRL: it does not start with "SSHKRL"');
  const r = new WireReader(data.subarray(KRL_MAGIC.length), "KRL");
  const format = r.u32("format version");
  if (format !== 1) throw new RevtunError("CERTIFICATE", `KRL format version ${format} is not 1`);
  const krl: Krl = {
    version: r.u64("KRL version"),
    generatedAt: r.u64("generated date"),
    certificates: [],
    keys: new Set(),
    sha1: new Set(),
    sha256: new Set(),
    comment: "",
  };
  r.u64("flags");
  r.string("reserved");
  krl.comment = r.string("comment").toString("utf8");
  while (r.remaining > 0) {
    const type = r.byte("section type");
    const section = r.string(`section ${type}`);
    if (type === 4) {
      // The signature string follows the section; everything after a signature must be signatures.
      r.string("KRL signature");
      continue;
    }
    const s = new WireReader(section, `KRL section ${type}`);
    switch (type) {
      case 1:
        krl.certificates.push(certificateSection(s));
        break;
      case 2:
        while (s.remaining > 0) krl.keys.add(s.string("revoked key").toString("base64"));
        break;
      case 3:
      case 5: {
        const size = type === 3 ? 20 : 32;
        while (s.remaining > 0) {
          const digest = s.string("key hash");
          if (digest.length !== size)
            throw new RevtunError(
              "CERTIFICATE",
              `KRL ${type === 3 ? "SHA1" : "SHA256"} hash is ${digest.length} bytes, not ${size}`,
            );
          (type === 3 ? krl.sha1 : krl.sha256).add(digest.toString("base64"));
        }
        break;
      }
      default:
        throw new RevtunError(
          "CERTIFICATE",
          `KRL section type ${type} is unknown (ssh-keygen -k makes 1, 2, 3, 4, 5)`,
        );
    }
    s.end();
  }
  return krl;
}

function certificateSection(s: WireReader): KrlCertificates {
  const caBlob = s.string("CA key");
  s.string("reserved");
  const out: KrlCertificates = {
    ca: caBlob.length ? Buffer.from(caBlob) : undefined,
    serials: [],
    keyIds: new Set(),
  };
  while (s.remaining > 0) {
    const type = s.byte("certificate subsection type");
    const sub = new WireReader(
      s.string(`certificate subsection ${type}`),
      `KRL certificate subsection ${type}`,
    );
    switch (type) {
      case 0x20:
        while (sub.remaining > 0) {
          const serial = sub.u64("serial");
          out.serials.push([serial, serial]);
        }
        break;
      case 0x21: {
        const lo = sub.u64("serial range start");
        const hi = sub.u64("serial range end");
        if (lo > hi) throw new RevtunError("CERTIFICATE", `KRL serial range ${lo}-${hi} runs backwards`);
        out.serials.push([lo, hi]);
        break;
      }
      case 0x22: {
        const offset = sub.u64("bitmap offset");
        const bits = sub.mpint("bitmap");
        if (bits.length * 8 > MAX_BITMAP_BITS)
          throw new RevtunError("CERTIFICATE", `KRL serial bitmap of ${bits.length * 8} bits is too large`);
        // Bit i, counted from the least significant end, revokes offset + i; runs become ranges.
        let runStart: number | undefined;
        const total = bits.length * 8;
        for (let i = 0; i <= total; i++) {
          const byte = i < total ? (bits[bits.length - 1 - (i >> 3)] as number) : 0;
          // Whole bytes with nothing to change are skipped: a bitmap is mostly runs.
          if ((i & 7) === 0 && i < total && byte === (runStart === undefined ? 0 : 0xff)) {
            i += 7;
            continue;
          }
          const set = i < total && ((byte >> (i & 7)) & 1) === 1;
          if (set && runStart === undefined) runStart = i;
          if (!set && runStart !== undefined) {
            const hi = offset + BigInt(i - 1);
            if (hi > 0xffff_ffff_ffff_ffffn)
              throw new RevtunError("CERTIFICATE", "KRL serial bitmap runs past serial 2^64-1");
            out.serials.push([offset + BigInt(runStart), hi]);
            runStart = undefined;
          }
        }
        break;
      }
      case 0x23:
        while (sub.remaining > 0) out.keyIds.add(sub.text("key id"));
        break;
      default:
        throw new RevtunError(
          "CERTIFICATE",
          `KRL certificate subsection type 0x${type.toString(16)} is unknown`,
        );
    }
    sub.end();
  }
  return out;
}

/**
 * Why `key` (a plain key blob, or a certificate) is revoked by `krl`, or
 * undefined. As krl.c ssh_krl_check_key: the key by hash and by blob, then
 * a certificate by key id and serial under its CA (serial 0, the default
 * when the CA gives none, is never revoked by serial), then the CA key.
 */
export function krlRevokes(krl: Krl, key: Buffer | Certificate): string | undefined {
  if (Buffer.isBuffer(key)) return plainKeyRevoked(krl, key);
  const byKey = plainKeyRevoked(krl, key.publicKey);
  if (byKey) return byKey;
  for (const section of krl.certificates) {
    if (section.ca && !section.ca.equals(key.signatureKey)) continue;
    if (section.keyIds.has(key.keyId)) return `key id ${quote(key.keyId)} is revoked`;
    if (key.serial !== 0n && section.serials.some(([lo, hi]) => key.serial >= lo && key.serial <= hi))
      return `serial ${key.serial} of CA ${fingerprintSha256(key.signatureKey)} is revoked`;
  }
  const ca = plainKeyRevoked(krl, key.signatureKey);
  return ca ? `its CA ${ca}` : undefined;
}

function plainKeyRevoked(krl: Krl, blob: Buffer): string | undefined {
  const listed =
    krl.keys.has(blob.toString("base64")) ||
    krl.sha1.has(createHash("sha1").update(blob).digest("base64")) ||
    krl.sha256.has(createHash("sha256").update(blob).digest("base64"));
  return listed ? `key ${fingerprintSha256(blob)} is revoked` : undefined;
}
