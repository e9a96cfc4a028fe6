/**
 * The relay as a certificate authority (`--ca-key FILE`): the CA's private
 * key, loaded once, and its signature in SSH form (RFC 4253 6.6; RFC 5656 3.1.2
 * for ECDSA; RFC 8332 for RSA). Signing is node:crypto's; this file only
 * chooses the hash each key type signs with and wraps the result.
 */
import { createPrivateKey, type KeyObject, sign } from "node:crypto";
import { verifySshSignature } from "../../shared/certificates/index.js";
import { RevtunError } from "../../shared/errors.js";
import { fingerprintSha256, parseKeyText } from "../../shared/keys.js";
import { readPrivateFile } from "../fleet/fleet-secrets.js";
import { WireWriter } from "./ssh-wire.js";

export interface CertificateAuthority {
  /** The CA public key's wire blob: the certificate's signature key. */
  readonly publicBlob: Buffer;
  /** "ssh-ed25519 AAAA...": the operators' `@cert-authority` line ends in this. */
  readonly publicKey: string;
  readonly fingerprint: string;
  /** The SSH signature blob (string algorithm, string signature) over `data`. */
  sign(data: Buffer): Buffer;
  /** Whether `signature` (an SSH signature blob) over `data` is this CA's. */
  verify(data: Buffer, signature: Buffer): boolean;
}

/** Hash and SSH signature name per CA key type. RSA signs rsa-sha2-512 (OpenSSH's default since 8.2). */
const SIGNERS: Record<string, { hash: string | null; algo: string }> = {
  "ssh-ed25519": { hash: null, algo: "ssh-ed25519" },
  "ecdsa-sha2-nistp256": { hash: "sha256", algo: "ecdsa-sha2-nistp256" },
  "ecdsa-sha2-nistp384": { hash: "sha384", algo: "ecdsa-sha2-nistp384" },
  "ecdsa-sha2-nistp521": { hash: "sha512", algo: "ecdsa-sha2-nistp521" },
  "ssh-rsa": { hash: "sha512", algo: "rsa-sha2-512" },
};

/** Reads `--ca-key FILE`, refused when readable by group or others (as `--fleet-key`). */
export async function loadCertificateAuthority(file: string): Promise<CertificateAuthority> {
  return parseCertificateAuthority(await readPrivateFile(file, "CA key"), file);
}

export function parseCertificateAuthority(text: string, file = "CA key"): CertificateAuthority {
  const key = parseKeyText(text);
  if (key instanceof Error)
    throw new RevtunError("CONFIG", `CA key ${file} is not an unencrypted private key: ${key.message}`);
  if (!key.isPrivateKey())
    throw new RevtunError("CONFIG", `CA key ${file} is a public key; give the private key`);
  const signer = SIGNERS[key.type];
  if (!signer)
    throw new RevtunError(
      "CONFIG",
      `CA key ${file} is ${key.type}; a CA key must be ed25519, ECDSA or RSA (ssh-keygen -t ed25519)`,
    );
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(key.getPrivatePEM());
  } catch (err) {
    throw new RevtunError("CONFIG", `CA key ${file} cannot be used: ${(err as Error).message}`);
  }
  const publicBlob = key.getPublicSSH();
  return {
    publicBlob,
    publicKey: `${key.type} ${publicBlob.toString("base64")}`,
    fingerprint: fingerprintSha256(publicBlob),
    sign(data) {
      const ecdsa = signer.algo.startsWith("ecdsa-");
      const raw = sign(
        signer.hash,
        data,
        ecdsa ? { key: privateKey, dsaEncoding: "ieee-p1363" } : privateKey,
      );
      let body: Buffer = raw;
      if (ecdsa) {
        // RFC 5656 3.1.2: the signature is the string of (mpint r, mpint s).
        const half = raw.length / 2;
        body = new WireWriter().mpint(raw.subarray(0, half)).mpint(raw.subarray(half)).toBuffer();
      }
      return new WireWriter().string(signer.algo).string(body).toBuffer();
    },
    verify(data, signature) {
      return verifySshSignature(publicBlob, signature, data);
    },
  };
}
