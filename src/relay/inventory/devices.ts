/**
 * The device inventory (issue 22, docs/inventory.md): a record per device
 * that outlives its sessions, built from the relay's events, kept in a store
 * (state directory, the fleet's Redis, or memory) and, in a fleet, merged
 * with every other relay's records, so any relay or worker can list every
 * device of the fleet, online or not, and say where it was last seen.
 *
 * A device is a key that binds something: operators (keys that only open
 * channels) and fleet peers never become records. The records in memory are
 * the whole fleet's (10,000 devices are about 5 MB); lookups (offlineLine,
 * list) never wait on Redis.
 */
import { EventEmitter } from "node:events";
import { Gauge, type Registry } from "prom-client";
import { formatBindAddress } from "../../shared/address.js";
import type { RelayEvents } from "../events.js";
import {
  addActivity,
  type DeviceRecord,
  type DeviceState,
  deviceState,
  MAX_BINDINGS,
  MAX_NAMES,
  MAX_TEXT,
  offlineLine,
} from "./device-record.js";
import type { DeviceStore, HistorySample } from "./store.js";

/**
 * Offline devices are forgotten 30 days after they were last seen, unless
 * enrolled: long enough for a device on a month-long shelf or a site closed
 * for the holidays to still be "offline since", short enough that a fleet
 * that rotates keys does not list every old key for ever.
 */
export const DEFAULT_RETENTION_MS = 30 * 24 * 3600_000;
/** A session arriving or leaving reaches the store (and every page) within this. */
const FLUSH_MS = 200;
/** Byte and connection counts alone are written at most this often per device. */
const COUNTS_EVERY_MS = 2_000;
/** An online device's lastSeen is refreshed this often (what "last seen" says after a relay dies). */
const TOUCH_MS = 15_000;
const PRUNE_EVERY_MS = 3600_000;
/** Under the fleet's lease (3 s): a relay killed with -9 has its devices offline as soon as its lease lapses. */
const FRESH_MS = 2_000;
/** Changes per 'changed' event; more and the listener is told to re-read everything. */
export const MAX_CHANGED = 500;

/** RelayOptions.inventory. */
export interface InventoryOptions {
  /** Offline devices not enrolled are forgotten after this (default DEFAULT_RETENTION_MS). */
  retentionMs?: number;
  /** The name "last seen on" gives this relay outside a fleet (default: the host name). */
  relayId?: string;
}

export interface DeviceInventoryOptions {
  /** The id "last seen on" names: the fleet relay id (with --workers, the worker's), else a local name. */
  relayId: string;
  store: DeviceStore;
  /** Whether a relay is alive (fleet: its lease is live); default: only this one is. */
  relayAlive?: (relayId: string) => boolean;
  retentionMs?: number;
  /** Enrolled devices are never forgotten (the enrollment store answers). */
  isEnrolled?: (r: DeviceRecord) => boolean;
  /** Keys that are never devices: the fleet key. */
  isPeer?: (fingerprint: string) => boolean;
  /** The fleet's live relays (ids), for revtun_fleet_relay_up; default: this one. */
  relays?: () => Iterable<string>;
  now?: () => number;
}

export interface DeviceView extends DeviceRecord {
  state: DeviceState;
}

export interface DeviceQuery {
  state?: DeviceState | undefined;
  /** Case-insensitive substring of a name, key comment, fingerprint or binding. */
  name?: string | undefined;
  /** 1-based. */
  page?: number | undefined;
  perPage?: number | undefined;
}

export interface DevicePage {
  devices: DeviceView[];
  /** Matching the query, before paging. */
  total: number;
  page: number;
  perPage: number;
  /** The whole fleet, whatever the query. */
  counts: { online: number; offline: number };
}

export interface DeviceInventoryEvents {
  /** Records that changed (ids), or "all": read them again. At most a few times a second. */
  changed: [ids: string[] | "all"];
  /** The store refused or failed something; said once per run of failures. */
  problem: [{ message: string }];
}

