/**
 * A revoked keys file, as sshd's RevokedKeys takes it: an OpenSSH KRL
 * (`ssh-keygen -k`), or text with one public key a line (`#` comments,
 * blank lines). A certificate line in the text form revokes its key. sshd
 * skips a text line it cannot read; here it is reported (with its line
 * number) and the file refused, since a typo in a revocation list would
 * otherwise silently revoke nothing.
 */
import { readFile } from "node:fs/promises";
import { quote } from "../bounded-text.js";
import { RevtunError } from "../errors.js";
import { fingerprintSha256, parsePublicKey } from "../keys.js";
import { type Certificate, isCertificateType, parseCertificate } from "./certificate.js";
import { isKrl, krlRevokes, parseKrl } from "./krl.js";

export interface RevocationList {
  kind: "krl" | "keys";
  /** Entries: listed keys, or the KRL's keys, hashes, serial ranges and key ids. */
  size: number;
  /** Why `key` (a plain key blob or a certificate) is revoked, or undefined. */
  isRevoked(key: Buffer | Certificate): string | undefined;
}

/** Largest revoked keys file read: bounds memory whatever the file holds. */
export const MAX_REVOKED_KEYS_BYTES = 16 * 1024 * 1024;

export function parseRevokedKeys(data: Buffer, source = "revoked keys"): RevocationList {
  if (isKrl(data)) {
    let krl: ReturnType<typeof parseKrl>;
    try {
      krl = parseKrl(data);
    } catch (err) {
      throw new RevtunError("CERTIFICATE", `${source}: ${(err as Error).message}`, { cause: err });
    }
    const size =
      krl.keys.size +
      krl.sha1.size +
      krl.sha256.size +
      krl.certificates.reduce((n, c) => n + c.serials.length + c.keyIds.size, 0);
    return { kind: "krl", size, isRevoked: (key) => krlRevokes(krl, key) };
  }
  const keys = new Set<string>();
  data
    .toString("utf8")
    .split(/\r?\n/)
    .forEach((raw, idx) => {
      const line = raw.trim();
      if (line === "" || line.startsWith("#")) return;
      const [type = "", b64 = ""] = line.split(/[ \t]+/);
      const blob = keyLineBlob(type, b64);
      if (!blob)
        throw new RevtunError(
          "CERTIFICATE",
          `${source}:${idx + 1}: not a public key or a KRL (type ${quote(type)}); make a KRL with ssh-keygen -k -f FILE KEY.pub`,
        );
      keys.add(blob.toString("base64"));
    });
  const listed = (blob: Buffer) =>
    keys.has(blob.toString("base64")) ? `key ${fingerprintSha256(blob)} is listed in ${source}` : undefined;
  return {
    kind: "keys",
    size: keys.size,
    isRevoked: (key) => {
      if (Buffer.isBuffer(key)) return listed(key);
      const ca = listed(key.signatureKey);
      return listed(key.publicKey) ?? (ca ? `its CA ${ca}` : undefined);
    },
  };
}

/** The plain key blob of a `type base64` line; a certificate gives its certified key. */
function keyLineBlob(type: string, b64: string): Buffer | undefined {
  if (isCertificateType(type)) {
    try {
      return parseCertificate(Buffer.from(b64, "base64")).publicKey;
    } catch {
      return undefined;
    }
  }
  const parsed = b64 ? parsePublicKey(`${type} ${b64}`) : undefined;
  return parsed && parsed.type === type ? parsed.blob : undefined;
}

/**
 * A revoked keys file's bytes as a list, for a file given in the
 * configuration: too large or malformed is RevtunError("CONFIG") (exit 2),
 * naming the file.
 */
export function revocationList(data: Buffer, file: string): RevocationList {
  if (data.length > MAX_REVOKED_KEYS_BYTES)
    throw new RevtunError(
      "CONFIG",
      `revoked keys ${file} is ${data.length} bytes, more than the ${MAX_REVOKED_KEYS_BYTES} read`,
    );
  try {
    return parseRevokedKeys(data, file);
  } catch (err) {
    throw new RevtunError("CONFIG", (err as Error).message, { cause: err });
  }
}

/** Reads and parses a revoked keys file; throws RevtunError("CONFIG") naming the file and the problem. */
export async function loadRevokedKeys(file: string): Promise<RevocationList> {
  let data: Buffer;
  try {
    data = await readFile(file);
  } catch (err) {
    throw new RevtunError("CONFIG", `cannot read revoked keys ${file}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return revocationList(data, file);
}
