/**
 * Key handling shared by the agent (host key checking, identities) and the
 * relay (host key, authorized_keys): fingerprints, key type names, loading
 * and generating keys. Parsing itself is ssh2's (`utils.parseKey`).
 */
import { createHash } from "node:crypto";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import ssh2, { type ParsedKey } from "ssh2";
import { RevtunError } from "./errors.js";

const { utils } = ssh2;

/** OpenSSH's SHA256 fingerprint: "SHA256:" + unpadded base64 of the key blob's digest. */
export function fingerprintSha256(keyBlob: Buffer): string {
  return `SHA256:${createHash("sha256").update(keyBlob).digest("base64").replace(/=+$/, "")}`;
}

/** The key type name stored at the start of an SSH public key blob (RFC 4253 6.6). */
export function keyTypeOf(keyBlob: Buffer): string {
  if (keyBlob.length < 4) return "unknown";
  const len = keyBlob.readUInt32BE(0);
  return keyBlob.subarray(4, 4 + len).toString("latin1");
}

/**
 * ssh2's parseKey with its result unwrapped: it returns a key, an array of
 * keys (PPK files) or an Error; this returns the first key or an Error.
 */
export function parseKeyText(text: string | Buffer, passphrase?: string): ParsedKey | Error {
  const parsed = utils.parseKey(text, passphrase);
  if (parsed instanceof Error) return parsed;
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  return key ?? new Error("no key found");
}

/** Parses one public key ("type base64 [comment]") into its wire blob, or undefined. */
export function parsePublicKey(text: string): { type: string; blob: Buffer } | undefined {
  const key = parseKeyText(text);
  if (key instanceof Error) return undefined;
  return { type: key.type, blob: key.getPublicSSH() };
}

/**
 * A new ed25519 key pair in OpenSSH format.
 *
 * ssh2 1.17's generateKeyPairSync("ed25519") strips leading zero bytes from
 * the public key, so about one key in 256 comes out 31 bytes long and its own
 * parseKey rejects it ("Malformed OpenSSH private key"; mscdex/ssh2#1390,
 * #1513, open). `revtun relay` and `revtun demo` then failed to start. Such a
 * pair is discarded and another drawn; sixteen misses in a row (about 1 in
 * 10^38) would mean ssh2 changed, and are reported.
 */
export function generateEd25519(): { private: string; public: string } {
  for (let i = 0; i < 16; i++) {
    const pair = utils.generateKeyPairSync("ed25519");
    if (!(utils.parseKey(pair.private) instanceof Error) && !(utils.parseKey(pair.public) instanceof Error))
      return pair;
  }
  throw new RevtunError("CONFIG", "ssh2 generated no ed25519 key it can read back");
}

/**
 * Reads a host key for a server, generating an ed25519 key (mode 0600, with
 * `.pub` beside it) when the file does not exist. Returns the private key text
 * and whether it was created.
 */
export async function loadOrCreateHostKey(
  file: string,
): Promise<{ privateKey: string; publicKey: string; fingerprint: string; created: boolean }> {
  let privateKey: string;
  let created = false;
  try {
    privateKey = await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
      throw new RevtunError("CONFIG", `cannot read host key ${file}: ${(err as Error).message}`);
    }
    const pair = generateEd25519();
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, pair.private, { mode: 0o600 });
    await chmod(file, 0o600);
    await writeFile(`${file}.pub`, `${pair.public}\n`, { mode: 0o644 });
    privateKey = pair.private;
    created = true;
  }
  const key = parseKeyText(privateKey);
  if (key instanceof Error) {
    throw new RevtunError("CONFIG", `host key ${file} is not a private key ssh2 can read: ${key.message}`);
  }
  // ssh2 parses a .pub line too; the relay would print its fingerprint and
  // only fail when ssh2's server refused it (issue 12 item 12).
  if (!key.isPrivateKey()) {
    const priv = file.endsWith(".pub") ? file.slice(0, -".pub".length) : "";
    throw new RevtunError(
      "CONFIG",
      `host key ${file} is a public key; give the private key file${priv ? ` (${priv})` : ""}`,
    );
  }
  const blob = key.getPublicSSH();
  return {
    privateKey,
    publicKey: `${key.type} ${blob.toString("base64")}`,
    fingerprint: fingerprintSha256(blob),
    created,
  };
}
