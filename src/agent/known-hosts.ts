/**
 * Host key checking against OpenSSH known_hosts files: the format of sshd(8)
 * "SSH_KNOWN_HOSTS FILE FORMAT" and the policies of ssh_config(5)
 * StrictHostKeyChecking. Where the manuals leave the behaviour open, this
 * follows what ssh (OpenSSH 9.x, sshconnect.c/hostfile.c) actually does, so a
 * known_hosts file means the same thing to revtun as to ssh.
 */
import { createHmac, randomBytes } from "node:crypto";
import { type FileHandle, mkdir, open, readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { quote } from "../shared/bounded-text.js";
import {
  CertChecker,
  type Certificate,
  isCertificateType,
  parseCertificate,
} from "../shared/certificates/index.js";
import { RevtunError } from "../shared/errors.js";
import { fingerprintSha256, keyTypeOf } from "../shared/keys.js";
import { matchPatternList } from "../shared/patterns.js";

export type StrictHostKeyChecking = "yes" | "accept-new" | "no" | "ask";

export interface HostKeyCheck {
  /** As the user typed it / HostName (e.g. "127.0.0.1", "relay.example.net", "::1"). */
  host: string;
  /** 22 means the plain "host" form, anything else "[host]:port". */
  port: number;
  /** known_hosts files to read; the first is the one new keys are written to. Missing files are empty. */
  files: string[];
  policy: StrictHostKeyChecking;
  /** Write new entries hashed (|1|salt|hash), as ssh's HashKnownHosts. Default false. */
  hashKnownHosts?: boolean;
  /** Called for policy "ask" when the host is unknown; resolve true to accept (and record). Absent => refuse, as ssh without a terminal. */
  confirm?: (info: { host: string; port: number; keyType: string; fingerprint: string }) => Promise<boolean>;
  /** The time a host certificate's validity is checked at. Default: now. */
  clock?: () => Date;
}

export type HostKeyVerdict =
  /** `certificate` says which, when the key was a host certificate vouched for by the @cert-authority line at file:line. */
  | { status: "known"; file: string; line: number; certificate?: string }
  | { status: "recorded"; file: string }
  /** The key was accepted but could not be written (ssh logs this and connects anyway); `reason` says why. */
  | { status: "accepted-unrecorded"; reason?: string };

export type KnownHostMarker = "cert-authority" | "revoked";

export interface KnownHostEntry {
  /** 1-based line number in its file, so messages can say which line to remove. */
  line: number;
  marker?: KnownHostMarker;
  /** The host field as written: a comma-separated pattern list, or a hashed `|1|salt|hash` name. */
  hosts: string;
  /** Decoded salt and HMAC of a hashed host field. */
  hashed?: { salt: Buffer; hash: Buffer };
  keyType: string;
  /** The key's wire-format blob, the same bytes a server sends, so comparing keys is comparing blobs. */
  key: Buffer;
  comment: string;
}

const HASH_MAGIC = "|1|";
const SHA1_BYTES = 20;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;
const DEFAULT_PORT = 22;

/** Parses a known_hosts file's text. Lines ssh would reject are skipped, never fatal, as in ssh. */
export function parseKnownHosts(text: string): KnownHostEntry[] {
  const entries: KnownHostEntry[] = [];
  text.split("\n").forEach((raw, i) => {
    const entry = parseLine(raw, i + 1);
    if (entry) entries.push(entry);
  });
  return entries;
}

function parseLine(raw: string, line: number): KnownHostEntry | undefined {
  const text = raw.trim();
  if (text === "" || text.startsWith("#")) return undefined;
  const fields = text.split(/[ \t]+/);
  let marker: KnownHostMarker | undefined;
  if (fields[0]?.startsWith("@")) {
    const word = fields.shift();
    if (word === "@cert-authority") marker = "cert-authority";
    else if (word === "@revoked") marker = "revoked";
    // ssh rejects the whole line for an unknown marker rather than ignoring the marker,
    // which would silently turn e.g. a mistyped "@revoke" into a trusted key.
    else return undefined;
  }
  const [hosts, keyType, base64, ...comment] = fields;
  if (!hosts || !keyType || !base64 || !BASE64.test(base64)) return undefined;
  const key = Buffer.from(base64, "base64");
  // The blob names its own type; a line whose two types disagree is corrupt, and trusting
  // either half could match a key the user never wrote down.
  if (keyTypeOf(key) !== keyType) return undefined;
  let hashed: KnownHostEntry["hashed"];
  if (hosts.startsWith("|")) {
    hashed = parseHashedHost(hosts);
    if (!hashed) return undefined;
  }
  return {
    line,
    ...(marker ? { marker } : {}),
    hosts,
    ...(hashed ? { hashed } : {}),
    keyType,
    key,
    comment: comment.join(" "),
  };
}

function parseHashedHost(field: string): { salt: Buffer; hash: Buffer } | undefined {
  if (!field.startsWith(HASH_MAGIC)) return undefined;
  const [salt64, hash64, ...extra] = field.slice(HASH_MAGIC.length).split("|");
  if (!salt64 || !hash64 || extra.length > 0 || !BASE64.test(salt64) || !BASE64.test(hash64))
    return undefined;
  const salt = Buffer.from(salt64, "base64");
  const hash = Buffer.from(hash64, "base64");
  // ssh only accepts a salt as long as the SHA1 digest it keys.
  if (salt.length !== SHA1_BYTES || hash.length !== SHA1_BYTES) return undefined;
  return { salt, hash };
}

/** The name known_hosts stores for a host: `host` on port 22, `[host]:port` otherwise, lowercased as ssh does. */
export function knownHostsName(host: string, port: number): string {
  const name = host.toLowerCase();
  return port === DEFAULT_PORT ? name : `[${name}]:${port}`;
}

/** Whether an entry's host field names `name` (as from knownHostsName). */
export function entryMatchesHost(entry: KnownHostEntry, name: string): boolean {
  if (entry.hashed) return hashHost(name, entry.hashed.salt).equals(entry.hashed.hash);
  return matchPatternList(name, entry.hosts, true);
}

function hashHost(name: string, salt: Buffer): Buffer {
  return createHmac("sha1", salt).update(name).digest();
}

interface LocatedEntry extends KnownHostEntry {
  file: string;
}

async function loadEntries(files: string[]): Promise<LocatedEntry[]> {
  const all: LocatedEntry[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || code === "ENOTDIR") continue;
      // ssh ignores an unreadable file, which turns a known host into an unknown one that
      // accept-new would then trust; failing closed is the safer reading.
      throw new RevtunError(
        "CONFIG",
        `cannot read known_hosts file ${file}: ${(err as Error).message}; fix its permissions or remove it from UserKnownHostsFile`,
        { cause: err },
      );
    }
    for (const entry of parseKnownHosts(text)) all.push({ ...entry, file });
  }
  return all;
}

