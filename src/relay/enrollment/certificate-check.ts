/**
 * Reading back the certificates this relay's CA signed, and the signatures a
 * device makes with a certified key at login: the field layout of
 * PROTOCOL.certkeys (sign-certificate.ts writes it), checked with
 * node:crypto. Certificates from other CAs are src/shared/certificates'
 * business (issue 20), not this file's.
 */
import { createPublicKey, type KeyObject, verify } from "node:crypto";
import { splitKeyBlob, WireReader } from "./ssh-wire.js";

export interface SignedCertificate {
  /** "ssh-ed25519" etc.: the certified key's own type. */
  keyType: string;
  /** The certified public key's wire blob. */
  publicKey: Buffer;
  serial: bigint;
  certType: number;
  keyId: string;
  principals: string[];
  /** Seconds since the epoch. */
  validAfter: bigint;
  validBefore: bigint;
  criticalOptions: Buffer;
  signatureKey: Buffer;
  /** The certificate up to the signature: what the CA signed. */
  signed: Buffer;
  signature: Buffer;
}

const CERT_SUFFIX = "-cert-v01@openssh.com";

export function isCertificateAlgorithm(algo: string): boolean {
  return algo.endsWith(CERT_SUFFIX);
}

/** Parses a certificate blob; throws one phrase on a malformed one. */
export function parseSignedCertificate(blob: Buffer): SignedCertificate {
  const r = new WireReader(blob);
  const certName = r.text();
  if (!certName.endsWith(CERT_SUFFIX)) throw new Error(`${certName} is not a certificate type`);
  const keyType = certName.slice(0, -CERT_SUFFIX.length).replace(/^rsa-sha2-(256|512)$/, "ssh-rsa");
  r.string(); // nonce
  const fieldsStart = r.offset;
  const fieldCount =
    keyType === "ssh-rsa" ? 2 : keyType.startsWith("ecdsa-") ? 2 : keyType === "ssh-ed25519" ? 1 : 0;
  if (fieldCount === 0) throw new Error(`unsupported certified key type ${keyType}`);
  for (let i = 0; i < fieldCount; i++) r.string();
  const type = Buffer.alloc(4 + keyType.length);
  type.writeUInt32BE(keyType.length);
  type.write(keyType, 4, "latin1");
  const publicKey = Buffer.concat([type, blob.subarray(fieldsStart, r.offset)]);
  const serial = r.uint64();
  const certType = r.uint32();
  const keyId = r.text();
  const principalsBlob = new WireReader(r.string());
  const principals: string[] = [];
  while (!principalsBlob.done) principals.push(principalsBlob.text());
  const validAfter = r.uint64();
  const validBefore = r.uint64();
  const criticalOptions = r.string();
  r.string(); // extensions
  r.string(); // reserved
  const signatureKey = r.string();
  const signed = blob.subarray(0, r.offset);
  const signature = r.string();
  if (!r.done) throw new Error("trailing bytes after the signature");
  return {
    keyType,
    publicKey,
    serial,
    certType,
    keyId,
    principals,
    validAfter,
    validBefore,
    criticalOptions,
    signatureKey,
    signed,
    signature,
  };
}

const CURVES: Record<string, { crv: string; hash: string; size: number }> = {
  "ecdsa-sha2-nistp256": { crv: "P-256", hash: "sha256", size: 32 },
  "ecdsa-sha2-nistp384": { crv: "P-384", hash: "sha384", size: 48 },
  "ecdsa-sha2-nistp521": { crv: "P-521", hash: "sha512", size: 66 },
};

/** A node:crypto public key from an SSH public key blob (ed25519, ECDSA, RSA). */
export function publicKeyObject(blob: Buffer): KeyObject {
  const r = new WireReader(blob);
  const type = r.text();
  const b64 = (b: Buffer) => b.toString("base64url");
  const unsigned = (b: Buffer) => (b[0] === 0 ? b.subarray(1) : b);
  if (type === "ssh-ed25519")
    return createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: b64(r.string()) }, format: "jwk" });
  if (type === "ssh-rsa") {
    const e = unsigned(r.string());
    const n = unsigned(r.string());
    return createPublicKey({ key: { kty: "RSA", e: b64(e), n: b64(n) }, format: "jwk" });
  }
  const curve = CURVES[type];
  if (!curve) throw new Error(`unsupported key type ${type}`);
  r.string(); // curve name
  const q = r.string();
  if (q[0] !== 4 || q.length !== 1 + 2 * curve.size) throw new Error("compressed or malformed ECDSA point");
  return createPublicKey({
    key: {
      kty: "EC",
      crv: curve.crv,
      x: b64(q.subarray(1, 1 + curve.size)),
      y: b64(q.subarray(1 + curve.size)),
    },
    format: "jwk",
  });
}

const RSA_HASHES: Record<string, string> = {
  "rsa-sha2-512": "sha512",
  "rsa-sha2-256": "sha256",
  "ssh-rsa": "sha1",
  "rsa-sha2-512-cert-v01@openssh.com": "sha512",
  "rsa-sha2-256-cert-v01@openssh.com": "sha256",
  "ssh-rsa-cert-v01@openssh.com": "sha1",
};

/**
 * Verifies `signature` over `data` with the key `keyBlob`. The signature is
 * the SSH blob (string algorithm, string signature), or, as ssh2's server
 * hands it when the client named the certificate algorithm inside it, the
 * bare signature (then `algo` is the algorithm the client named).
 */
export function verifySshSignature(keyBlob: Buffer, data: Buffer, signature: Buffer, algo: string): boolean {
  try {
    let sigAlgo = algo;
    let sig = signature;
    if (signature.length > 8) {
      const n = signature.readUInt32BE(0);
      const name =
        n < 64 && 4 + n + 4 <= signature.length ? signature.subarray(4, 4 + n).toString("latin1") : "";
      if (/^(ssh-|rsa-|ecdsa-)[a-z0-9@.-]+$/.test(name)) {
        const r = new WireReader(signature);
        sigAlgo = r.text();
        sig = r.string();
      }
    }
    const key = publicKeyObject(keyBlob);
    const { type } = splitKeyBlob(keyBlob);
    if (type === "ssh-ed25519") return verify(null, data, key, sig);
    if (type === "ssh-rsa") {
      const hash = RSA_HASHES[sigAlgo];
      return hash !== undefined && hash !== "sha1" && verify(hash, data, key, sig);
    }
    const curve = CURVES[type];
    if (!curve) return false;
    // RFC 5656 3.1.2: (mpint r, mpint s), each padded to the curve size for IEEE P1363.
    const rs = new WireReader(sig);
    const pad = (m: Buffer) => {
      const u = m[0] === 0 ? m.subarray(1) : m;
      return u.length > curve.size ? undefined : Buffer.concat([Buffer.alloc(curve.size - u.length), u]);
    };
    const rr = pad(rs.string());
    const ss = pad(rs.string());
    if (!rr || !ss) return false;
    return verify(curve.hash, data, { key, dsaEncoding: "ieee-p1363" }, Buffer.concat([rr, ss]));
  } catch {
    return false;
  }
}
