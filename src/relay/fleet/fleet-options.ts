/**
 * Fleet options: where the fleet's Redis is (`--fleet redis://host:port[/db]`,
 * later also an environment variable and a config-file field: each caller
 * passes `source`, the name the user wrote the value under, so the one-line
 * error names both) and the lease timings, in one object.
 */
import net from "node:net";
import { describe, RevtunError } from "../../shared/errors.js";

export interface RedisTarget {
  /** The Redis (with Sentinel: the first sentinel, for messages). */
  host: string;
  port: number;
  db: number;
  /**
   * Redis's `requirepass` (AUTH password), never from the URL or argv: the
   * CLI reads it from --fleet-password-file or REVTUN_FLEET_PASSWORD.
   */
  password?: string;
  /** An ACL user name (Redis 6+ `AUTH user password`), from the URL: `redis://revtun@host:6379`. */
  username?: string;
  /**
   * TLS (`rediss://`): the server's certificate is verified against `ca`
   * (PEM; the system's CAs when absent) and its name against the host.
   */
  tls?: { ca?: string | Buffer };
  /**
   * Redis Sentinel (`redis+sentinel://h1:26379,h2:26379/primary-name[/db]`):
   * the sentinels to ask, and the name they monitor the primary under.
   * Every connection asks them where the primary is, so a failover is
   * followed by a reconnect (redis-connection.ts).
   */
  sentinel?: { sentinels: { host: string; port: number }[]; name: string };
}

export interface FleetTimings {
  /** A relay record's (and with it its names') lifetime in Redis without renewal. */
  leaseTtlMs: number;
  /** How often a relay renews its lease. */
  renewIntervalMs: number;
  /** A Redis command that has not answered in this long fails (and the registry reports degraded). */
  commandTimeoutMs: number;
  /** TCP connect to Redis. */
  connectTimeoutMs: number;
  /** The longest pause between reconnect attempts to Redis. */
  reconnectMaxDelayMs: number;
  /** How long a `holders:<key>` index entry lives without being touched (see registry.ts). */
  indexTtlMs: number;
  /** A peer relay SSH connection with no channel for this long is closed. */
  peerIdleMs: number;
  /** SSH handshake with a peer relay, and opening one channel on it. */
  peerConnectTimeoutMs: number;
}

/**
 * Lease 3 s renewed every 1 s: two renewals may be lost (a GC pause, a slow
 * Redis) before a live relay's names lapse, while a dead relay's names are
 * gone from `holders()` at most 3 s after its last renewal (measured 2.1-3.0 s
 * after kill -9 in test/relay/fleet-registry.test.ts). Operators do not wait
 * for that: a dead relay refuses the connection at once and the next holder
 * is tried. Reconnect pauses stop growing at 1 s so routing is back within
 * about 1 s of Redis returning (the issue asks for 10 s).
 */
export const FLEET_DEFAULTS: Readonly<FleetTimings> = Object.freeze({
  leaseTtlMs: 3000,
  renewIntervalMs: 1000,
  commandTimeoutMs: 500,
  connectTimeoutMs: 1000,
  reconnectMaxDelayMs: 1000,
  indexTtlMs: 600_000,
  peerIdleMs: 30_000,
  peerConnectTimeoutMs: 2000,
});

/**
 * Parses the fleet's Redis address:
 *   redis://[user@]host:port[/db]      rediss://[user@]host:port[/db] (TLS)
 *   redis+sentinel://[user@]host:port[,host:port...]/primary-name[/db]
 *   rediss+sentinel://...              (TLS to the sentinels and the primary)
 * A user name (an ACL user) may be in the URL; a password never (a command
 * line is readable by every local user): it is refused, and not repeated in
 * the error either. A CA file for TLS is the CLI's --fleet-ca-file.
 */
export function parseFleetUrl(text: string, source = "--fleet"): RedisTarget {
  // A password in a URL is refused, and not repeated in the error either (it would reach logs).
  const shown =
    typeof text === "string" ? text.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/@:]*:)[^/@]*@/i, "$1***@") : text;
  const bad = (why: string) =>
    new RevtunError(
      "USAGE",
      `${source} ${describe(shown)}: ${why} (expected redis://host:port[/db], rediss://... or redis+sentinel://host:port,.../name[/db])`,
    );
  if (typeof text !== "string" || text.trim() === "") throw bad("empty");
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(text)?.[1]?.toLowerCase();
  if (scheme === "redis+sentinel" || scheme === "rediss+sentinel") return parseSentinelUrl(text, scheme, bad);
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw bad("not a URL");
  }
  if (url.protocol !== "redis:" && url.protocol !== "rediss:")
    throw bad(`the scheme must be redis://, rediss:// or redis+sentinel://, not ${url.protocol}//`);
  if (url.password)
    throw bad("credentials in the URL are not supported: give the password in a file or the environment");
  if (url.search || url.hash) throw bad("query strings and fragments are not supported");
  const { host, port } = hostPort(url.hostname, url.port, bad);
  const db = parseDb(url.pathname, bad);
  const username = userName(decodeURIComponent(url.username), bad);
  return {
    host,
    port,
    db,
    ...(username ? { username } : {}),
    ...(url.protocol === "rediss:" ? { tls: {} } : {}),
  };
}