interface LocalSession {
  deviceId: string | undefined;
  info: RelayEvents["session-opened"][0];
  /** Bindings as shown (`device42:22`), with whether each is a tunnel name. */
  bindings: Map<string, string | undefined>;
}

type Listener = [string, (...a: unknown[]) => void];

export class DeviceInventory extends EventEmitter<DeviceInventoryEvents> {
  private readonly records = new Map<string, DeviceRecord>();
  /** Tunnel name -> device id that last held it. */
  private readonly byName = new Map<string, string>();
  private readonly sessions = new Map<number, LocalSession>();
  /** Device id -> this relay's sessions of it that bind something. */
  private readonly live = new Map<string, Set<number>>();
  private readonly urgent = new Set<string>();
  private readonly counts = new Map<string, number>();
  private readonly changed = new Set<string>();
  private changedAll = false;
  private history: HistorySample[] = [];
  private readonly timers: NodeJS.Timeout[] = [];
  private lastCountsFlush = 0;
  private lastStateCheck = 0;
  /** Each record's state at the last check (checkStates). */
  private readonly lastState = new Map<string, DeviceState>();
  private lastTouch = 0;
  private saving = false;
  private storeFailing = false;
  private started = false;
  private closed = false;
  private relayListeners: Listener[] = [];
  private readonly now: () => number;
  private readonly retentionMs: number;

  constructor(private readonly opts: DeviceInventoryOptions) {
    super();
    this.now = opts.now ?? Date.now;
    this.retentionMs = opts.retentionMs ?? DEFAULT_RETENTION_MS;
  }

  /** Follows a relay's events; call before its start() so no session is missed. */
  attach(relay: EventEmitter<RelayEvents>): void {
    const on = <K extends keyof RelayEvents>(name: K, fn: (...a: RelayEvents[K]) => void) => {
      (relay.on as (n: K, f: (...a: RelayEvents[K]) => void) => void).call(relay, name, fn);
      this.relayListeners.push([name, fn as unknown as (...a: unknown[]) => void]);
    };
    on("session-opened", (x) => this.sessionOpened(x));
    on("forward-bound", (x) => this.bound(x));
    on("forward-released", (x) => this.released(x));
    on("forwarded-open", (x) => this.activity(x.sessionId, 1, 0, 1));
    on("forwarded-closed", (x) => this.activity(x.sessionId, 0, x.bytesIn + x.bytesOut, -1, x));
    on("session-closed", (x) => this.sessionClosed(x.sessionId));
    this.detach = () => {
      const off = relay.off as unknown as (n: string, f: (...a: unknown[]) => void) => void;
      for (const [name, fn] of this.relayListeners) off.call(relay, name, fn);
      this.relayListeners = [];
    };
  }

  private detach: () => void = () => {};