/**
 * Checks a server's host key against the known_hosts files under the given
 * policy. keyBlob is the raw SSH wire-format public key blob, as ssh2's
 * hostVerifier receives it. Throws RevtunError on refusal.
 */
export async function checkHostKey(check: HostKeyCheck, keyBlob: Buffer): Promise<HostKeyVerdict> {
  const entries = await loadEntries(check.files);
  if (isCertificateType(keyTypeOf(keyBlob))) return checkHostCertificate(check, keyBlob, entries);
  return checkPlainKey(check, keyBlob, entries);
}

async function checkPlainKey(
  check: HostKeyCheck,
  keyBlob: Buffer,
  entries: LocatedEntry[],
): Promise<HostKeyVerdict> {
  const name = knownHostsName(check.host, check.port);
  const offered: Offered = { name, type: keyTypeOf(keyBlob), fingerprint: fingerprintSha256(keyBlob) };

  // A revoked key stays refused whichever host name it is listed under and whatever else
  // says it is known: it is the private key that is compromised, not a name.
  const revoked = entries.find((e) => e.marker === "revoked" && e.key.equals(keyBlob));
  if (revoked) {
    throw new RevtunError(
      "HOSTKEY_REVOKED",
      `host key for ${name} (${offered.type} ${offered.fingerprint}) is marked @revoked in ${displayPath(revoked.file)}:${revoked.line}; refusing to connect`,
    );
  }

  // @cert-authority lines vouch for certificates (checkHostCertificate), so they neither
  // make a plain key known nor make a different one a mismatch.
  const forHost = entries.filter((e) => e.marker === undefined && entryMatchesHost(e, name));
  const match = forHost.find((e) => e.key.equals(keyBlob));
  if (match) return { status: "known", file: match.file, line: match.line };
  if (forHost.length > 0) throw mismatch(offered, keyBlob, forHost);

  // ssh falls back to the port-22 form for other ports, but only to accept an exact
  // match: a different key there is not a mismatch, since another port may be another server.
  if (check.port !== DEFAULT_PORT) {
    const bare = knownHostsName(check.host, DEFAULT_PORT);
    const found = entries.find(
      (e) => e.marker === undefined && e.key.equals(keyBlob) && entryMatchesHost(e, bare),
    );
    if (found) return { status: "known", file: found.file, line: found.line };
  }

  const target = check.files[0];
  if (target === undefined) {
    // Like ssh with UserKnownHostsFile=none: with nowhere to record a key, even "no" refuses.
    throw new RevtunError(
      "HOSTKEY_UNKNOWN",
      `host key for ${name} is not known (${offered.type} ${offered.fingerprint}) and no known_hosts file is configured to check or record it; set UserKnownHostsFile to a file such as ~/.ssh/known_hosts`,
    );
  }
  switch (check.policy) {
    case "yes":
      throw unknown(check, offered, target, "");
    case "ask": {
      if (!check.confirm) {
        throw unknown(check, offered, target, " and StrictHostKeyChecking=ask has no terminal to confirm it");
      }
      const accepted = await check.confirm({
        host: check.host,
        port: check.port,
        keyType: offered.type,
        fingerprint: offered.fingerprint,
      });
      if (!accepted) throw unknown(check, offered, target, " and was not confirmed");
      break;
    }
    case "accept-new":
    case "no":
      break;
    default: {
      const policy: never = check.policy;
      throw new RevtunError(
        "USAGE",
        `StrictHostKeyChecking must be yes, accept-new, no or ask, got \`${String(policy)}\``,
      );
    }
  }
  return record(target, name, keyBlob, check.hashKnownHosts ?? false);
}

