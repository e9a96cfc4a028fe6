/**
 * Fleet options: where the fleet's Redis is (`--fleet redis://host:port[/db]`,
 * later also an environment variable and a config-file field: each caller
 * passes `source`, the name the user wrote the value under, so the one-line
 * error names both) and the lease timings, in one object.
 */
import net from "node:net";
import { describe, RevtunError } from "../../shared/errors.js";

export interface RedisTarget {
  host: string;
  port: number;
  db: number;
  /**
   * Redis's `requirepass` (AUTH password), never from the URL or argv: the
   * CLI reads it from --fleet-password-file or REVTUN_FLEET_PASSWORD.
   */
  password?: string;
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
 * Parses `redis://host:port[/db]`. Only plain redis:// for now: no
 * credentials in the URL (a command line is readable by every local user)
 * and no TLS (rediss://); both are refused with that reason rather than
 * silently ignored.
 */
export function parseFleetUrl(text: string, source = "--fleet"): RedisTarget {
  // A password in a URL is refused, and not repeated in the error either (it would reach logs).
  const shown =
    typeof text === "string" ? text.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/@:]*:)[^/@]*@/i, "$1***@") : text;
  const bad = (why: string) =>
    new RevtunError("USAGE", `${source} ${describe(shown)}: ${why} (expected redis://host:port[/db])`);
  if (typeof text !== "string" || text.trim() === "") throw bad("empty");
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw bad("not a URL");
  }
  if (url.protocol === "rediss:") throw bad("TLS (rediss://) is not supported yet");
  if (url.protocol !== "redis:") throw bad(`the scheme must be redis://, not ${url.protocol}//`);
  if (url.username || url.password)
    throw bad("credentials in the URL are not supported: give the password in a file or the environment");
  if (url.search || url.hash) throw bad("query strings and fragments are not supported");
  const host = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
  if (host === "") throw bad("no host");
  if (net.isIP(host) === 0 && !/^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/.test(host))
    throw bad(`the host ${host} is not a host name or IP address`);
  // WHATWG URL drops the default port of special schemes only; redis: is not special, so "" means absent.
  if (url.port === "") throw bad("no port");
  const port = Number(url.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw bad(`the port ${url.port} is out of range`);
  const path = url.pathname;
  let db = 0;
  if (path !== "" && path !== "/") {
    const m = /^\/(\d{1,5})$/.exec(path);
    if (!m) throw bad(`the database ${path.slice(1)} is not a number`);
    db = Number(m[1]);
    // Redis's default `databases 16`; larger values exist only with a custom config, so allow up to 65535.
    if (db > 65535) throw bad(`the database ${db} is out of range`);
  }
  return { host, port, db };
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