  /**
   * Loads the stored records; this relay's own "online" ones are from a run
   * that ended. A state directory is read before this resolves (a relay
   * answers "offline since" from its first connection); the fleet's Redis is
   * read in the background: waiting for it kept a --workers worker's port
   * accepting and dropping connections ~100 ms longer before it served
   * (test/relay/fleet-workers-cli.test.ts lost handshakes), and every record
   * arrives within that anyway.
   */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    const store = this.opts.store;
    const loading = store.load().then(({ records, history }) => this.loaded(records, history));
    if (store.fetch) loading.catch(() => {});
    else await loading;
    store.onRemote?.((ids) => void this.remote(ids));
    const every = (ms: number, fn: () => void) => {
      const t = setInterval(fn, ms);
      t.unref();
      this.timers.push(t);
    };
    every(FLUSH_MS, () => void this.flush());
    every(PRUNE_EVERY_MS, () => this.prune(this.now()));
    every(60_000, () => void this.sample());
  }

  private loaded(records: DeviceRecord[], history: HistorySample[]): void {
    if (this.closed) return;
    this.history = [...history, ...this.history];
    for (const r of records) {
      if (this.live.has(r.id)) continue;
      if (r.online && r.relayId === this.opts.relayId) {
        // Left online by this relay's previous run (a crash, kill -9): it is offline since then.
        r.online = false;
        r.connections = 0;
        this.urgent.add(r.id);
      }
      this.put(r);
    }
    this.prune(this.now());
    void this.sample();
  }

  /** Writes what is pending, stops, and detaches. Devices online here stay "online on <this relay>" until its lease lapses. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    this.detach();
    // Sessions close before this (relay.close): their "offline" goes out now.
    await this.flush(true);
    await this.opts.store.close();
  }

  state(r: DeviceRecord): DeviceState {
    // A record its relay wrote a moment ago counts before this relay's next
    // look at the fleet's leases (once a second): that look alone made a
    // device on another relay show online ~1 s late.
    const fresh = this.now() - r.lastSeen < FRESH_MS;
    return deviceState(r, (id) => id === this.opts.relayId || fresh || (this.opts.relayAlive?.(id) ?? false));
  }

  get(id: string): DeviceView | undefined {
    const r = this.records.get(id);
    return r && { ...r, state: this.state(r) };
  }

  /** Online and offline devices, the whole fleet. */
  totals(): { online: number; offline: number } {
    let online = 0;
    for (const r of this.records.values()) if (this.state(r) === "online") online++;
    return { online, offline: this.records.size - online };
  }

  list(q: DeviceQuery = {}): DevicePage {
    const perPage = Math.min(Math.max(q.perPage ?? 100, 1), 1000);
    const page = Math.max(q.page ?? 1, 1);
    const needle = q.name?.toLowerCase();
    const all: DeviceView[] = [];
    let online = 0;
    for (const r of this.records.values()) {
      const state = this.state(r);
      if (state === "online") online++;
      if (q.state && state !== q.state) continue;
      if (needle && !matches(r, needle)) continue;
      all.push({ ...r, state });
    }
    // Code-unit order, not localeCompare: 10,000 devices sort in ~5 ms this way, ~120 ms with the locale's.
    all.sort((a, b) => cmp(label(a), label(b)) || cmp(a.id, b.id));
    return {
      devices: all.slice((page - 1) * perPage, page * perPage),
      total: all.length,
      page,
      perPage,
      counts: { online, offline: this.records.size - online },
    };
  }

  /**
   * The operator's line for a name whose device is offline; undefined for a
   * name nobody ever held here or in the fleet (the caller keeps "no
   * tunnel"), and for a device that is online (then the name is simply not
   * bound now, and "no tunnel" is the truth).
   */
  offlineLine(name: string): string | undefined {
    const id = this.byName.get(name.toLowerCase());
    const r = id === undefined ? undefined : this.records.get(id);
    if (!r || this.state(r) === "online") return undefined;
    return offlineLine(name, r);
  }

  /** Devices online per minute over the last 24 hours, ending with now. */
  onlineHistory(): HistorySample[] {
    const now = Math.floor(this.now() / 60_000);
    const out = this.history.filter(([m]) => m > now - 24 * 60 && m < now);
    out.push([now, this.totals().online]);
    return out;
  }

  /**
   * revtun_fleet_devices{state}, revtun_fleet_relay_up{relay} and
   * revtun_fleet_device_last_seen_seconds{device,fingerprint,relay}: what
   * contrib/prometheus/revtun-alerts.yml alerts on, from any relay.
   */
  registerMetrics(registry: Registry): void {
    const self = this;
    new Gauge({
      name: "revtun_fleet_devices",
      help: "Devices of the fleet (every relay's) by state, as this relay sees them.",
      labelNames: ["state"],
      registers: [registry],
      collect() {
        const t = self.totals();
        this.set({ state: "online" }, t.online);
        this.set({ state: "offline" }, t.offline);
      },
    });
    new Gauge({
      name: "revtun_fleet_relay_up",
      help: "1 for each relay (worker) of the fleet whose lease is live, as this relay sees them.",
      labelNames: ["relay"],
      registers: [registry],
      collect() {
        this.reset();
        for (const id of self.opts.relays?.() ?? [self.opts.relayId]) this.set({ relay: id }, 1);
      },
    });
    new Gauge({
      name: "revtun_fleet_device_last_seen_seconds",
      help: "When each device of the fleet was last seen (Unix time; now while online).",
      labelNames: ["device", "fingerprint", "relay"],
      registers: [registry],
      collect() {
        this.reset();
        const now = self.now();
        for (const r of self.records.values()) {
          const seen = self.state(r) === "online" ? now : r.lastSeen;
          this.set(
            { device: r.names[0] ?? "", fingerprint: r.id, relay: r.relayId },
            Math.floor(seen / 1000),
          );
        }
      },
    });
  }

  // ---- events ----------------------------------------------------------------

  private sessionOpened(x: RelayEvents["session-opened"][0]): void {
    if (this.opts.isPeer?.(x.fingerprint)) return;
    this.sessions.set(x.sessionId, { deviceId: undefined, info: x, bindings: new Map() });
  }

  private bound(x: RelayEvents["forward-bound"][0]): void {
    const s = this.sessions.get(x.sessionId);
    if (!s) return;
    // A tunnel name listens nowhere (events.ts): it is held, not bound to a port.
    const isName = x.listening.length === 0 && x.address !== "";
    const shown = isName ? `${x.address}:${x.port}` : formatBindAddress(x.address, x.port);
    s.bindings.set(shown, isName ? x.address.toLowerCase() : undefined);
    const now = this.now();
    let r = this.records.get(x.fingerprint);
    if (!s.deviceId) {
      s.deviceId = x.fingerprint;
      const set = this.live.get(x.fingerprint) ?? new Set();
      set.add(x.sessionId);
      this.live.set(x.fingerprint, set);
      // Its first session here to bind something: online here from now.
      if (set.size === 1 || !r) r = this.online(s, r, now);
      else r.peer = s.info.peer;
    }
    if (!r) return;
    if (isName) {
      const name = x.address.toLowerCase();
      r.names = [name, ...r.names.filter((n) => n !== name)].slice(0, MAX_NAMES);
      this.byName.set(name, r.id);
    }
    r.bindings = this.liveBindings(r.id);
    r.lastSeen = now;
    this.mark(r.id, true);
  }

  private released(x: RelayEvents["forward-released"][0]): void {
    const s = this.sessions.get(x.sessionId);
    if (!s?.deviceId) return;
    // Released because the session or the relay is ending: the record keeps
    // them as what the device last bound; otherwise they are gone.
    if (x.reason === "session-closed" || x.reason === "relay-closing") return;
    const isName = x.listening.length === 0 && x.address !== "";
    s.bindings.delete(isName ? `${x.address}:${x.port}` : formatBindAddress(x.address, x.port));
    const r = this.records.get(s.deviceId);
    if (!r) return;
    r.bindings = this.liveBindings(r.id);
    this.mark(r.id, true);
  }

  private activity(
    sessionId: number,
    opened: number,
    bytes: number,
    delta: number,
    closed?: { bytesIn: number; bytesOut: number },
  ): void {
    const id = this.sessions.get(sessionId)?.deviceId;
    const r = id === undefined ? undefined : this.records.get(id);
    if (!r) return;
    r.connections = Math.max(0, r.connections + delta);
    r.connectionsTotal += opened;
    if (closed) {
      r.bytesIn += closed.bytesIn;
      r.bytesOut += closed.bytesOut;
    }
    addActivity(r, this.now(), opened, bytes);
    this.mark(r.id, false);
  }

  private sessionClosed(sessionId: number): void {
    const s = this.sessions.get(sessionId);
    this.sessions.delete(sessionId);
    if (!s?.deviceId) return;
    const set = this.live.get(s.deviceId);
    set?.delete(sessionId);
    const r = this.records.get(s.deviceId);
    if (!r) return;
    r.lastSeen = this.now();
    if (!set?.size) {
      this.live.delete(s.deviceId);
      r.online = false;
      r.connections = 0;
      // What it bound last: the closing session's bindings (kept by released()).
      r.bindings = [...s.bindings.keys()].slice(0, MAX_BINDINGS);
    } else r.bindings = this.liveBindings(r.id);
    this.mark(r.id, true);
  }

  /** A session of this device bound its first forward: the device is online here. */
  private online(s: LocalSession, old: DeviceRecord | undefined, now: number): DeviceRecord {
    const x = s.info as RelayEvents["session-opened"][0] & CertificateFields;
    const cut = (t: string) => t.slice(0, MAX_TEXT);
    const keyId = x.certKeyId ?? x.certificate?.keyId;
    const serial = x.certSerial ?? x.certificate?.serial;
    const r: DeviceRecord = {
      id: s.deviceId ?? x.fingerprint,
      names: old?.names ?? [],
      keyComment: cut(x.keyComment),
      keyType: cut(x.keyType),
      username: cut(x.username),
      ...(keyId !== undefined ? { certKeyId: cut(String(keyId)) } : {}),
      ...(serial !== undefined ? { certSerial: cut(String(serial)) } : {}),
      ...(x.clientVersion !== undefined ? { clientVersion: cut(x.clientVersion) } : {}),
      firstSeen: old?.firstSeen ?? now,
      lastSeen: now,
      relayId: this.opts.relayId,
      online: true,
      peer: x.peer,
      bindings: [],
      // Open connections are counted where they are: none here yet.
      connections: 0,
      connectionsTotal: old?.connectionsTotal ?? 0,
      bytesIn: old?.bytesIn ?? 0,
      bytesOut: old?.bytesOut ?? 0,
      minutes: old?.minutes ?? [],
      ...(old?.enrolled ? { enrolled: true } : {}),
    };
    this.put(r);
    return r;
  }

  private liveBindings(id: string): string[] {
    const out = new Set<string>();
    for (const sid of this.live.get(id) ?? [])
      for (const b of this.sessions.get(sid)?.bindings.keys() ?? []) out.add(b);
    return [...out].slice(0, MAX_BINDINGS);
  }

  // ---- store -----------------------------------------------------------------

  private put(r: DeviceRecord): void {
    this.records.set(r.id, r);
    for (const n of r.names) {
      const cur = this.byName.get(n);
      const other = cur === undefined ? undefined : this.records.get(cur);
      if (!other || other === r || other.lastSeen <= r.lastSeen || this.state(r) === "online")
        this.byName.set(n, r.id);
    }
    this.note(r.id);
  }

  private note(id: string): void {
    if (this.changedAll) return;
    this.changed.add(id);
    if (this.changed.size > MAX_CHANGED) {
      this.changedAll = true;
      this.changed.clear();
    }
  }

  private mark(id: string, urgent: boolean): void {
    if (urgent) this.urgent.add(id);
    else this.counts.set(id, (this.counts.get(id) ?? 0) + 1);
    this.note(id);
  }

  private async flush(force = false): Promise<void> {
    this.announce();
    if (this.saving) return;
    const now = this.now();
    const ids = new Set(this.urgent);
    if (force || now - this.lastCountsFlush >= COUNTS_EVERY_MS) {
      for (const id of this.counts.keys()) ids.add(id);
      this.counts.clear();
      this.lastCountsFlush = now;
    }
    if (force || now - this.lastTouch >= TOUCH_MS) {
      this.lastTouch = now;
      for (const id of this.live.keys()) {
        const r = this.records.get(id);
        if (r) {
          r.lastSeen = now;
          ids.add(id);
        }
      }
    }
    this.urgent.clear();
    if (ids.size === 0) return;
    const batch: DeviceRecord[] = [];
    for (const id of ids) {
      const r = this.records.get(id);
      if (r) batch.push(structuredClone(r));
    }
    this.saving = true;
    const ok = await this.opts.store.save(batch).catch(() => false);
    this.saving = false;
    if (!ok) {
      // Kept for the next flush: a store that is away gets everything once back.
      for (const id of ids) this.urgent.add(id);
      if (!this.storeFailing)
        this.emit("problem", { message: "device records could not be stored; retrying" });
    }
    this.storeFailing = !ok;
  }

  /**
   * States that changed without a record changing: a relay's lease lapsed
   * (kill -9: its devices are offline now), or a fresh record aged into
   * needing its relay's lease. One pass a second over the records (10,000:
   * well under a millisecond).
   */
  private checkStates(): void {
    const now = this.now();
    if (now - this.lastStateCheck < 1_000) return;
    this.lastStateCheck = now;
    for (const r of this.records.values()) {
      const s = this.state(r);
      if (this.lastState.get(r.id) !== s) {
        if (this.lastState.has(r.id)) this.note(r.id);
        this.lastState.set(r.id, s);
      }
    }
    if (this.lastState.size > this.records.size)
      for (const id of this.lastState.keys()) if (!this.records.has(id)) this.lastState.delete(id);
  }

  /** Tells listeners (the admin page) what changed, here or on other relays. */
  private announce(): void {
    this.checkStates();
    if (this.changedAll) {
      this.changedAll = false;
      this.changed.clear();
      this.emit("changed", "all");
    } else if (this.changed.size) {
      const ids = [...this.changed];
      this.changed.clear();
      this.emit("changed", ids);
    }
  }

  /** Other relays wrote these records (or Redis came back: everything). */
  private async remote(ids: string[] | "all"): Promise<void> {
    const store = this.opts.store;
    try {
      if (ids === "all") {
        const { records } = await store.load();
        const stored = new Map(records.map((r) => [r.id, r]));
        for (const r of records) {
          const mine = this.records.get(r.id);
          if (!this.live.has(r.id) && (!mine || mine.lastSeen <= r.lastSeen)) this.put(r);
        }
        // Redis may have restarted empty, or a Sentinel failover promoted a
        // replica that had not yet received the last writes: every record
        // this relay knows newer than Redis's (or missing there) is written
        // back, its own online devices always. No record is lost while one
        // relay remembers it.
        for (const [id, r] of this.records) {
          const s = stored.get(id);
          if (this.live.has(id) || !s || s.lastSeen < r.lastSeen) this.urgent.add(id);
        }
        this.changedAll = true;
        return;
      }
      const wanted = ids.filter((id) => !this.live.has(id));
      const got = (await store.fetch?.(wanted)) ?? [];
      const seen = new Set(got.map((r) => r.id));
      for (const r of got) this.put(r);
      // Gone from the store (pruned by another relay): gone here too.
      for (const id of wanted) if (!seen.has(id) && this.records.delete(id)) this.note(id);
    } catch {
      // Redis away: the "all" on its return covers what was missed.
    }
  }

  private async sample(): Promise<void> {
    const minute = Math.floor(this.now() / 60_000);
    const online = this.totals().online;
    const last = this.history.at(-1);
    if (last && last[0] === minute) last[1] = online;
    else this.history.push([minute, online]);
    while ((this.history[0]?.[0] ?? minute) <= minute - 24 * 60) this.history.shift();
    await this.opts.store.saveHistory([minute, online]).catch(() => {});
  }

  private prune(now: number): void {
    const gone: string[] = [];
    for (const r of this.records.values()) {
      if (this.state(r) === "online" || this.live.has(r.id)) continue;
      if (r.enrolled || this.opts.isEnrolled?.(r)) continue;
      if (now - r.lastSeen > this.retentionMs) gone.push(r.id);
    }
    if (gone.length === 0) return;
    for (const id of gone) {
      this.records.delete(id);
      this.note(id);
    }
    for (const [n, id] of this.byName) if (!this.records.has(id)) this.byName.delete(n);
    void this.opts.store.remove(gone);
  }
}

/** Fields a certificate login adds to session-opened (the certificates work), read when present. */
interface CertificateFields {
  clientVersion?: string;
  certKeyId?: string;
  certSerial?: string | number;
  certificate?: { keyId?: string; serial?: string | number | bigint };
}

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

function label(r: DeviceRecord): string {
  return r.names[0] ?? (r.keyComment || r.id);
}

function matches(r: DeviceRecord, needle: string): boolean {
  if (r.id.toLowerCase().includes(needle) || r.keyComment.toLowerCase().includes(needle)) return true;
  return r.names.some((n) => n.includes(needle)) || r.bindings.some((b) => b.toLowerCase().includes(needle));
}