/**
 * A host certificate, as ssh checks one (sshconnect.c check_host_key,
 * hostfile.c): refused if its key or its CA is @revoked; trusted if an
 * @cert-authority line for this host names its CA and the certificate is a
 * host certificate, valid now, naming the host (or HostKeyAlias) among its
 * principals, with a good CA signature (src/shared/certificates checks that).
 *
 * Without a CA line for it, ssh retries with the certified key as a plain
 * host key ("No matching CA found. Retry with plain key"); so do we, so a
 * host known by its key still connects. Unlike ssh, a certificate whose CA
 * is trusted here but which fails a check is refused outright, never
 * retried as a plain key that accept-new would then record: the operator
 * said which CA vouches for this host, and this certificate is not good.
 */
async function checkHostCertificate(
  check: HostKeyCheck,
  blob: Buffer,
  entries: LocatedEntry[],
): Promise<HostKeyVerdict> {
  const name = knownHostsName(check.host, check.port);
  let cert: Certificate;
  try {
    cert = parseCertificate(blob);
  } catch (err) {
    throw new RevtunError(
      "HOSTKEY_MISMATCH",
      `host certificate for ${name} is malformed: ${(err as Error).message}; refusing to connect`,
    );
  }
  const ca = `${keyTypeOf(cert.signatureKey)} ${fingerprintSha256(cert.signatureKey)}`;
  const what = `host certificate for ${name} (ID ${quote(cert.keyId)}, serial ${cert.serial}, CA ${ca})`;

  const revoked = entries.find(
    (e) => e.marker === "revoked" && (e.key.equals(cert.publicKey) || e.key.equals(cert.signatureKey)),
  );
  if (revoked) {
    const which = revoked.key.equals(cert.signatureKey) ? "its CA" : "its key";
    throw new RevtunError(
      "HOSTKEY_REVOKED",
      `${what}: ${which} is marked @revoked in ${displayPath(revoked.file)}:${revoked.line}; refusing to connect`,
    );
  }

  const authorities = entries.filter((e) => e.marker === "cert-authority" && entryMatchesHost(e, name));
  const trusted = authorities.find((e) => e.key.equals(cert.signatureKey));
  if (!trusted) {
    if (authorities.length === 0) return checkPlainKey(check, cert.publicKey, entries);
    // The host has CA lines, none for this CA: the plain key may still be known.
    const forHost = entries.filter((e) => e.marker === undefined && entryMatchesHost(e, name));
    const known = forHost.find((e) => e.key.equals(cert.publicKey));
    if (known) return { status: "known", file: known.file, line: known.line };
    const where = authorities
      .map((e) => `${fingerprintSha256(e.key)} at ${displayPath(e.file)}:${e.line}`)
      .join(", ");
    throw new RevtunError(
      "HOSTKEY_UNKNOWN",
      `${what} is signed by an unknown CA: the @cert-authority lines for ${name} trust ${where}; if you trust CA ${ca}, add an @cert-authority line for it`,
    );
  }

  const checker = new CertChecker({
    certType: "host",
    isAuthority: (caBlob) => caBlob.equals(trusted.key),
    // No critical option is defined for host certificates (PROTOCOL.certkeys).
    supportedCriticalOptions: [],
    ...(check.clock ? { clock: check.clock } : {}),
  });
  // ssh checks the name it looked the host up by: HostKeyAlias, else the host, lowercased.
  const principal = check.host.toLowerCase();
  try {
    checker.check(cert, principal);
  } catch (err) {
    throw new RevtunError(
      "HOSTKEY_MISMATCH",
      `host certificate for ${name}, trusted by ${displayPath(trusted.file)}:${trusted.line}, is refused: ${(err as Error).message}${certificateHint(cert, principal, check.clock)}`,
    );
  }
  return {
    status: "known",
    file: trusted.file,
    line: trusted.line,
    certificate: `ID ${quote(cert.keyId)} serial ${cert.serial}`,
  };
}

