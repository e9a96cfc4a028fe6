/**
 * The fleet registry: which relay holds which tunnel name, shared in Redis.
 *
 * Layout (every key under `prefix`, default "revtun:"):
 *   relay:<relayId>   hash {address, fingerprint}      PEXPIRE leaseTtlMs, renewed every renewIntervalMs
 *   names:<relayId>   hash name:port -> {"s":sessionId,"d":deviceFingerprint}
 *                                                     PEXPIRE leaseTtlMs, renewed with relay:<id>
 *   holders:<key>     zset relayId -> announce time (Redis TIME, ms)
 *                                                     PEXPIRE indexTtlMs, touched by the holders
 *   relays            zset relayId -> last renewal (Redis TIME, ms), housekeeping only
 *
 * Why this layout: a relay's lease is two keys whatever its number of names,
 * so renewing is one script call a second (not one write per name), and a
 * dead relay's names die with its lease, by Redis's own TTL clock: no local
 * clock is compared with another machine's, so clock skew between relays
 * cannot keep a dead relay alive or kill a live one. `holders:<key>` is only
 * an index to find candidates without scanning every relay: an entry counts
 * only while relay:<id> exists AND names:<id> has the key, checked in the
 * same Lua script that reads it (atomic, so a relay re-announcing at that
 * moment cannot lose its entry); entries that fail the check are removed
 * there. Order is newest announce first (Redis TIME again), so a device that
 * moved from relay A to relay B is found on B first.
 *
 * Failure model: the registry never throws into the relay and never waits
 * on a dead Redis: commands fail after commandTimeoutMs, nothing is queued
 * while disconnected (enableOfflineQueue false: a queue would grow without
 * bound and replay stale announces), and the state of record is the local
 * table of holds the relay gives us. When Redis is back (a reconnect, or a
 * renewal finding our lease gone: Redis restarted empty, or we stalled past
 * the TTL) the registry rewrites its own relay:<id> and names:<id> from that
 * table in one MULTI: names withdrawn during the outage are gone, and no
 * other relay's keys are touched.
 *
 * This is single-instance Redis (a db number, no Cluster): the scripts
 * build key names from the index, which Redis Cluster does not allow.
 */
import { EventEmitter } from "node:events";
import { Redis } from "ioredis";
import { type FleetTimings, fleetTimings, type RedisTarget } from "./fleet-options.js";
import { probeRedisAuth, type RedisAuthProbe } from "./redis-auth.js";
import { keepConnecting, redisConnectionOptions } from "./redis-connection.js";

/** This relay, as peers see it. */
export interface RelaySelf {
  /** Unique in the fleet: [A-Za-z0-9._-], at most 64 characters. */
  relayId: string;
  /** host:port where peer relays reach this relay's SSH listener. */
  address: string;
  /** SHA256 fingerprint of this relay's host key; peers refuse any other key (no TOFU). */
  hostKeyFingerprint: string;
}

/** One session's hold on a name, as the relay announces it. */
export interface Hold {
  sessionId: string;
  /** The device key's fingerprint, for operators' eyes (`revtun fleet names`, later). */
  deviceFingerprint?: string;
}

/** A live holder of a name somewhere in the fleet. */
export interface Holder {
  relayId: string;
  address: string;
  hostKeyFingerprint: string;
  sessionId: string;
  deviceFingerprint?: string;
  /** When it was announced, Redis's clock (ms since the epoch). */
  since: number;
}

export interface FleetRegistryEvents {
  /** Redis stopped answering; holders() answers from this relay's own names only. */
  degraded: [{ reason: string }];
  /** Redis answers again and this relay's names are re-announced. */
  restored: [{ downMs: number; reannounced: number }];
  /** A relay's lease lapsed or it left: close any peer connection to it. */
  relayGone: [relayId: string];
  /** The live relays (id -> address, this one included) changed; see relays(). */
  relays: [];
  /** A password was given and this Redis needs none: it is not sent (redis-auth.ts). */
  passwordUnused: [];
}

export interface FleetRegistryOptions {
  redis: RedisTarget;
  self: RelaySelf;
  timings?: Partial<FleetTimings>;
  /** Key prefix, so several fleets can share one Redis database. */
  prefix?: string;
}

/** A name held on more relays than this is a misconfiguration; reading is bounded by it. */
export const MAX_HOLDERS = 64;
/**
 * Index entries whose TTL one renewal refreshes, at least: the batch grows
 * with the number of names so that each is refreshed within half its
 * indexTtlMs (100k names, 10 min TTL, 1 s renewals: 334 PEXPIREs a second,
 * pipelined with the renewal), and stays small for a small relay.
 */
