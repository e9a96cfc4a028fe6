/**
 * Identities: the private keys to offer, from -i / IdentityFile, or ssh's
 * default files in ~/.ssh when none is named, and the user certificates for
 * them: CertificateFile, or else each key's `-cert.pub` beside it.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { ParsedKey } from "ssh2";
import { expandTilde } from "../shared/address.js";
import { quote } from "../shared/bounded-text.js";
import { type Certificate, describeTime, parseCertificate } from "../shared/certificates/index.js";
import { RevtunError } from "../shared/errors.js";
import { fingerprintSha256, parseKeyText } from "../shared/keys.js";
import { certificateIdentity } from "../ssh2/user-certificate.js";

export interface IdentityOptions {
  /** Identity files named by the user (-i, IdentityFile). Missing ones are an error. */
  identityFiles: string[];
  /** User certificates named by the user (CertificateFile). Missing ones are an error. */
  certificateFiles?: string[];
  passphrase?: string | undefined;
  /** Home directory for the default identities (~/.ssh/id_*). */
  home?: string | undefined;
}

export interface Identity {
  /** The private key's file, or for a certificate the certificate's. */
  file: string;
  /** What ssh2 authenticates with: the key, or the key presenting its certificate. */
  key: ParsedKey;
  /** For messages: "ssh-ed25519 SHA256:…", with a certificate's ID and serial. */
  label: string;
  /** The user certificate `key` presents, if it is one. */
  certificate?: Certificate;
}

export const DEFAULT_IDENTITIES = ["id_ed25519", "id_ecdsa", "id_rsa"];

async function loadIdentity(file: string, passphrase: string | undefined, explicit: boolean) {
  let text: Buffer;
  try {
    text = await readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (!explicit && code === "ENOENT") return undefined;
    throw new RevtunError(
      "IDENTITY",
      code === "ENOENT"
        ? `identity file ${file} not found; check -i / IdentityFile`
        : `cannot read identity file ${file}: ${(err as Error).message}`,
    );
  }
  const key = parseKeyText(text, passphrase);
  if (key instanceof Error) {
    const msg = key.message;
    if (/encrypted|passphrase|decrypt|bad decrypt/i.test(msg)) {
      throw new RevtunError(
        "IDENTITY",
        passphrase === undefined
          ? `identity file ${file} is encrypted; give its passphrase in REVTUN_PASSPHRASE or --passphrase-file`
          : `wrong passphrase for identity file ${file} (publickey)`,
      );
    }
    throw new RevtunError("IDENTITY", `identity file ${file} is not a private key revtun can read: ${msg}`);
  }
  if (!key.isPrivateKey()) {
    throw new RevtunError("IDENTITY", `identity file ${file} holds a public key; give the private key file`);
  }
  return { file, key, label: `${key.type} ${fingerprintSha256(key.getPublicSSH())}` } satisfies Identity;
}

/** Loads the identities to offer: keys (loadKeys) with their certificates (withCertificates). */
export async function loadIdentities(opts: IdentityOptions): Promise<Identity[]> {
  return withCertificates(await loadKeys(opts), opts);
}

/** The private keys: the named ones, else ssh's defaults that exist. */
export async function loadKeys(opts: IdentityOptions): Promise<Identity[]> {
  const explicit = opts.identityFiles.length > 0;
  const files = explicit
    ? opts.identityFiles.map((f) => expandTilde(f, opts.home))
    : DEFAULT_IDENTITIES.map((f) => expandTilde(join("~/.ssh", f), opts.home));
  const keys: Identity[] = [];
  for (const f of files) {
    const id = await loadIdentity(f, opts.passphrase, explicit);
    if (id) keys.push(id);
  }
  return keys;
}