/** What to do about a refused host certificate, for the cases a person can act on. */
function certificateHint(cert: Certificate, principal: string, clock?: () => Date): string {
  const now = BigInt(Math.floor((clock?.() ?? new Date()).getTime() / 1000));
  if (cert.certType !== "host") return "; the server presents a user certificate as its host key";
  if (cert.principals.length > 0 && !cert.principals.includes(principal)) {
    return `; connect by one of its names, set HostKeyAlias to one, or have the CA re-sign the host key with -n ${principal}`;
  }
  if (now >= cert.validBefore || now < cert.validAfter) {
    return "; have the CA re-sign the host key (ssh-keygen -s CA -h -V ...) or check this machine's clock";
  }
  return "";
}

interface Offered {
  name: string;
  type: string;
  fingerprint: string;
}

function unknown(check: HostKeyCheck, offered: Offered, target: string, why: string): RevtunError {
  const file = shellPath(target);
  const port = check.port === DEFAULT_PORT ? "" : `-p ${check.port} `;
  return new RevtunError(
    "HOSTKEY_UNKNOWN",
    `host key for ${offered.name} is not known (${offered.type} ${offered.fingerprint})${why}; to trust it, add it to ${file} (ssh-keyscan ${port}${check.host} >> ${file}) or connect once with -o StrictHostKeyChecking=accept-new`,
  );
}

/**
 * ssh treats any non-matching key for the host as a changed host key, even one of
 * another type than the offered key (checked against OpenSSH 9.2: with only an
 * ssh-rsa key known, an offered ssh-ed25519 key gets "REMOTE HOST IDENTIFICATION
 * HAS CHANGED" and is never added, even with accept-new). Otherwise an attacker
 * without the known key could pass as a new host simply by offering another type.
 */
function mismatch(offered: Offered, keyBlob: Buffer, forHost: LocatedEntry[]): RevtunError {
  const sameType = forHost.find((e) => e.keyType === keyTypeOf(keyBlob));
  const head = `host key for ${offered.name} has CHANGED: the server offers ${offered.type} ${offered.fingerprint}`;
  if (sameType) {
    return new RevtunError(
      "HOSTKEY_MISMATCH",
      `${head}, ${displayPath(sameType.file)}:${sameType.line} has ${fingerprintSha256(sameType.key)}; this may be a man-in-the-middle attack. If you trust the new key, remove line ${sameType.line} of ${displayPath(sameType.file)} (${removeCommand(sameType.file, offered.name)})`,
    );
  }
  const where = forHost.map((e) => `${e.keyType} at ${displayPath(e.file)}:${e.line}`).join(", ");
  const files = [...new Set(forHost.map((e) => e.file))];
  return new RevtunError(
    "HOSTKEY_MISMATCH",
    `${head}, but only keys of other types are known for it (${where}); this may be a man-in-the-middle attack. If the server really replaced its keys and you trust the new one, remove the old entries (${files.map((f) => removeCommand(f, offered.name)).join("; ")})`,
  );
}

