/**
 * authorized_keys parsing, per sshd(8) AUTHORIZED_KEYS FILE FORMAT:
 * `[options] keytype base64-key [comment]`, where options are
 * comma-separated `name` or `name="value"` (a quoted value may hold commas
 * and `\"`), names case-insensitive, applied in order (so `restrict` then
 * `port-forwarding` re-enables forwarding, and the reverse disables it).
 *
 * Only options the relay acts on are interpreted; those sshd knows but a
 * forwarding-only relay has no use for (NOT_APPLICABLE) are recorded so the
 * caller can log them; an unknown option makes the line a problem, as in
 * sshd. A line that cannot be parsed is reported and skipped, never
 * half-applied.
 *
 * A `cert-authority` line's key is a CA: it admits user certificates it
 * signed (policy.ts authorizeCertificate), never itself. Its
 * `principals="a,b"` says which certificate principals it admits; without
 * it the login name must be one of them (sshd auth2-pubkey.c).
 */
import { readFile } from "node:fs/promises";
import { quote } from "../shared/bounded-text.js";
import { RevtunError } from "../shared/errors.js";
import { fingerprintSha256, parsePublicKey } from "../shared/keys.js";
import { checkFromList } from "./address-match.js";

/** One `permitlisten="[host:]port"`. */
export interface ListenPermission {
  /** Host pattern; undefined for a bare port (any address the relay's own rules allow). */
  host?: string;
  /** "any" for `*`; 0 permits asking the relay to allocate a port. */
  port: number | "any";
  text: string;
}

/**
 * One `permitopen="host:port"`: where the key may open direct-tcpip
 * channels. The relay serves those only to tunnel names (names.ts), so
 * the host is a pattern matched against a name (`device42`, `*.fleet`).
 */
export interface OpenPermission {
  host: string;
  port: number | "any";
  text: string;
}

export interface KeyOptions {
  portForwarding: boolean;
  permitListen: ListenPermission[];
  /** `permitopen=` lines: the names this key may reach (`ssh -J relay device42`). */
  permitOpen: OpenPermission[];
  /** `from=` pattern list, checked against the peer address. */
  from?: string;
  /** `expiry-time=`: the key is refused after this instant. */
  expiresAt?: Date;
  /** Options sshd knows that the relay does not act on (names, lowercased), for a debug record. */
  ignored: string[];
  /** `cert-authority`: the key is a CA whose user certificates this line admits. */
  certAuthority?: boolean;
  /** `principals="a,b"` of a cert-authority line: a certificate must list one of these. */
  principals?: string[];
  /**
   * A certificate session's names: the tunnel names it may bind are its
   * principals (lowercased), as well as what permitlisten allows.
   */
  tunnelNames?: string[];
  /** Why forwarding is off when it is not the line's doing (a certificate without permit-port-forwarding). */
  forwardingDenied?: string;
}

export interface AuthorizedKey {
  line: number;
  type: string;
  blob: Buffer;
  fingerprint: string;
  comment: string;
  options: KeyOptions;
}

export interface KeyFileProblem {
  line: number;
  message: string;
}

export interface AuthorizedKeys {
  keys: AuthorizedKey[];
  problems: KeyFileProblem[];
}

/** Options that mean something to sshd but nothing to a forwarding-only relay. */
const NOT_APPLICABLE = new Set([
  "agent-forwarding",
  "no-agent-forwarding",
  "x11-forwarding",
  "no-x11-forwarding",
  "pty",
  "no-pty",
  "user-rc",
  "no-user-rc",
  "command",
  "environment",
  "tunnel",
  "no-touch-required",
  "verify-required",
  "touch-required",
]);

/**
 * Splits the options field into `[name, value]` pairs. Returns a message
 * when the quoting is broken, as sshd refuses such a line.
 */
export function parseOptions(field: string): Array<[string, string | undefined]> | string {
  const out: Array<[string, string | undefined]> = [];
  let i = 0;
  while (i < field.length) {
    const nameMatch = /^[A-Za-z0-9_-]+/.exec(field.slice(i));
    if (!nameMatch) return `bad option syntax at ${quote(field.slice(i, i + 20))}`;
    const name = nameMatch[0].toLowerCase();
    i += nameMatch[0].length;
    let value: string | undefined;
    if (field[i] === "=") {
      if (field[i + 1] !== '"') return `option ${name}= needs a double-quoted value`;
      i += 2;
      value = "";
      for (;;) {
        if (i >= field.length) return `unterminated quote in option ${name}`;
        const ch = field[i];
        if (ch === "\\" && field[i + 1] === '"') {
          value += '"';
          i += 2;
          continue;
        }
        if (ch === '"') {
          i++;
          break;
        }
        value += ch;
        i++;
      }
    }
    out.push([name, value]);
    if (i === field.length) break;
    if (field[i] !== ",") return `expected "," after option ${name}`;
    i++;
    if (i === field.length) return "trailing comma in options";
  }
  return out;
}