const INDEX_TOUCH_MIN = 16;
/** Fields per HSET in a rebuild, keeping each command a bounded size. */
const HSET_CHUNK = 512;

const RELAY_ID = /^[A-Za-z0-9._-]{1,64}$/;
const KEY = /^[a-z0-9.-]{1,253}:\d{1,5}$/;

const NOW =
  "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)";

/** KEYS relay, names, holders:<key>; ARGV field, value, leaseTtl, indexTtl, relayId. 0: our lease is gone. */
const ANNOUNCE = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
${NOW}
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], now, ARGV[5])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return 1`;

/**
 * KEYS relay, names, relays; ARGV leaseTtl, relayId, prefix. -1: our lease
 * is gone; else the live relays, id then address ('' if its record lapsed).
 */
const RENEW = `
if redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 0 then return -1 end
redis.call('PEXPIRE', KEYS[2], ARGV[1])
${NOW}
redis.call('ZADD', KEYS[3], now, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - 100 * tonumber(ARGV[1]))
local ids = redis.call('ZRANGEBYSCORE', KEYS[3], now - tonumber(ARGV[1]), '+inf')
local out = {}
for i = 1, #ids do
  out[#out + 1] = ids[i]
  out[#out + 1] = redis.call('HGET', ARGV[3] .. 'relay:' .. ids[i], 'address') or ''
end
return out`;

/** KEYS holders:<key>; ARGV prefix, field, max. Live holders newest first; dead index entries removed. */
const HOLDERS = `
local ids = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1, 'WITHSCORES')
local out = {}
for i = 1, #ids, 2 do
  local id = ids[i]
  local rel = redis.call('HMGET', ARGV[1] .. 'relay:' .. id, 'address', 'fingerprint')
  local v = redis.call('HGET', ARGV[1] .. 'names:' .. id, ARGV[2])
  if rel[1] and v then
    out[#out + 1] = {id, rel[1], rel[2] or '', v, ids[i + 1]}
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out`;

interface LocalHold extends Hold {
  /** performance.now() at announce: a monotonic age, turned into Redis time on rebuild. */
  at: number;
}

type ScriptedRedis = Redis & {
  fleetAnnounce(...args: (string | number)[]): Promise<number>;
  fleetRenew(...args: (string | number)[]): Promise<number | string[]>;
  fleetHolders(...args: (string | number)[]): Promise<[string, string, string, string, string][]>;
};

export class FleetRegistry extends EventEmitter<FleetRegistryEvents> {
  readonly self: RelaySelf;
  readonly timings: FleetTimings;
  private readonly prefix: string;
  private readonly target: RedisTarget;
  private readonly redis: ScriptedRedis;
  /** key -> sessionId -> hold; the newest hold of a key is the one in Redis. */
  private readonly local = new Map<string, Map<string, LocalHold>>();
  private timer: NodeJS.Timeout | undefined;
  private up = false;
  private downSince: number | undefined = performance.now();
  private rebuilding: Promise<boolean> | undefined;
  private rebuildAgain = false;
  private closed = false;
  /** Relay id -> advertised address, as of the last renewal; kept while Redis is down. */
  private liveRelays = new Map<string, string>();
  private touchCursor = 0;
  /** 'degraded' is emitted once per outage, including one that starts before the first connection. */
  private reportedDown = false;

  constructor(opts: FleetRegistryOptions) {
    super();
    if (!RELAY_ID.test(opts.self.relayId))
      throw new TypeError(`fleet relay id ${JSON.stringify(opts.self.relayId)} is not [A-Za-z0-9._-]{1,64}`);
    this.self = { ...opts.self };
    this.timings = fleetTimings(opts.timings);
    this.prefix = opts.prefix ?? "revtun:";
    this.target = { ...opts.redis };
    const t = this.timings;
    // No password here: start() sets it once the probe says Redis wants it.
    this.redis = new Redis({
      // TLS, ACL user, Sentinel (redis-connection.ts); the password is left to start().
      ...redisConnectionOptions({ ...opts.redis, password: undefined }),
      connectionName: `revtun-relay-${opts.self.relayId}`,
      lazyConnect: true,
      connectTimeout: t.connectTimeoutMs,
      commandTimeout: t.commandTimeoutMs,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResubscribe: false,
      // Never give up (Redis may be down for hours) but never wait longer than reconnectMaxDelayMs.
      retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 10), t.reconnectMaxDelayMs),
      reconnectOnError: () => false,
    }) as ScriptedRedis;
    this.redis.defineCommand("fleetAnnounce", { numberOfKeys: 3, lua: ANNOUNCE });
    this.redis.defineCommand("fleetRenew", { numberOfKeys: 3, lua: RENEW });
    this.redis.defineCommand("fleetHolders", { numberOfKeys: 1, lua: HOLDERS });
    // Without an 'error' listener ioredis prints to the console; the state change is what the relay sees.
    this.redis.on("error", (err: Error) => this.failed(err));
    this.redis.on("close", () => this.failed(new Error("connection to Redis closed")));
    this.redis.on("ready", () => void this.rebuild());
    keepConnecting(this.redis, () => this.closed);
  }

  /**
   * Changes where peers are told to dial this relay, before start(): a relay
   * whose peer listener binds an ephemeral port learns the port only then.
   */
  setAddress(address: string): void {
    if (this.timer || this.closed) throw new Error("the fleet registry's address is set before start()");
    this.self.address = address;
  }

  /** Whether Redis answered the last command. */
  get healthy(): boolean {
    return this.up;
  }

  /**
   * Connects and starts renewing. Resolves once this relay's record is in
   * Redis, or after connectTimeoutMs with Redis unreachable (then 'degraded'
   * has been emitted and reconnecting goes on). Rejects only when Redis
   * refuses the credentials (a missing or wrong password: RevtunError
   * CONFIG, see redis-auth.ts), and the registry is closed then.
   */
  async start(): Promise<void> {
    if (this.timer || this.closed) return;
    let probe: RedisAuthProbe;
    try {
      probe = await probeRedisAuth(this.target, this.timings);
    } catch (err) {
      await this.close({ withdraw: false });
      throw err;
    }
    if (this.closed) return;
    if (probe === "password-unused") this.emit("passwordUnused");
    else if (this.target.password !== undefined) {
      this.redis.options.password = this.target.password;
      if (this.target.sentinel) this.redis.options.sentinelPassword = this.target.password;
    }
    this.timer = setInterval(() => void this.renew(), this.timings.renewIntervalMs);
    this.timer.unref();
    const ready = new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.off("restored", done);
        this.off("degraded", done);
        resolve();
      };
      const t = setTimeout(done, this.timings.connectTimeoutMs + this.timings.commandTimeoutMs);
      this.once("restored", done);
      this.once("degraded", done);
    });
    this.redis.connect().catch((err: Error) => this.failed(err));
    await ready;
    // Learn the other relays now, not a renewal from now (the relay's fleet sources, member.ts).
    if (this.up) await this.renew();
  }

  /**
   * Records that `hold.sessionId` on this relay serves `key` (name:port,
   * relay/names.ts tunnelKey) and writes it to Redis. Resolves true when
   * Redis has it, false when it is only local (Redis down, or an invalid
   * key, which is never written); never rejects.
   */
  async announce(key: string, hold: Hold): Promise<boolean> {
    if (this.closed || !KEY.test(key)) return false;
    let holds = this.local.get(key);
    if (!holds) {
      holds = new Map();
      this.local.set(key, holds);
    }
    holds.delete(hold.sessionId);
    holds.set(hold.sessionId, { ...hold, at: performance.now() });
    return this.write(key, hold);
  }

  /**
   * `hold.sessionId` no longer serves `key`. If another session of this
   * relay still does, it becomes the announced one; otherwise the key is
   * removed from this relay's names. Never rejects.
   */
  async withdraw(key: string, hold: Pick<Hold, "sessionId">): Promise<boolean> {
    const holds = this.local.get(key);
    if (!holds?.delete(hold.sessionId)) return false;
    const rest = [...holds.values()].at(-1);
    if (rest) return this.write(key, rest);
    this.local.delete(key);
    if (!this.up) return this.missed();
    try {
      await this.redis
        .multi()
        .hdel(this.k(`names:${this.self.relayId}`), key)
        .zrem(this.k(`holders:${key}`), this.self.relayId)
        .exec();
      return true;
    } catch (err) {
      this.failed(err as Error);
      return false;
    }
  }

  /**
   * Live holders of `key`, newest announce first (at most MAX_HOLDERS).
   * With Redis down: this relay's own hold, if any and not excluded.
   */
  async holders(key: string, opts: { excludeSelf?: boolean } = {}): Promise<Holder[]> {
    if (!KEY.test(key)) return [];
    const own = (): Holder[] => {
      const hold = [...(this.local.get(key)?.values() ?? [])].at(-1);
      if (!hold || opts.excludeSelf) return [];
      return [{ ...this.self, ...this.holdFields(hold), since: Date.now() }];
    };
    if (!this.up || this.closed) return own();
    try {
      const rows = await this.redis.fleetHolders(this.k(`holders:${key}`), this.prefix, key, MAX_HOLDERS);
      const out: Holder[] = [];
      for (const [relayId, address, hostKeyFingerprint, value, since] of rows) {
        if (opts.excludeSelf && relayId === this.self.relayId) continue;
        const v = parseHold(value);
        if (!v) continue;
        out.push({ relayId, address, hostKeyFingerprint, ...v, since: Number(since) });
      }
      return out;
    } catch (err) {
      this.failed(err as Error);
      return own();
    }
  }

  /**
   * The relays whose lease was live at the last renewal, id -> the address
   * peers dial ('' when its record lapsed meanwhile); this one included.
   * With Redis down, the last answer.
   */
  relays(): ReadonlyMap<string, string> {
    return this.liveRelays;
  }

  /** The names this relay holds, as it would re-announce them. */
  localKeys(): string[] {
    return [...this.local.keys()];
  }

  /**
   * Stops renewing and disconnects. With `withdraw` (the default: a clean
   * shutdown) this relay's record and names are deleted at once, so peers
   * stop trying it without waiting out the lease.
   */
  async close(opts: { withdraw?: boolean } = {}): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.timer = undefined;
    if (opts.withdraw !== false && this.up) {
      try {
        const id = this.self.relayId;
        const m = this.redis.multi().del(this.k(`relay:${id}`), this.k(`names:${id}`));
        for (const key of this.local.keys()) m.zrem(this.k(`holders:${key}`), id);
        await m.zrem(this.k("relays"), id).exec();
      } catch {
        // Redis went away meanwhile: the lease lapses by itself.
      }
    }
    this.local.clear();
    this.redis.disconnect(false);
    this.removeAllListeners();
  }

  private k(suffix: string): string {
    return this.prefix + suffix;
  }

  private holdFields(hold: Hold): Pick<Holder, "sessionId" | "deviceFingerprint"> {
    return hold.deviceFingerprint === undefined
      ? { sessionId: hold.sessionId }
      : { sessionId: hold.sessionId, deviceFingerprint: hold.deviceFingerprint };
  }

  private async write(key: string, hold: Hold): Promise<boolean> {
    if (!this.up) return this.missed();
    const id = this.self.relayId;
    try {
      const r = await this.redis.fleetAnnounce(
        this.k(`relay:${id}`),
        this.k(`names:${id}`),
        this.k(`holders:${key}`),
        key,
        encodeHold(hold),
        this.timings.leaseTtlMs,
        this.timings.indexTtlMs,
        id,
      );
      if (r === 1) return true;
      // Our lease is gone (Redis restarted, or we stalled past the TTL): the rebuild writes this key too.
      return this.rebuild();
    } catch (err) {
      this.failed(err as Error);
      return false;
    }
  }

  /**
   * A change made while Redis is not known to be up. If a rebuild is under
   * way its snapshot may predate the change: have it run once more.
   */
  private missed(): false {
    if (this.rebuilding) this.rebuildAgain = true;
    return false;
  }

  private async renew(): Promise<void> {
    if (this.closed || this.rebuilding) return;
    if (!this.up) {
      // A command timed out on a connection that stayed open (a slow Redis): no 'ready' will come, so retry here.
      if (this.redis.status === "ready") await this.rebuild();
      return;
    }
    const id = this.self.relayId;
    try {
      const p = this.redis.pipeline() as ReturnType<Redis["pipeline"]> & {
        fleetRenew(...args: (string | number)[]): unknown;
      };
      p.fleetRenew(
        this.k(`relay:${id}`),
        this.k(`names:${id}`),
        this.k("relays"),
        this.timings.leaseTtlMs,
        id,
        this.prefix,
      );
      for (const key of this.touchBatch()) p.pexpire(this.k(`holders:${key}`), this.timings.indexTtlMs);
      const results = (await p.exec()) ?? [];
      const [err, live] = results[0] ?? [new Error("empty pipeline reply"), undefined];
      if (err) throw err;
      if (live === -1) {
        await this.rebuild();
        return;
      }
      this.sawRelays(live as string[]);
    } catch (err) {
      this.failed(err as Error);
    }
  }

  /** The next slice of local keys whose index entry a renewal keeps alive. */
  private touchBatch(): string[] {
    const keys = [...this.local.keys()];
    const ticks = Math.max(1, Math.floor(this.timings.indexTtlMs / 2 / this.timings.renewIntervalMs));
    const batch = Math.max(INDEX_TOUCH_MIN, Math.ceil(keys.length / ticks));
    if (keys.length <= batch) return keys;
    const start = this.touchCursor % keys.length;
    this.touchCursor = start + batch;
    const out = keys.slice(start, start + batch);
    return out.length < batch ? out.concat(keys.slice(0, batch - out.length)) : out;
  }

  private sawRelays(flat: string[]): void {
    const now = new Map<string, string>();
    for (let i = 0; i + 1 < flat.length; i += 2) now.set(flat[i] as string, flat[i + 1] as string);
    let changed = now.size !== this.liveRelays.size;
    for (const [id, address] of this.liveRelays) {
      if (!now.has(id)) this.emit("relayGone", id);
      if (now.get(id) !== address) changed = true;
    }
    this.liveRelays = now;
    if (changed) this.emit("relays");
  }

  private failed(err: Error): void {
    if (this.closed) return;
    if (this.up) {
      this.up = false;
      this.downSince = performance.now();
    }
    if (!this.reportedDown) {
      this.reportedDown = true;
      this.emit("degraded", { reason: err.message });
    }
  }

  /** Rewrites this relay's record and names from the local table; coalesces concurrent calls. */
  private rebuild(): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    if (this.rebuilding) {
      this.rebuildAgain = true;
      return this.rebuilding;
    }
    this.rebuilding = (async () => {
      let ok = false;
      do {
        this.rebuildAgain = false;
        ok = await this.rebuildOnce();
      } while (ok && this.rebuildAgain && !this.closed);
      this.rebuilding = undefined;
      return ok;
    })();
    return this.rebuilding;
  }

  private async rebuildOnce(): Promise<boolean> {
    const id = this.self.relayId;
    const t = this.timings;
    try {
      const [sec, usec] = await this.redis.time();
      const redisNow = Number(sec) * 1000 + Math.floor(Number(usec) / 1000);
      const mono = performance.now();
      // Snapshot and MULTI in one synchronous step: a later announce is sent after it on the same connection.
      const m = this.redis
        .multi()
        .del(this.k(`names:${id}`))
        .hset(this.k(`relay:${id}`), {
          address: this.self.address,
          fingerprint: this.self.hostKeyFingerprint,
        })
        .pexpire(this.k(`relay:${id}`), t.leaseTtlMs)
        .zadd(this.k("relays"), redisNow, id);
      let fields: string[] = [];
      const flush = () => {
        if (fields.length) m.hset(this.k(`names:${id}`), ...fields);
        fields = [];
      };
      let count = 0;
      for (const [key, holds] of this.local) {
        const hold = [...holds.values()].at(-1);
        if (!hold) continue;
        count++;
        fields.push(key, encodeHold(hold));
        if (fields.length >= 2 * HSET_CHUNK) flush();
        // Keep the original announce order: age on this relay's monotonic clock, placed on Redis's.
        m.zadd(this.k(`holders:${key}`), Math.round(redisNow - (mono - hold.at)), id);
        m.pexpire(this.k(`holders:${key}`), t.indexTtlMs);
      }
      flush();
      m.pexpire(this.k(`names:${id}`), t.leaseTtlMs);
      const res = await m.exec();
      const bad = res?.find(([e]) => e);
      if (!res || bad) throw bad?.[0] ?? new Error("MULTI aborted");
      const wasDown = !this.up;
      const downMs = this.downSince === undefined ? 0 : performance.now() - this.downSince;
      this.up = true;
      this.reportedDown = false;
      this.downSince = undefined;
      if (wasDown) this.emit("restored", { downMs: Math.round(downMs), reannounced: count });
      return true;
    } catch (err) {
      this.failed(err as Error);
      return false;
    }
  }
}

function encodeHold(hold: Hold): string {
  return JSON.stringify(
    hold.deviceFingerprint === undefined
      ? { s: hold.sessionId }
      : { s: hold.sessionId, d: hold.deviceFingerprint },
  );
}

/** Another relay's entry; a malformed one (a different version, a hand edit) is skipped, not trusted. */
function parseHold(text: string): Hold | undefined {
  try {
    const v = JSON.parse(text) as { s?: unknown; d?: unknown };
    if (typeof v.s !== "string") return undefined;
    return typeof v.d === "string" ? { sessionId: v.s, deviceFingerprint: v.d } : { sessionId: v.s };
  } catch {
    return undefined;
  }
}
