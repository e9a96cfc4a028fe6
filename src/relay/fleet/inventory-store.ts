/**
 * Device records in the fleet's Redis (docs/inventory.md), so every relay
 * and worker lists every device of the fleet:
 *
 *   revtun:{<fleet>}:devices         hash  device id -> "v1.<mac>.<record JSON>"
 *   revtun:{<fleet>}:device-history  hash  minute -> devices online then (the 24-hour chart)
 *   revtun:{<fleet>}:device-events   channel: "<relayId>\n<id>\n<id>..." after each write
 * (keys.ts builds every key: no fleet name or id can make two of them one.)
 *
 * Records carry a MAC (record-mac.ts, purpose "inventory": a key derived
 * from the fleet key), over the fleet, the id and the JSON, so a Redis writer without the fleet key can delete
 * records but never make one up or move one to another device; a record
 * whose MAC fails is skipped. Pub/sub messages are only hints to re-read
 * (a forged one costs a read), the records are the truth.
 *
 * Who wins when two relays write one device (it moved from A to B, and A's
 * "offline" arrives after B's "online"): the SAVE script keeps a record that
 * says online on another relay over an offline write. The ordering is one
 * script in Redis, atomic, with no clock compared.
 */
import { EventEmitter } from "node:events";
import { Redis } from "ioredis";
import { type DeviceRecord, parseDeviceRecord } from "../inventory/device-record.js";
import type { DeviceStore, HistorySample } from "../inventory/store.js";
import type { FleetTimings, RedisTarget } from "./fleet-options.js";
import { FleetKeyspace } from "./keys.js";
import { RecordMac } from "./record-mac.js";
import { keepConnecting, redisConnectionOptions } from "./redis-connection.js";

const HISTORY_MINUTES = 24 * 60;
/** Records per pipelined batch of SAVE calls, and per HMGET. */
const BATCH = 500;

