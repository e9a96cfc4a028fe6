/**
 * OpenSSH certificates made by the relay's CA: the encoding of
 * PROTOCOL.certkeys (OpenSSH's own spec of `ssh-keygen -s`), field by field,
 * signed by certificate-authority.ts. What `ssh-keygen -L` shows of the
 * result is checked in test/relay/enrollment/sign-certificate.test.ts.
 */
import { randomBytes } from "node:crypto";
import type { CertificateAuthority } from "./certificate-authority.js";
import { splitKeyBlob, WireWriter } from "./ssh-wire.js";

/** PROTOCOL.certkeys: SSH2_CERT_TYPE_USER, SSH2_CERT_TYPE_HOST. */
export const CERT_TYPE = { user: 1, host: 2 } as const;

/** Key types the relay signs, and their certificate names. */
const CERT_NAMES: Record<string, string> = {
  "ssh-ed25519": "ssh-ed25519-cert-v01@openssh.com",
  "ecdsa-sha2-nistp256": "ecdsa-sha2-nistp256-cert-v01@openssh.com",
  "ecdsa-sha2-nistp384": "ecdsa-sha2-nistp384-cert-v01@openssh.com",
  "ecdsa-sha2-nistp521": "ecdsa-sha2-nistp521-cert-v01@openssh.com",
  "ssh-rsa": "ssh-rsa-cert-v01@openssh.com",
};

export interface CertificateRequest {
  /** The subject's public key blob (the device's key, or its sshd host key). */
  publicKey: Buffer;
  certType: keyof typeof CERT_TYPE;
  keyId: string;
  principals: readonly string[];
  validAfter: Date;
  validBefore: Date;
  serial: bigint;
  /** Extension names, each with empty data (permit-port-forwarding, ...). */
  extensions?: readonly string[];
}

/** Whether the relay signs keys of this type. */
export function signableKeyType(type: string): boolean {
  return type in CERT_NAMES;
}

/** A random 64-bit serial: unique in practice across relays that never coordinate. */
export function randomSerial(): bigint {
  return randomBytes(8).readBigUInt64BE(0);
}

/** The certificate blob (as the base64 of a `-cert.pub` line carries it). */
export function signCertificate(ca: CertificateAuthority, req: CertificateRequest): Buffer {
  const { type, fields } = splitKeyBlob(req.publicKey);
  const certName = CERT_NAMES[type];
  if (!certName) throw new Error(`cannot certify a ${type} key`);
  const principals = new WireWriter();
  for (const p of req.principals) principals.string(p);
  // PROTOCOL.certkeys: extensions sorted by name, each with its (here empty) data string.
  const extensions = new WireWriter();
  for (const name of [...(req.extensions ?? [])].sort()) extensions.string(name).string("");
  const body = new WireWriter()
    .string(certName)
    // The nonce makes the signed data unpredictable to whoever asks for it
    // (PROTOCOL.certkeys: against chosen-prefix hash collisions).
    .string(randomBytes(32))
    // The subject key's own fields (ed25519: pk; ECDSA: curve, Q; RSA: e, n), as they are.
    .raw(fields)
    .uint64(req.serial)
    .uint32(CERT_TYPE[req.certType])
    .string(req.keyId)
    .string(principals.toBuffer())
    .uint64(BigInt(Math.max(0, Math.floor(req.validAfter.getTime() / 1000))))
    .uint64(BigInt(Math.floor(req.validBefore.getTime() / 1000)))
    .string("") // critical options: none
    .string(extensions.toBuffer())
    .string("") // reserved
    .string(ca.publicBlob)
    .toBuffer();
  return Buffer.concat([body, new WireWriter().string(ca.sign(body)).toBuffer()]);
}

/** The one line of a `-cert.pub` file. */
export function certificateLine(blob: Buffer, comment: string): string {
  return `${splitKeyBlob(blob).type} ${blob.toString("base64")} ${comment}`;
}