/** `[host:]port` as permitlisten takes it; IPv6 hosts in brackets. */
export function parseListenPermission(text: string, option = "permitlisten"): ListenPermission | string {
  let host: string | undefined;
  let port: string;
  const bracketed = /^\[([^\]]*)\]:(.*)$/.exec(text);
  if (bracketed) {
    host = bracketed[1] ?? "";
    port = bracketed[2] ?? "";
  } else {
    const parts = text.split(":");
    if (parts.length > 2) return `bad ${option} ${quote(text)}: put an IPv6 host in brackets, [::1]:8080`;
    if (parts.length === 2) {
      host = parts[0] ?? "";
      port = parts[1] ?? "";
    } else {
      port = text;
    }
  }
  if (host === "") return `bad ${option} ${quote(text)}: empty host`;
  if (port === "*") return { ...(host !== undefined ? { host: host.toLowerCase() } : {}), port: "any", text };
  if (!/^\d{1,5}$/.test(port) || Number(port) > 65535)
    return `bad ${option} ${quote(text)}: port must be 0-65535 or *`;
  return { ...(host !== undefined ? { host: host.toLowerCase() } : {}), port: Number(port), text };
}

/** `host:port` as permitopen takes it (sshd requires the host; `*` for any port). */
export function parseOpenPermission(text: string): OpenPermission | string {
  const p = parseListenPermission(text, "permitopen");
  if (typeof p === "string") return p;
  if (p.host === undefined) return `bad permitopen ${quote(text)}: needs host:port`;
  return { host: p.host, port: p.port, text };
}

/** `YYYYMMDD[HHMM[SS]]`, local time unless a trailing `Z` says UTC (OpenSSH parse_absolute_time). */
export function parseExpiryTime(text: string): Date | string {
  const m = /^(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})(\d{2})?)?(Z)?$/i.exec(text);
  if (!m) return `bad expiry-time ${quote(text)}: expected YYYYMMDD[HHMM[SS]][Z]`;
  const [y, mo, d, h, mi, s] = [m[1], m[2], m[3], m[4], m[5], m[6]].map((v) => Number(v ?? 0)) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const date = m[7] ? new Date(Date.UTC(y, mo - 1, d, h, mi, s)) : new Date(y, mo - 1, d, h, mi, s);
  // Date rolls 20240230 over into March; a real calendar date must survive the round trip.
  const back = m[7]
    ? [
        date.getUTCFullYear(),
        date.getUTCMonth() + 1,
        date.getUTCDate(),
        date.getUTCHours(),
        date.getUTCMinutes(),
      ]
    : [date.getFullYear(), date.getMonth() + 1, date.getDate(), date.getHours(), date.getMinutes()];
  if (back.join() !== [y, mo, d, h, mi].join() || s > 59)
    return `bad expiry-time ${quote(text)}: not a valid date`;
  return date;
}

