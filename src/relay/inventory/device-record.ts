/**
 * A device as the fleet remembers it (docs/inventory.md): one record per
 * device key, outliving its sessions, so an operator can tell "offline since
 * 10:42 on relay-b" from "never existed". The relay that holds a device's
 * session writes its record; every relay reads all of them.
 */

/** Per minute of the last hour: [minute since the epoch, connections opened, bytes both ways]. */
export type MinuteSample = [minute: number, connections: number, bytes: number];

export interface DeviceRecord {
  /** The device key's SHA256 fingerprint: a device is its key (a certificate's key for certificate logins). */
  id: string;
  /** Tunnel names it holds or last held, newest first (at most MAX_NAMES). */
  names: string[];
  keyComment: string;
  keyType: string;
  username: string;
  /** A certificate login's key id and serial (absent for plain keys). */
  certKeyId?: string;
  certSerial?: string;
  /** The client's SSH version line (`SSH-2.0-OpenSSH_9.2p1 ...`), as it sent it. */
  clientVersion?: string;
  /** ms since the epoch. */
  firstSeen: number;
  /** While online: the last time its relay confirmed it (every TOUCH_MS at most); offline: when it left. */
  lastSeen: number;
  /** The relay (with --workers, the worker: `relay-b-w1`) it is on or was last on. */
  relayId: string;
  /** As its relay wrote it; see deviceState for what a reader makes of it. */
  online: boolean;
  /** ip:port of its SSH connection (its newest session). */
  peer: string;
  /** What it binds (or last bound): `device42:22`, `*:8080`. */
  bindings: string[];
  /** Forwarded connections open now, and carried since first seen. */
  connections: number;
  connectionsTotal: number;
  /** Bytes toward the device, and from it, since first seen. */
  bytesIn: number;
  bytesOut: number;
  /** The last hour, minutes with traffic only. */
  minutes: MinuteSample[];
  /** Enrolled devices are kept past the retention (the enrollment helper sets this). */
  enrolled?: boolean;
}

export type DeviceState = "online" | "offline";

export const MAX_NAMES = 16;
export const MAX_BINDINGS = 64;
/** Strings from the device (comment, username, version) are cut to this in a record. */
export const MAX_TEXT = 256;
export const HOUR_MINUTES = 60;

/**
 * Whether a record's device is online: its relay wrote it so, and that relay
 * is alive (a relay killed with -9 never writes "offline": its lease lapsing
 * is what tells the rest of the fleet).
 */
export function deviceState(r: DeviceRecord, relayAlive: (relayId: string) => boolean): DeviceState {
  return r.online && relayAlive(r.relayId) ? "online" : "offline";
}

/** `2026-12-04 10:42:01Z`: the operator-facing form of a time, to the second, UTC. */
export function formatSeen(ms: number): string {
  return new Date(ms)
    .toISOString()
    .replace("T", " ")
    .replace(/\.\d+Z$/, "Z");
}

/** The line an operator gets opening a name whose device is offline (issue 22). */
export function offlineLine(name: string, r: DeviceRecord): string {
  return `${name} is offline (last seen ${formatSeen(r.lastSeen)} on ${r.relayId})`;
}

/** Adds activity to the current minute and drops minutes older than an hour. */
export function addActivity(r: DeviceRecord, now: number, connections: number, bytes: number): void {
  const minute = Math.floor(now / 60_000);
  const last = r.minutes.at(-1);
  if (last && last[0] === minute) {
    last[1] += connections;
    last[2] += bytes;
  } else r.minutes.push([minute, connections, bytes]);
  const oldest = minute - HOUR_MINUTES + 1;
  while (r.minutes.length && (r.minutes[0]?.[0] ?? oldest) < oldest) r.minutes.shift();
}

const str = (v: unknown, max = MAX_TEXT): v is string => typeof v === "string" && v.length <= max;
const num = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v) && v >= 0;

/**
 * A record read back from a store, checked field by field: anything else
 * (another version, a hand edit, garbage) is undefined and skipped by the
 * caller, never half-trusted.
 */
export function parseDeviceRecord(v: unknown): DeviceRecord | undefined {
  if (typeof v !== "object" || v === null) return undefined;
  const r = v as Record<string, unknown>;
  const strings = (a: unknown, max: number) => Array.isArray(a) && a.length <= max && a.every((s) => str(s));
  if (!str(r.id, 128) || r.id === "" || !str(r.relayId, 128) || !str(r.peer)) return undefined;
  if (!str(r.keyComment) || !str(r.keyType) || !str(r.username)) return undefined;
  if (!strings(r.names, MAX_NAMES) || !strings(r.bindings, MAX_BINDINGS)) return undefined;
  for (const k of ["firstSeen", "lastSeen", "connections", "connectionsTotal", "bytesIn", "bytesOut"])
    if (!num(r[k])) return undefined;
  if (typeof r.online !== "boolean") return undefined;
  for (const k of ["certKeyId", "certSerial", "clientVersion"])
    if (r[k] !== undefined && !str(r[k])) return undefined;
  if (r.enrolled !== undefined && typeof r.enrolled !== "boolean") return undefined;
  if (
    !Array.isArray(r.minutes) ||
    r.minutes.length > HOUR_MINUTES ||
    !r.minutes.every((m) => Array.isArray(m) && m.length === 3 && m.every(num))
  )
    return undefined;
  return r as unknown as DeviceRecord;
}
