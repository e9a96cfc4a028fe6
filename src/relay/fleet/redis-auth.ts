/**
 * Whether the fleet's Redis takes our credentials, asked once at startup so
 * a wrong or missing password is a configuration error the relay exits on
 * (2), not an outage it waits out in degraded mode. Redis unreachable at
 * startup is an outage: the relay starts and serves its own names.
 *
 * The probe first speaks without a password: a Redis without `requirepass`
 * answers PING, and then the password is not sent at all. (ioredis, given a
 * password such a Redis does not need, prints a warning with console.warn on
 * every connection, event_handler.js; a library must not print.)
 */
import { Redis } from "ioredis";
import { RevtunError } from "../../shared/errors.js";
import type { FleetTimings, RedisTarget } from "./fleet-options.js";
import { redisConnectionOptions } from "./redis-connection.js";

export type RedisAuthProbe =
  /** Redis took the password, or needs none and none was given. */
  | "ok"
  /** A password was given and Redis needs none: do not send it. */
  | "password-unused"
  /** Redis did not answer: nothing is known yet. */
  | "unreachable";

/** NOAUTH (a password is needed), WRONGPASS / ERR invalid password (Redis 6+ / before). */
export function authProblem(err: unknown): "needed" | "wrong" | undefined {
  const m = err instanceof Error ? err.message : "";
  if (m.startsWith("NOAUTH")) return "needed";
  if (m.startsWith("WRONGPASS") || /^ERR invalid password/.test(m)) return "wrong";
  return undefined;
}

/** The one-line CONFIG error for an auth problem; names the Redis and the problem, never the password. */
export function authError(target: RedisTarget, problem: "needed" | "wrong", cause?: unknown): RevtunError {
  const where = `${target.host.includes(":") ? `[${target.host}]` : target.host}:${target.port}`;
  return new RevtunError(
    "CONFIG",
    problem === "needed"
      ? `fleet Redis ${where} requires a password (NOAUTH) and none was given`
      : `fleet Redis ${where} refused the password (WRONGPASS)`,
    { reason: "auth", ...(cause === undefined ? {} : { cause }) },
  );
}

/**
 * Connects once, PINGs without a password, AUTHs with it if Redis asks, and
 * disconnects. Rejects with RevtunError CONFIG on a missing or wrong
 * password; otherwise resolves (never waits longer than connect plus two
 * command timeouts).
 */
export async function probeRedisAuth(
  target: RedisTarget,
  timings: Pick<FleetTimings, "connectTimeoutMs" | "commandTimeoutMs">,
): Promise<RedisAuthProbe> {
  const r = new Redis({
    // TLS, ACL user and Sentinel as every fleet connection; no password yet, and database 0.
    ...redisConnectionOptions({ ...target, password: undefined, db: 0 }),
    ...(target.sentinel && target.password !== undefined ? { sentinelPassword: target.password } : {}),
    lazyConnect: true,
    connectTimeout: timings.connectTimeoutMs,
    commandTimeout: timings.commandTimeoutMs,
    enableOfflineQueue: false,
    // No INFO before 'ready': it would fail NOAUTH before we could ask.
    enableReadyCheck: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    reconnectOnError: () => false,
  });
  r.on("error", () => {});
  try {
    try {
      await r.connect();
    } catch {
      return "unreachable";
    }
    try {
      await r.ping();
      return target.password === undefined ? "ok" : "password-unused";
    } catch (err) {
      const problem = authProblem(err);
      if (problem === undefined) return "unreachable";
      if (target.password === undefined) throw authError(target, "needed", err);
    }
    try {
      if (target.username !== undefined) await r.auth(target.username, target.password);
      else await r.auth(target.password);
      return "ok";
    } catch (err) {
      if (authProblem(err)) throw authError(target, "wrong", err);
      return "unreachable";
    }
  } finally {
    r.disconnect(false);
  }
}
