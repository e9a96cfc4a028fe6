/**
 * Enrollment state of a fleet, in the fleet's Redis (under its prefix):
 *
 *   enroll:token:<hash>    hash {name, createdAt, expiresAt, usedAt}  PEXPIREAT expiresAt + TOKEN_KEEP_MS
 *   enroll:device:<name>   string, the DeviceRecord as JSON
 *   enroll:devices         set of names
 *   enroll:events          pub/sub channel: {"kind":"revoked"|"enrolled","name":...}
 *
 * Redeeming is one Lua script (REDEEM), so a token made through relay A is
 * redeemed exactly once at whichever relay the device reaches. Revocation
 * is published: every relay closes the name's sessions on the message
 * (loopback latency under a millisecond; the issue allows 5 s).
 * Expiry is compared with the redeeming relay's clock: relays of a fleet are
 * expected to run NTP, and a token's hour dwarfs their skew.
 */
import { Redis } from "ioredis";
import type { RedisTarget } from "../fleet/fleet-options.js";
import {
  type DeviceRecord,
  type EnrollmentStore,
  type RedeemOutcome,
  TOKEN_KEEP_MS,
  type TokenRecord,
} from "./store.js";

/** KEYS token; ARGV now. {'ok', name, createdAt, expiresAt} or {reason}. */
const REDEEM = `
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown'} end
local f = redis.call('HMGET', KEYS[1], 'usedAt', 'expiresAt', 'name', 'createdAt')
if f[1] then return {'used'} end
if tonumber(f[2]) <= tonumber(ARGV[1]) then return {'expired'} end
redis.call('HSET', KEYS[1], 'usedAt', ARGV[1])
return {'ok', f[3], f[4], f[2]}
`;

type ScriptedRedis = Redis & { enrollRedeem(key: string, now: number): Promise<string[]> };

export class RedisStore implements EnrollmentStore {
  private readonly redis: ScriptedRedis;
  private readonly sub: Redis;
  private readonly listeners: ((c: { kind: "revoked" | "enrolled"; name: string }) => void)[] = [];

  private constructor(
    target: RedisTarget,
    private readonly prefix: string,
  ) {
    const o = {
      host: target.host,
      port: target.port,
      db: target.db,
      ...(target.password ? { password: target.password } : {}),
      connectTimeout: 5_000,
      commandTimeout: 5_000,
      maxRetriesPerRequest: 1,
      retryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 10), 5_000),
    };
    this.redis = new Redis({ ...o, connectionName: "revtun-enrollment" }) as ScriptedRedis;
    this.redis.defineCommand("enrollRedeem", { numberOfKeys: 1, lua: REDEEM });
    this.sub = new Redis({ ...o, connectionName: "revtun-enrollment-events" });
    // Without 'error' listeners ioredis prints to the console; reconnecting goes on by itself.
    this.redis.on("error", () => {});
    this.sub.on("error", () => {});
    this.sub.on("message", (_channel: string, message: string) => {
      let c: { kind?: unknown; name?: unknown };
      try {
        c = JSON.parse(message);
      } catch {
        return;
      }
      if ((c.kind === "revoked" || c.kind === "enrolled") && typeof c.name === "string")
        for (const fn of this.listeners) fn({ kind: c.kind, name: c.name });
    });
  }

  /**
   * Never waits for Redis: a fleet relay starts while Redis is down (the
   * registry reports it degraded), and ioredis subscribes again on every
   * reconnect; what was published meanwhile is caught up by Enrollment's
   * periodic re-read.
   */
  static async open(target: RedisTarget, prefix = "revtun:"): Promise<RedisStore> {
    const s = new RedisStore(target, prefix);
    s.sub.subscribe(s.k("enroll:events")).catch(() => {});
    return s;
  }

  async addToken(t: TokenRecord): Promise<void> {
    const key = this.k(`enroll:token:${t.hash}`);
    await this.redis
      .multi()
      .hset(key, { name: t.name, createdAt: t.createdAt, expiresAt: t.expiresAt })
      .pexpireat(key, t.expiresAt + TOKEN_KEEP_MS)
      .exec();
  }

  async redeem(hash: string, now: number): Promise<RedeemOutcome> {
    const r = await this.redis.enrollRedeem(this.k(`enroll:token:${hash}`), now);
    if (r[0] !== "ok") return { ok: false, reason: r[0] === "used" || r[0] === "expired" ? r[0] : "unknown" };
    return {
      ok: true,
      token: { hash, name: r[1] ?? "", createdAt: Number(r[2]), expiresAt: Number(r[3]), usedAt: now },
    };
  }

  async putDevice(d: DeviceRecord): Promise<void> {
    await this.redis
      .multi()
      .set(this.k(`enroll:device:${d.name}`), JSON.stringify(d))
      .sadd(this.k("enroll:devices"), d.name)
      .exec();
    await this.publish(d.revokedAt === undefined ? "enrolled" : "revoked", d.name);
  }

  async getDevice(name: string): Promise<DeviceRecord | undefined> {
    const v = await this.redis.get(this.k(`enroll:device:${name}`));
    return v ? (JSON.parse(v) as DeviceRecord) : undefined;
  }

  async devices(): Promise<DeviceRecord[]> {
    const names = (await this.redis.smembers(this.k("enroll:devices"))).sort();
    if (names.length === 0) return [];
    const values = await this.redis.mget(names.map((n) => this.k(`enroll:device:${n}`)));
    return values.flatMap((v) => (v ? [JSON.parse(v) as DeviceRecord] : []));
  }

  async revoke(name: string, at: number): Promise<DeviceRecord | undefined> {
    const d = await this.getDevice(name);
    if (!d) return undefined;
    const revoked = { ...d, revokedAt: d.revokedAt ?? at };
    await this.putDevice(revoked);
    return revoked;
  }

  onChange(fn: (c: { kind: "revoked" | "enrolled"; name: string }) => void): void {
    this.listeners.push(fn);
  }

  /** Every live relay's host key fingerprint, from the fleet registry (registry.ts's relay:<id> hashes). */
  async relayFingerprints(own: string): Promise<string[]> {
    const ids = await this.redis.zrange(this.k("relays"), 0, -1);
    const out = new Set([own]);
    for (const id of ids) {
      const fp = await this.redis.hget(this.k(`relay:${id}`), "fingerprint");
      if (fp) out.add(fp);
    }
    return [...out];
  }

  async close(): Promise<void> {
    this.redis.disconnect();
    this.sub.disconnect();
  }

  private async publish(kind: "revoked" | "enrolled", name: string): Promise<void> {
    await this.redis.publish(this.k("enroll:events"), JSON.stringify({ kind, name }));
  }

  private k(suffix: string): string {
    return this.prefix + suffix;
  }
}
