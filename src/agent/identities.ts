/**
 * Identities: the private keys to offer, from -i / IdentityFile, or ssh's
 * default files in ~/.ssh when none is named.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { ParsedKey } from "ssh2";
import { expandTilde } from "../shared/address.js";
import { RevtunError } from "../shared/errors.js";
import { fingerprintSha256, parseKeyText } from "../shared/keys.js";

export interface IdentityOptions {
  /** Identity files named by the user (-i, IdentityFile). Missing ones are an error. */
  identityFiles: string[];
  passphrase?: string | undefined;
  /** Home directory for the default identities (~/.ssh/id_*). */
  home?: string | undefined;
}

export interface Identity {
  file: string;
  key: ParsedKey;
  /** For messages: "ssh-ed25519 SHA256:…". */
  label: string;
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

/** Loads the identities to offer: the named ones, else ssh's defaults that exist. */
export async function loadIdentities(opts: IdentityOptions): Promise<Identity[]> {
  const explicit = opts.identityFiles.length > 0;
  const files = explicit
    ? opts.identityFiles.map((f) => expandTilde(f, opts.home))
    : DEFAULT_IDENTITIES.map((f) => expandTilde(join("~/.ssh", f), opts.home));
  const out: Identity[] = [];
  for (const f of files) {
    const id = await loadIdentity(f, opts.passphrase, explicit);
    if (id) out.push(id);
  }
  return out;
}