function applyOptions(pairs: Array<[string, string | undefined]>): KeyOptions | string {
  const opts: KeyOptions = { portForwarding: true, permitListen: [], permitOpen: [], ignored: [] };
  for (const [name, value] of pairs) {
    const needsValue = ["from", "permitlisten", "permitopen", "expiry-time", "principals"].includes(name);
    if (needsValue && value === undefined) return `option ${name} needs a value`;
    switch (name) {
      case "restrict":
        opts.portForwarding = false;
        // sshd's restrict also disables pty, agent and X11 forwarding and user
        // rc: moot here, where those are never offered.
        break;
      case "no-port-forwarding":
        opts.portForwarding = false;
        break;
      case "port-forwarding":
        opts.portForwarding = true;
        break;
      case "permitlisten": {
        const p = parseListenPermission(value ?? "");
        if (typeof p === "string") return p;
        opts.permitListen.push(p);
        break;
      }
      case "permitopen": {
        // Unlike sshd, where restrict would turn -L off altogether and
        // permitopen only narrows it, permitopen is the grant itself here:
        // an operator's line is `restrict,permitopen="*:22"` and can reach
        // names and nothing else (no listening, no other destinations).
        const p = parseOpenPermission(value ?? "");
        if (typeof p === "string") return p;
        opts.permitOpen.push(p);
        break;
      }
      case "from": {
        if (opts.from !== undefined) return 'more than one "from" option';
        const bad = checkFromList(value ?? "");
        if (bad) return `bad from=${quote(value ?? "")}: ${bad}`;
        opts.from = value;
        break;
      }
      case "expiry-time": {
        const d = parseExpiryTime(value ?? "");
        if (typeof d === "string") return d;
        // Several expiry-time options: the earliest wins, as in sshd.
        if (!opts.expiresAt || d < opts.expiresAt) opts.expiresAt = d;
        break;
      }
      case "cert-authority":
        opts.certAuthority = true;
        break;
      case "principals": {
        // sshd matches each certificate principal against this comma list exactly (match_list).
        const list = (value ?? "").split(",").filter((p) => p !== "");
        if (list.length === 0) return 'option principals="" lists no principal';
        opts.principals = [...(opts.principals ?? []), ...list];
        break;
      }
      default:
        // sshd refuses a line with an option it does not know (auth-options.c
        // "unsupported option"); ignoring it failed open: a misspelled
        // `no-port-forwardign` left the key with full forwarding (issue 12).
        if (!NOT_APPLICABLE.has(name)) return `unknown option ${quote(name)} (sshd refuses such a line too)`;
        opts.ignored.push(name);
    }
  }
  if (opts.principals && !opts.certAuthority)
    return "principals= applies to cert-authority lines only (add cert-authority, or drop principals=)";
  return opts;
}

/** Splits off the leading options field, which ends at the first unquoted blank. */
function splitOptionsField(line: string): [string, string] {
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (ch === "\\" && quoted && line[i + 1] === '"') {
      i++;
      continue;
    }
    if (ch === '"') quoted = !quoted;
    else if (!quoted && (ch === " " || ch === "\t")) return [line.slice(0, i), line.slice(i).trimStart()];
  }
  return [line, ""];
}

/** A first field that is a key type rather than options. */
function looksLikeKeyType(word: string): boolean {
  return /^(ssh-|ecdsa-sha2-|sk-|rsa-sha2-)/.test(word) || word.includes("@openssh.com");
}

export function parseAuthorizedKeys(text: string): AuthorizedKeys {
  const keys: AuthorizedKey[] = [];
  const problems: KeyFileProblem[] = [];
  text.split(/\r?\n/).forEach((raw, idx) => {
    const line = idx + 1;
    const trimmed = raw.trim();
    if (trimmed === "" || trimmed.startsWith("#")) return;
    let options: KeyOptions = { portForwarding: true, permitListen: [], permitOpen: [], ignored: [] };
    let rest = trimmed;
    const firstWord = trimmed.split(/[ \t]/, 1)[0] ?? "";
    if (!looksLikeKeyType(firstWord)) {
      const [field, after] = splitOptionsField(trimmed);
      const pairs = parseOptions(field);
      if (typeof pairs === "string") {
        problems.push({ line, message: pairs });
        return;
      }
      const applied = applyOptions(pairs);
      if (typeof applied === "string") {
        problems.push({ line, message: applied });
        return;
      }
      options = applied;
      rest = after;
    }
    const [type = "", b64 = "", ...commentWords] = rest.split(/[ \t]+/);
    if (type.includes("-cert-v")) {
      problems.push({
        line,
        message: `a certificate (${quote(type)}) cannot be listed: list its CA's public key with cert-authority`,
      });
      return;
    }
    const parsed = b64 ? parsePublicKey(`${type} ${b64}`) : undefined;
    if (!parsed) {
      problems.push({ line, message: `not a public key ssh2 can read (type ${quote(type)})` });
      return;
    }
    if (parsed.type !== type) {
      problems.push({
        line,
        message: `key type ${quote(type)} does not match the key, which is ${parsed.type}`,
      });
      return;
    }
    keys.push({
      line,
      type: parsed.type,
      blob: parsed.blob,
      fingerprint: fingerprintSha256(parsed.blob),
      comment: commentWords.join(" "),
      options,
    });
  });
  return { keys, problems };
}

export async function loadAuthorizedKeys(file: string): Promise<AuthorizedKeys> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new RevtunError("CONFIG", `cannot read authorized keys ${file}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return parseAuthorizedKeys(text);
}
