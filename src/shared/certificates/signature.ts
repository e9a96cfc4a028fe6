/**
 * SSH signatures checked with node:crypto (never our own crypto): a public
 * key blob becomes a KeyObject (by JWK, which node validates: an ECDSA
 * point off its curve is refused), and a signature blob (RFC 4253 6.6:
 * string algorithm, string signature) is verified over the data.
 *
 * Used for the CA's signature on a certificate, and by the relay for a
 * client's signature made with a certified key, which ssh2 1.17 hands over
 * untouched: with OpenSSH's plain algorithm name in front and, for ECDSA,
 * r and s as SSH mpints rather than DER.
 */
import { createPublicKey, type KeyObject, verify } from "node:crypto";
import { quote } from "../bounded-text.js";
import { RevtunError } from "../errors.js";
import type { Certificate } from "./certificate.js";
import { WireReader } from "./wire.js";

const CURVES: Record<string, { crv: string; size: number; hash: string }> = {
  "ecdsa-sha2-nistp256": { crv: "P-256", size: 32, hash: "sha256" },
  "ecdsa-sha2-nistp384": { crv: "P-384", size: 48, hash: "sha384" },
  "ecdsa-sha2-nistp521": { crv: "P-521", size: 66, hash: "sha512" },
};

/** RSA signature algorithms (RFC 8332) and their hashes. */
const RSA_HASHES: Record<string, string> = {
  "rsa-sha2-512": "sha512",
  "rsa-sha2-256": "sha256",
  "ssh-rsa": "sha1",
};

const b64url = (b: Buffer) => b.toString("base64url");

/** A node KeyObject for a plain SSH public key blob; throws RevtunError for anything else. */
export function publicKeyObject(blob: Buffer): KeyObject {
  const r = new WireReader(blob, "public key");
  const type = r.string("type").toString("latin1");
  let jwk: Record<string, string>;
  if (type === "ssh-ed25519") {
    const x = r.string("ed25519 key");
    if (x.length !== 32) throw new RevtunError("CERTIFICATE", "ed25519 public key is not 32 bytes");
    jwk = { kty: "OKP", crv: "Ed25519", x: b64url(x) };
  } else if (CURVES[type]) {
    const { crv, size } = CURVES[type];
    const curve = r.string("curve").toString("latin1");
    if (`ecdsa-sha2-${curve}` !== type)
      throw new RevtunError("CERTIFICATE", `ECDSA key of type ${type} names curve ${quote(curve)}`);
    const q = r.string("point");
    if (q.length !== 1 + 2 * size || q[0] !== 4)
      throw new RevtunError("CERTIFICATE", `${type} public point is not an uncompressed ${crv} point`);
    jwk = { kty: "EC", crv, x: b64url(q.subarray(1, 1 + size)), y: b64url(q.subarray(1 + size)) };
  } else if (type === "ssh-rsa") {
    const e = r.mpint("RSA exponent");
    const n = r.mpint("RSA modulus");
    jwk = { kty: "RSA", e: b64url(e), n: b64url(n) };
  } else {
    throw new RevtunError(
      "CERTIFICATE",
      `key type ${quote(type)} is not one revtun verifies signatures with`,
    );
  }
  r.end();
  try {
    return createPublicKey({ key: jwk, format: "jwk" });
  } catch (err) {
    throw new RevtunError("CERTIFICATE", `${type} public key is invalid: ${(err as Error).message}`);
  }
}

/** Splits a signature blob into its algorithm name and signature bytes; undefined when malformed. */
export function parseSignatureBlob(blob: Buffer): { algorithm: string; signature: Buffer } | undefined {
  try {
    const r = new WireReader(blob, "signature");
    const algorithm = r.string("algorithm").toString("latin1");
    const signature = r.string("signature");
    r.end();
    return { algorithm, signature };
  } catch {
    return undefined;
  }
}

/** Whether a signature named `algorithm` can be made by a key of `keyType`. */
export function signatureFitsKey(algorithm: string, keyType: string): boolean {
  if (keyType === "ssh-rsa") return Object.hasOwn(RSA_HASHES, algorithm);
  return algorithm === keyType;
}

/**
 * Verifies `signatureBlob` (string algorithm, string signature) by the key
 * `keyBlob` over `data`. False for a bad signature, a malformed blob, an
 * algorithm that does not fit the key, or an unusable key: the caller only
 * ever needs "verified or not".
 */
export function verifySshSignature(keyBlob: Buffer, signatureBlob: Buffer, data: Buffer): boolean {
  const parsed = parseSignatureBlob(signatureBlob);
  if (!parsed) return false;
  let key: KeyObject;
  let keyType: string;
  try {
    key = publicKeyObject(keyBlob);
    keyType = new WireReader(keyBlob, "public key").string("type").toString("latin1");
  } catch {
    return false;
  }
  const { algorithm, signature } = parsed;
  if (!signatureFitsKey(algorithm, keyType)) return false;
  try {
    if (keyType === "ssh-ed25519") return signature.length === 64 && verify(null, data, key, signature);
    const curve = CURVES[keyType];
    if (curve) {
      const p1363 = ecdsaToP1363(signature, curve.size);
      return p1363 !== undefined && verify(curve.hash, data, { key, dsaEncoding: "ieee-p1363" }, p1363);
    }
    const hash = RSA_HASHES[algorithm] as string;
    // OpenSSH pads an RSA signature to the modulus length, but accepts a
    // shorter one (ssh-rsa.c: "if (len < modlen) ... memmove"); OpenSSL
    // wants exactly the modulus length, so pad as OpenSSH does.
    const modLen = Math.ceil((key.asymmetricKeyDetails?.modulusLength ?? 0) / 8);
    if (signature.length > modLen) return false;
    const padded = Buffer.concat([Buffer.alloc(modLen - signature.length), signature]);
    return verify(hash, data, key, padded);
  } catch {
    return false;
  }
}

/** An SSH ECDSA signature (string holding mpint r, mpint s) as IEEE P1363 r||s, or undefined. */
function ecdsaToP1363(sig: Buffer, size: number): Buffer | undefined {
  try {
    const r = new WireReader(sig, "ECDSA signature");
    const rr = r.mpint("r");
    const ss = r.mpint("s");
    r.end();
    if (rr.length > size || ss.length > size) return undefined;
    const out = Buffer.alloc(2 * size);
    rr.copy(out, size - rr.length);
    ss.copy(out, 2 * size - ss.length);
    return out;
  } catch {
    return undefined;
  }
}

/** Whether the CA's signature on `cert` verifies, by the CA key the certificate names. */
export function verifyCertificateSignature(cert: Certificate): boolean {
  return verifySshSignature(cert.signatureKey, cert.signature, cert.signedData);
}

/** The algorithm named in a certificate's CA signature ("" when unreadable). */
export function certificateSignatureAlgorithm(cert: Certificate): string {
  return parseSignatureBlob(cert.signature)?.algorithm ?? "";
}