function removeCommand(file: string, name: string): string {
  const isDefault = file === join(homedir(), ".ssh", "known_hosts");
  return `ssh-keygen ${isDefault ? "" : `-f ${shellQuote(file)} `}-R "${name}"`;
}

/** The path with `~` for the home directory, as users write these paths. */
function displayPath(file: string): string {
  const home = homedir();
  return home && file.startsWith(`${home}/`) ? `~${file.slice(home.length)}` : file;
}

/** A path for a shell command line: the `~` form when it needs no quoting, since quotes stop `~` expanding. */
function shellPath(file: string): string {
  const shown = displayPath(file);
  return SHELL_SAFE.test(shown) ? shown : shellQuote(file);
}

const SHELL_SAFE = /^[\w@%+=:,./~-]+$/;

function shellQuote(s: string): string {
  return SHELL_SAFE.test(s) ? s : `'${s.replaceAll("'", "'\\''")}'`;
}

/** Appends a key for `name` to `file`. A failure does not refuse the key: ssh, too, only warns and connects. */
async function record(file: string, name: string, keyBlob: Buffer, hash: boolean): Promise<HostKeyVerdict> {
  const host = hash ? hashedName(name) : name;
  const line = `${host} ${keyTypeOf(keyBlob)} ${keyBlob.toString("base64")}\n`;
  try {
    await appendLine(file, line);
  } catch (err) {
    return {
      status: "accepted-unrecorded",
      reason: `cannot record the host key for ${name} in ${file}: ${(err as Error).message}`,
    };
  }
  return { status: "recorded", file };
}

function hashedName(name: string): string {
  const salt = randomBytes(SHA1_BYTES);
  return `${HASH_MAGIC}${salt.toString("base64")}|${hashHost(name, salt).toString("base64")}`;
}

async function appendLine(file: string, line: string): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  let fh: FileHandle;
  try {
    fh = await open(file, "ax+", 0o600);
    // open's mode is filtered through the umask; known_hosts should be private whatever it is.
    await fh.chmod(0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    fh = await open(file, "a+");
  }
  try {
    const stat = await fh.stat();
    let prefix = "";
    if (stat.isFile() && stat.size > 0) {
      // A last line without its newline (hand-edited files often lack one) would otherwise
      // be glued to ours, corrupting both.
      const last = Buffer.alloc(1);
      await fh.read(last, 0, 1, stat.size - 1);
      if (last[0] !== 0x0a) prefix = "\n";
    }
    // One write, so concurrent appenders (O_APPEND) cannot interleave within the line.
    await fh.write(prefix + line);
  } finally {
    await fh.close();
  }
}

/**
 * Whether an @cert-authority line could vouch for host:port, so the client
 * should ask for certificate host key algorithms first, as ssh does
 * (sshconnect2.c order_hostkeyalgs); without one, a server's certificate
 * could only be checked as its plain key.
 */
export async function trustsHostCertificates(host: string, port: number, files: string[]): Promise<boolean> {
  const name = knownHostsName(host, port);
  return (await loadEntries(files)).some((e) => e.marker === "cert-authority" && entryMatchesHost(e, name));
}

/** The host key algorithms a key type can be verified with; RSA keys sign with any of three. */
function algorithmsFor(keyType: string): string[] {
  return keyType === "ssh-rsa" ? ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] : [keyType];
}

/**
 * Host key algorithms for the key types already known for host:port, in file
 * order, so the client can prefer them as ssh does: otherwise a server with
 * several host keys may present one we do not know, which counts as changed.
 */
export async function knownKeyAlgorithms(host: string, port: number, files: string[]): Promise<string[]> {
  const name = knownHostsName(host, port);
  const algorithms: string[] = [];
  for (const entry of await loadEntries(files)) {
    if (entry.marker !== undefined || !entryMatchesHost(entry, name)) continue;
    for (const alg of algorithmsFor(entry.keyType)) if (!algorithms.includes(alg)) algorithms.push(alg);
  }
  return algorithms;
}