function parseSentinelUrl(text: string, scheme: string, bad: (why: string) => RevtunError): RedisTarget {
  const m = /^[^:]+:\/\/(?:([^@/]*)@)?([^/?#]+)\/([^/?#]+)(\/[^?#]*)?$/.exec(text);
  if (!m) {
    if (/[?#]/.test(text)) throw bad("query strings and fragments are not supported");
    throw bad("a sentinel URL is redis+sentinel://host:port[,host:port...]/primary-name[/db]");
  }
  const [, auth, hosts = "", name = "", dbPath = ""] = m;
  if (auth?.includes(":"))
    throw bad("credentials in the URL are not supported: give the password in a file or the environment");
  const sentinels = hosts.split(",").map((h) => {
    const v6 = /^\[([^\]]+)\]:(\d*)$/.exec(h);
    const hp = v6 ?? /^([^:]*):(\d*)$/.exec(h);
    if (!hp) throw bad(`the sentinel ${h} has no port`);
    return hostPort(hp[1] ?? "", hp[2] ?? "", bad);
  });
  if (sentinels.length > 16) throw bad(`${sentinels.length} sentinels: at most 16`);
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(name)) throw bad(`the primary name ${name} is not [A-Za-z0-9._-]{1,64}`);
  const username = userName(decodeURIComponent(auth ?? ""), bad);
  const first = sentinels[0] as { host: string; port: number };
  return {
    host: first.host,
    port: first.port,
    db: parseDb(dbPath, bad),
    ...(username ? { username } : {}),
    ...(scheme === "rediss+sentinel" ? { tls: {} } : {}),
    sentinel: { sentinels, name },
  };
}

function hostPort(
  rawHost: string,
  rawPort: string,
  bad: (why: string) => RevtunError,
): { host: string; port: number } {
  const host = rawHost.startsWith("[") ? rawHost.slice(1, -1) : rawHost;
  if (host === "") throw bad("no host");
  if (net.isIP(host) === 0 && !/^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/.test(host))
    throw bad(`the host ${host} is not a host name or IP address`);
  // WHATWG URL drops the default port of special schemes only; redis: is not special, so "" means absent.
  if (rawPort === "") throw bad("no port");
  const port = Number(rawPort);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw bad(`the port ${rawPort} is out of range`);
  return { host, port };
}

function parseDb(path: string, bad: (why: string) => RevtunError): number {
  if (path === "" || path === "/") return 0;
  const m = /^\/(\d{1,5})$/.exec(path);
  if (!m) throw bad(`the database ${path.slice(1)} is not a number`);
  const db = Number(m[1]);
  // Redis's default `databases 16`; larger values exist only with a custom config, so allow up to 65535.
  if (db > 65535) throw bad(`the database ${db} is out of range`);
  return db;
}

function userName(name: string, bad: (why: string) => RevtunError): string | undefined {
  if (name === "") return undefined;
  if (!/^[A-Za-z0-9._@-]{1,128}$/.test(name)) throw bad("the user name is not [A-Za-z0-9._@-]{1,128}");
  return name;
}

/** Checks a timings object, merged over the defaults; a bad field is named with its value. */
export function fleetTimings(overrides: Partial<FleetTimings> = {}): FleetTimings {
  const t: FleetTimings = { ...FLEET_DEFAULTS, ...overrides };
  for (const [k, v] of Object.entries(t)) {
    if (typeof v !== "number" || !Number.isInteger(v) || v <= 0 || v > 86_400_000)
      throw new RevtunError("USAGE", `fleet ${k} ${describe(v)}: must be a whole number of milliseconds`);
  }
  if (t.leaseTtlMs < 2 * t.renewIntervalMs)
    throw new RevtunError(
      "USAGE",
      `fleet leaseTtlMs ${t.leaseTtlMs} must be at least twice renewIntervalMs ${t.renewIntervalMs}, so one lost renewal does not drop a live relay`,
    );
  if (t.commandTimeoutMs >= t.renewIntervalMs)
    throw new RevtunError(
      "USAGE",
      `fleet commandTimeoutMs ${t.commandTimeoutMs} must be below renewIntervalMs ${t.renewIntervalMs}, so renewals do not pile up`,
    );
  return t;
}