/** KEYS dev; ARGV id, value, online(1/0), relayId. 0: kept another relay's online record. */
const SAVE = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[3] == '0' and cur then
  local j = string.match(cur, '^v1%.[^.]*%.(.*)$')
  if j then
    local ok, r = pcall(cjson.decode, j)
    if ok and type(r) == 'table' and r.online == true and r.relayId ~= ARGV[4] then return 0 end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1`;

type ScriptedRedis = Redis & { invSave(...args: (string | number)[]): Promise<number> };

export interface RedisDeviceStoreOptions {
  redis: RedisTarget;
  /** The fleet's name ("" for the default fleet): keys.ts and the MAC take it. */
  fleet: string;
  /** The fleet key's private half: the records' MAC key is derived from it. */
  fleetKey: string;
  relayId: string;
  timings: FleetTimings;
}

export class RedisDeviceStore extends EventEmitter implements DeviceStore {
  private readonly redis: ScriptedRedis;
  private readonly sub: Redis;
  private readonly mac: RecordMac;
  private readonly keys: { dev: string; hist: string; events: string };
  private remote: ((ids: string[] | "all") => void) | undefined;
  private everReady = false;
  private closed = false;
  /** Records skipped for a bad MAC or shape since start (the inventory reports it). */
  rejected = 0;

  constructor(private readonly opts: RedisDeviceStoreOptions) {
    super();
    const space = new FleetKeyspace(opts.fleet);
    this.keys = {
      dev: space.key("devices"),
      hist: space.key("device-history"),
      events: space.key("device-events"),
    };
    this.mac = RecordMac.fromFleetKey(opts.fleetKey, opts.fleet, "inventory");
    const t = opts.timings;
    const base = {
      ...redisConnectionOptions(opts.redis),
      lazyConnect: true,
      connectTimeout: t.connectTimeoutMs,
      maxRetriesPerRequest: 0,
      retryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 10), t.reconnectMaxDelayMs),
      reconnectOnError: () => false,
    };
    // Writes and reads: nothing queued while Redis is away (the inventory
    // keeps its records and saves them all again when Redis is back).
    this.redis = new Redis({
      ...base,
      connectionName: `revtun-inventory-${opts.relayId}`,
      commandTimeout: Math.max(t.commandTimeoutMs, 2_000),
      enableOfflineQueue: false,
    }) as ScriptedRedis;
    this.redis.defineCommand("invSave", { numberOfKeys: 1, lua: SAVE });
    this.sub = new Redis({ ...base, connectionName: `revtun-inventory-sub-${opts.relayId}` });
    keepConnecting(this.redis, () => this.closed);
    keepConnecting(this.sub, () => this.closed);
    this.redis.on("error", () => {});
    this.sub.on("error", () => {});
    this.sub.on("message", (_channel: string, message: string) => {
      const [from, ...ids] = message.split("\n");
      if (from !== this.opts.relayId && ids.length) this.remote?.(ids);
    });
    // A reconnect may follow an outage (missed messages, or an empty Redis): the inventory re-reads and re-saves.
    this.sub.on("ready", () => {
      if (this.everReady) this.remote?.("all");
      this.everReady = true;
    });
  }

  /**
   * The password probe (redis-auth.ts) found Redis needs none: it is not
   * sent (ioredis prints a warning for a password Redis does not need, and
   * a library never prints). Before load().
   */
  dropPassword(): void {
    for (const r of [this.redis, this.sub]) {
      r.options.password = undefined;
      r.options.sentinelPassword = undefined;
    }
  }

  onRemote(fn: (ids: string[] | "all") => void): void {
    this.remote = fn;
  }

  async load(): Promise<{ records: DeviceRecord[]; history: HistorySample[] }> {
    await Promise.all([
      this.redis.connect().catch(() => {}),
      this.sub
        .connect()
        .then(() => this.sub.subscribe(this.keys.events))
        .catch(() => {}),
    ]);
    const records: DeviceRecord[] = [];
    let history: HistorySample[] = [];
    try {
      const all = await this.redis.hgetall(this.keys.dev);
      for (const [id, value] of Object.entries(all)) {
        const r = this.open(id, value);
        if (r) records.push(r);
      }
      const h = await this.redis.hgetall(this.keys.hist);
      history = Object.entries(h)
        .map(([m, n]) => [Number(m), Number(n)] as HistorySample)
        .filter(([m, n]) => Number.isInteger(m) && Number.isInteger(n) && n >= 0)
        .sort((a, b) => a[0] - b[0]);
    } catch {
      // Redis away at start: the inventory starts from its own devices and re-reads on "all".
    }
    return { records, history };
  }

  async fetch(ids: string[]): Promise<DeviceRecord[]> {
    const out: DeviceRecord[] = [];
    for (let i = 0; i < ids.length; i += BATCH) {
      const chunk = ids.slice(i, i + BATCH);
      const values = await this.redis.hmget(this.keys.dev, ...chunk);
      values.forEach((v, j) => {
        const r = v === null ? undefined : this.open(chunk[j] ?? "", v);
        if (r) out.push(r);
      });
    }
    return out;
  }

  async save(records: DeviceRecord[]): Promise<boolean> {
    if (records.length === 0) return true;
    try {
      for (let i = 0; i < records.length; i += BATCH) {
        const chunk = records.slice(i, i + BATCH);
        const pipe = this.redis.pipeline();
        for (const r of chunk) {
          (pipe as unknown as ScriptedRedis).invSave(
            this.keys.dev,
            r.id,
            this.seal(r),
            r.online ? "1" : "0",
            this.opts.relayId,
          );
        }
        pipe.publish(this.keys.events, [this.opts.relayId, ...chunk.map((r) => r.id)].join("\n"));
        const res = await pipe.exec();
        if (!res || res.some(([e]) => e)) return false;
      }
      return true;
    } catch {
      return false;
    }
  }

  async remove(ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.redis
      .pipeline()
      .hdel(this.keys.dev, ...ids)
      .publish(this.keys.events, [this.opts.relayId, ...ids].join("\n"))
      .exec()
      .catch(() => {});
  }

  async saveHistory([minute, online]: HistorySample): Promise<void> {
    // Every relay writes the same figure for a minute (each reads the whole
    // fleet): the last one wins and they agree within a pub/sub delay.
    await this.redis
      .pipeline()
      .hset(this.keys.hist, String(minute), String(online))
      .hdel(this.keys.hist, String(minute - HISTORY_MINUTES))
      .exec()
      .catch(() => {});
  }

  async close(): Promise<void> {
    this.closed = true;
    this.remote = undefined;
    this.redis.disconnect();
    this.sub.disconnect();
  }

  private seal(r: DeviceRecord): string {
    const json = JSON.stringify(r);
    return `v1.${this.mac.sign("device", [r.id, json])}.${json}`;
  }

  private open(id: string, value: string): DeviceRecord | undefined {
    const m = /^v1\.([A-Za-z0-9_-]+)\.(.*)$/s.exec(value);
    let r: DeviceRecord | undefined;
    if (m?.[1] && m[2] !== undefined && this.mac.verify("device", [id, m[2]], m[1])) {
      try {
        r = parseDeviceRecord(JSON.parse(m[2]));
      } catch {
        r = undefined;
      }
    }
    if (!r || r.id !== id) {
      this.rejected++;
      return undefined;
    }
    return r;
  }
}
