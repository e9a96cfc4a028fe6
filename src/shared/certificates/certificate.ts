/**
 * OpenSSH certificates (PROTOCOL.certkeys): parsing the wire blob into its
 * fields, with nothing checked but its shape. Trust is checker.ts's job
 * and the CA signature signature.ts's.
 *
 *   string  type ("ssh-ed25519-cert-v01@openssh.com", ...)
 *   string  nonce
 *   ...     the certified key's public fields, as in its plain key blob
 *   uint64  serial
 *   uint32  type (1 user, 2 host)
 *   string  key id
 *   string  valid principals (a list of strings)
 *   uint64  valid after, uint64 valid before (seconds since the epoch)
 *   string  critical options, string extensions (lists of name, data)
 *   string  reserved
 *   string  signature key (the CA's plain public key blob)
 *   string  signature (over every byte before it)
 */
import { quote } from "../bounded-text.js";
import { RevtunError } from "../errors.js";
import { fingerprintSha256, keyTypeOf } from "../keys.js";
import { sshString, WireReader } from "./wire.js";

export interface Certificate {
  /** The certificate type, e.g. `ssh-ed25519-cert-v01@openssh.com`. */
  type: string;
  /** The certified key's plain algorithm, e.g. `ssh-ed25519`. */
  keyType: string;
  nonce: Buffer;
  /** The certified key's plain public key wire blob. */
  publicKey: Buffer;
  serial: bigint;
  certType: "user" | "host";
  keyId: string;
  principals: string[];
  /** Seconds since the epoch; the certificate is valid from this instant (inclusive). */
  validAfter: bigint;
  /** Seconds since the epoch; valid until before this instant (exclusive). 2^64-1 is "forever". */
  validBefore: bigint;
  /** Name to value ("" for a flag). */
  criticalOptions: Map<string, string>;
  extensions: Map<string, string>;
  /** The CA's public key blob. */
  signatureKey: Buffer;
  /** The CA's signature blob (string algorithm, string signature). */
  signature: Buffer;
  /** The bytes the signature covers: the whole blob up to the signature field. */
  signedData: Buffer;
  /** The whole certificate blob. */
  raw: Buffer;
}

/** A validBefore of 2^64-1: `ssh-keygen` without `-V`, never expires. */
export const FOREVER = 0xffff_ffff_ffff_ffffn;

/**
 * The certificate types and how each one's key fields read. DSA and
 * security-key (sk-) certificates are left out: OpenSSH 9.2 disables DSA,
 * and sk- signatures carry flags and a counter this module does not check.
 */
const KEY_FIELDS: Record<string, { keyType: string; read: (r: WireReader) => void }> = {
  "ssh-ed25519-cert-v01@openssh.com": {
    keyType: "ssh-ed25519",
    read: (r) => {
      if (r.string("ed25519 public key").length !== 32)
        throw new RevtunError("CERTIFICATE", "certificate: ed25519 public key is not 32 bytes");
    },
  },
  "ecdsa-sha2-nistp256-cert-v01@openssh.com": {
    keyType: "ecdsa-sha2-nistp256",
    read: ecdsaFields("nistp256"),
  },
  "ecdsa-sha2-nistp384-cert-v01@openssh.com": {
    keyType: "ecdsa-sha2-nistp384",
    read: ecdsaFields("nistp384"),
  },
  "ecdsa-sha2-nistp521-cert-v01@openssh.com": {
    keyType: "ecdsa-sha2-nistp521",
    read: ecdsaFields("nistp521"),
  },
  "ssh-rsa-cert-v01@openssh.com": {
    keyType: "ssh-rsa",
    read: (r) => {
      r.mpint("RSA exponent");
      r.mpint("RSA modulus");
    },
  },
};

function ecdsaFields(curve: string): (r: WireReader) => void {
  return (r) => {
    const named = r.string("ECDSA curve").toString("latin1");
    if (named !== curve)
      throw new RevtunError(
        "CERTIFICATE",
        `certificate: ECDSA curve ${quote(named)} does not fit its type (${curve})`,
      );
    r.string("ECDSA public point");
  };
}

/** Whether `type` names an OpenSSH certificate type this module reads. */
export function isCertificateType(type: string): boolean {
  return Object.hasOwn(KEY_FIELDS, type);
}

/**
 * The plain algorithm of a certificate type (`ssh-ed25519` for
 * `ssh-ed25519-cert-v01@openssh.com`), or undefined for anything else.
 */
export function plainKeyType(certType: string): string | undefined {
  return isCertificateType(certType) ? KEY_FIELDS[certType]?.keyType : undefined;
}