/**
 * The keys with their user certificates, in ssh's order (ssh.c
 * load_public_identity_files, sshconnect2.c pubkey_prepare): each
 * CertificateFile's certificate with the key it certifies, then the keys.
 * Without CertificateFile, a key's `-cert.pub` beside it is offered right
 * after the key, as ssh does. The tunnel calls this again before each
 * reconnect, as ssh reads them for each connection: a short-lived
 * certificate renewed on disk is used without a restart.
 */
export async function withCertificates(
  keys: Identity[],
  opts: Pick<IdentityOptions, "certificateFiles" | "home">,
): Promise<Identity[]> {
  const certificateFiles = (opts.certificateFiles ?? []).map((f) => expandTilde(f, opts.home));
  const out: Identity[] = [];
  for (const file of certificateFiles) {
    const cert = await loadCertificate(file, true);
    if (!cert) continue;
    if (cert.certType !== "user") {
      throw new RevtunError(
        "IDENTITY",
        `certificate file ${file} holds a host certificate; logging in needs a user certificate (ssh-keygen -s without -h)`,
      );
    }
    const id = keys.find((k) => k.key.getPublicSSH().equals(cert.publicKey));
    if (!id) {
      throw new RevtunError(
        "IDENTITY",
        `certificate file ${file} certifies ${cert.keyType} ${fingerprintSha256(cert.publicKey)}, which no identity file holds; name its private key with -i or IdentityFile`,
      );
    }
    out.push(withCertificate(id, cert, file));
  }
  for (const id of keys) {
    out.push(id);
    if (certificateFiles.length > 0) continue;
    // ssh loads "<key>-cert.pub" silently when it is there, and offers it
    // even if it is not for this key; the server would refuse that, so skip it.
    const file = `${id.file}-cert.pub`;
    const cert = await loadCertificate(file, false).catch(() => undefined);
    if (cert?.certType === "user" && id.key.getPublicSSH().equals(cert.publicKey)) {
      out.push(withCertificate(id, cert, file));
    }
  }
  return out;
}

function withCertificate(id: Identity, cert: Certificate, file: string): Identity {
  let key: ParsedKey;
  try {
    key = certificateIdentity(id.key, cert.raw);
  } catch (err) {
    throw new RevtunError("IDENTITY", `certificate file ${file}: ${(err as Error).message}`);
  }
  const base = `${cert.type} ${fingerprintSha256(cert.publicKey)} ID ${quote(cert.keyId)} serial ${cert.serial}`;
  return {
    file,
    key,
    certificate: cert,
    // Read when a refusal is reported, so the expiry is as of then.
    get label() {
      return `${base}${expiry(cert)}`;
    },
  };
}

/** ", expired <time>" or ", not valid before <time>", for the refusal message that lists what was tried. */
function expiry(cert: Certificate): string {
  const now = BigInt(Math.floor(Date.now() / 1000));
  if (now >= cert.validBefore) return `, expired ${describeTime(cert.validBefore)}`;
  if (now < cert.validAfter) return `, not valid before ${describeTime(cert.validAfter)}`;
  return "";
}

/** A user certificate from an OpenSSH `-cert.pub` file: `type base64 [comment]`. */
async function loadCertificate(file: string, explicit: boolean): Promise<Certificate | undefined> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (!explicit && code === "ENOENT") return undefined;
    throw new RevtunError(
      "IDENTITY",
      code === "ENOENT"
        ? `certificate file ${file} not found; check CertificateFile`
        : `cannot read certificate file ${file}: ${(err as Error).message}`,
    );
  }
  const [type, base64] = text.trim().split(/\s+/);
  try {
    const cert = parseCertificate(Buffer.from(base64 ?? "", "base64"));
    if (cert.type !== type) throw new Error(`its blob is a ${cert.type}, its line says ${quote(type ?? "")}`);
    return cert;
  } catch (err) {
    throw new RevtunError(
      "IDENTITY",
      `certificate file ${file} is not an OpenSSH certificate revtun can read: ${(err as Error).message}`,
    );
  }
}