/** Most principals, options or extensions a certificate may list (OpenSSH's SSHKEY_CERT_MAX_PRINCIPALS is 256). */
const MAX_ENTRIES = 256;

/**
 * Parses an OpenSSH certificate blob. Throws RevtunError("CERTIFICATE")
 * with one line on anything malformed; checks no trust.
 */
export function parseCertificate(blob: Buffer): Certificate {
  const r = new WireReader(blob, "certificate");
  const type = r.string("type").toString("latin1");
  const fields = KEY_FIELDS[type];
  if (!fields || !Object.hasOwn(KEY_FIELDS, type))
    throw new RevtunError(
      "CERTIFICATE",
      `${quote(type)} is not a certificate type revtun reads (ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa -cert-v01@openssh.com)`,
    );
  const nonce = Buffer.from(r.string("nonce"));
  const keyStart = r.offset;
  fields.read(r);
  // The certified key's fields are the plain key blob's fields: prefix the plain type.
  const publicKey = Buffer.concat([sshString(fields.keyType), r.slice(keyStart)]);
  const serial = r.u64("serial");
  const kind = r.u32("certificate type");
  if (kind !== 1 && kind !== 2)
    throw new RevtunError("CERTIFICATE", `certificate type ${kind} is neither user (1) nor host (2)`);
  const keyId = r.text("key id");
  const principals = stringList(r.string("principals"), "principals");
  const validAfter = r.u64("valid after");
  const validBefore = r.u64("valid before");
  const criticalOptions = optionList(r.string("critical options"), "critical option");
  const extensions = optionList(r.string("extensions"), "extension");
  r.string("reserved");
  const signatureKey = Buffer.from(r.string("signature key"));
  const signedData = Buffer.from(r.slice(0));
  const signature = Buffer.from(r.string("signature"));
  r.end();
  const caType = keyTypeOf(signatureKey);
  // A CA key that is itself a certificate would chain trust; OpenSSH refuses it (sshkey.c cert_parse).
  if (caType.includes("-cert-"))
    throw new RevtunError(
      "CERTIFICATE",
      `certificate is signed by a certificate (${quote(caType)}), not a CA key`,
    );
  return {
    type,
    keyType: fields.keyType,
    nonce,
    publicKey,
    serial,
    certType: kind === 1 ? "user" : "host",
    keyId,
    principals,
    validAfter,
    validBefore,
    criticalOptions,
    extensions,
    signatureKey,
    signature,
    signedData,
    raw: Buffer.from(blob),
  };
}

function stringList(data: Buffer, what: string): string[] {
  const r = new WireReader(data, `certificate ${what}`);
  const out: string[] = [];
  while (r.remaining > 0) {
    if (out.length >= MAX_ENTRIES)
      throw new RevtunError("CERTIFICATE", `certificate lists more than ${MAX_ENTRIES} ${what}`);
    out.push(r.text("principal"));
  }
  return out;
}

/**
 * Critical options and extensions: (string name, string data) pairs, where
 * data is empty for a flag and otherwise holds one string, the value.
 * A name listed twice is refused, as OpenSSH does (auth-options.c
 * cert_option_list: "duplicate").
 */
function optionList(data: Buffer, what: string): Map<string, string> {
  const r = new WireReader(data, `certificate ${what}s`);
  const out = new Map<string, string>();
  while (r.remaining > 0) {
    if (out.size >= MAX_ENTRIES)
      throw new RevtunError("CERTIFICATE", `certificate lists more than ${MAX_ENTRIES} ${what}s`);
    const name = r.text(`${what} name`);
    const body = r.string(`${what} ${quote(name)} data`);
    let value = "";
    if (body.length > 0) {
      const inner = new WireReader(body, `certificate ${what} ${quote(name)}`);
      value = inner.text("value");
      inner.end();
    }
    if (out.has(name)) throw new RevtunError("CERTIFICATE", `certificate lists ${what} ${quote(name)} twice`);
    out.set(name, value);
  }
  return out;
}

/** Seconds since the epoch as an ISO instant, "forever" for FOREVER, for messages. */
export function describeTime(seconds: bigint): string {
  if (seconds >= FOREVER) return "forever";
  const ms = seconds * 1000n;
  if (ms > 8_640_000_000_000_000n) return `${seconds} s`;
  return new Date(Number(ms)).toISOString().replace(".000Z", "Z");
}

/**
 * How a certificate is named in messages and records: key id, serial and
 * the CA's fingerprint, e.g. `certificate "device42" (serial 7, CA SHA256:...)`.
 */
export function describeCertificate(cert: Certificate): string {
  return `certificate ${quote(cert.keyId)} (serial ${cert.serial}, CA ${fingerprintSha256(cert.signatureKey)})`;
}
