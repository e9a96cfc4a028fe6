/**
 * Relay options and their defaults. Limits exist so one misbehaving or
 * hostile peer cannot exhaust the relay: each is per the thing it protects.
 */
import type { Registry } from "prom-client";
import { RevtunError } from "../shared/errors.js";
import type { EnrollmentOptions } from "./enrollment/enrollment.js";
import type { FleetKey } from "./fleet/fleet-key.js";
import { type FleetTimings, fleetTimings, type RedisTarget } from "./fleet/fleet-options.js";
import type { InventoryOptions } from "./inventory/devices.js";

/** Membership of a relay fleet (fleet/index.ts): names bound here are reachable through every member. */
export interface RelayFleetOptions {
  redis: RedisTarget;
  fleetKey: FleetKey;
  /** Unique in the fleet: [A-Za-z0-9._-], at most 64 characters. */
  relayId: string;
  /**
   * host:port (or [v6]:port) where peer relays reach this relay's SSH
   * listener. With `peerListen`, the port may be 0: the one that listener
   * bound is published.
   */
  advertise: string;
  /**
   * A listener of this relay's own for peer relays, besides `listen`. Under
   * node:cluster (`--workers`) `listen` is shared: the primary hands each
   * connection to any worker, so a peer dialling it to reach the worker that
   * holds a name lands on the wrong one N-1 times in N (measured with 3
   * workers: 4 of 10 operator connections refused "no tunnel"). This one is
   * listened on with `exclusive`, never shared, so a peer reaches this very
   * process. Port 0: an ephemeral port.
   */
  peerListen?: { host?: string; port: number };
  /** Lease and timeout overrides; tests shorten them. */
  timings?: Partial<FleetTimings>;
  /** Redis key prefix, so several fleets (or tests) can share one database. */
  prefix?: string;
}

export interface RelayLimits {
  /**
   * TCP connections that have not authenticated yet, relay-wide: the `full`
   * of sshd's MaxStartups start:rate:full. Default 100 (sshd's default).
   */
  maxUnauthenticated: number;
  /**
   * Unauthenticated connections above which new ones are refused at random
   * (sshd's MaxStartups `start`): with probability rising linearly from
   * unauthenticatedDropRatePercent at this count to 100 % at
   * maxUnauthenticated. Default 20: above maxUnauthenticatedPerSource, so
   * one address alone never makes anyone else's connection a gamble.
   */
  unauthenticatedDropStart: number;
  /** Refusal probability, in percent, at unauthenticatedDropStart (MaxStartups `rate`). Default 30. */
  unauthenticatedDropRatePercent: number;
  /**
   * Unauthenticated connections per source address (sshd's PerSourceMaxStartups).
   * Default 10. Measured before: 64 idle sockets from one address (the old
   * relay-wide limit), reopened every 20 s, kept every agent out for good.
   */
  maxUnauthenticatedPerSource: number;
  /** Source addresses whose recent authentication failures are remembered (oldest forgotten first). Default 10000. */
  maxTrackedSources: number;
  /** Concurrent authenticated sessions per key (not the fleet key: maxPeerSessions). */
  maxSessionsPerKey: number;
  /**
   * Concurrent sessions of fleet peer relays (the fleet key), in place of
   * maxSessionsPerKey: each other member (every worker of every machine)
   * keeps one connection to this relay, so a fleet of 17 relays, or two
   * machines of 16 workers, would be refused by the per-key 16. Default
   * 1024: 16 machines of MAX_WORKERS (64) workers.
   */
  maxPeerSessions: number;
  /** Remote forwards (tcpip-forward) per session. */
  maxForwardsPerSession: number;
  /** Forwarded connections (forwarded-tcpip channels) open per session. */
  maxChannelsPerSession: number;
  /**
   * Channels one fleet peer session may have open, in place of
   * maxChannelsPerSession: a peer's one connection carries every operator
   * connection of its relay to names held here (each device session still
   * carries at most maxChannelsPerSession). Default 4096.
   */
  maxChannelsPerPeerSession: number;
  /** Failed authentication attempts before the connection is dropped (sshd's MaxAuthTries). */
  maxAuthAttempts: number;
  /**
   * Bytes the relay holds for one forwarded connection on their way to the
   * agent, beyond what the agent's window lets through. ssh2 queues a channel's
   * writes up to its 2 MiB highWaterMark (lib/Channel.js MAX_WINDOW) before
   * write() returns false, so 200 clients pushing into a forward whose agent
   * never reads cost the relay +643 MiB, 3.2 MiB a connection (sshd: 2.3 MiB).
   * Past this many queued bytes the socket is paused until the queue drains;
   * what is held is at most this plus one socket read (64 KiB). 256 KiB is
   * eight 32 KiB SSH packets, enough to keep a flowing channel busy.
   */
  maxBufferedPerChannel: number;
  /**
   * The same, summed over a session's forwarded connections: past it, any
   * connection with bytes queued is paused until its own queue drains. With
   * 256 channels the per-channel cap alone would allow 80 MiB.
   */
  maxBufferedPerSession: number;
}

export interface RelayOptions {
  /** Where SSH clients connect. No host: all interfaces (IPv6 and IPv4 when available). */
  listen: { host?: string; port: number };
  /** Private host key, OpenSSH or PEM text (see keys.ts loadOrCreateHostKey). */
  hostKey: string | Buffer;
  authorizedKeysFile: string;
  /**
   * sshd's RevokedKeys: an OpenSSH KRL (`ssh-keygen -k`) or a list of public
   * keys. Keys and certificates it revokes are refused, and live sessions
   * using them closed when it changes (watched with authorized_keys, and
   * reloaded with it).
   */
  revokedKeysFile?: string;
  /**
   * sshd's HostCertificate: an OpenSSH host certificate (the `-cert.pub`
   * line) for `hostKey`, presented to clients that trust its CA
   * (known_hosts `@cert-authority`). Checked at start: it must certify the
   * host key, be a host certificate, verify and not have expired.
   */
  hostCertificate?: string;
  /**
   * Let keys without a matching host-specific permitlisten bind non-loopback
   * addresses ("", "*", "0.0.0.0", an interface address), like sshd's
   * GatewayPorts clientspecified. Default false: loopback only.
   */
  gatewayPorts?: boolean;
  /** Reload authorized_keys when it changes on disk (fs.watch on its directory). Default true. */
  watchAuthorizedKeys?: boolean;
  limits?: Partial<RelayLimits>;
  /** Time from TCP accept to successful authentication. Default 20 s. */
  handshakeTimeoutMs?: number;
  /** SSH keepalive toward clients (keepalive@openssh.com, want-reply) when idle. Default 15 s; 0 disables. */
  keepaliveIntervalMs?: number;
  /** Unanswered keepalives before a client is dropped. Default 3. */
  keepaliveCountMax?: number;
  /** Mean delay before a failed authentication is answered (jittered ±40 %). Default 500 ms. */
  authFailureDelayMs?: number;
  /**
   * Extra delay per recent failure from the same source address, added to
   * authFailureDelayMs: an address that keeps failing is answered ever later,
   * on every connection, while other addresses are not. "Recent" decays
   * exponentially with authPenaltyDecayMs as time constant. Default 500 ms;
   * 0 disables. Measured before: 20 connections from one address made 51
   * attempts a second (the per-connection cap of 6 held, nothing else did).
   */
  authPenaltyStepMs?: number;
  /** Ceiling on that extra delay. Default 10 s (below the 20 s handshake timeout). */
  authPenaltyMaxMs?: number;
  /** Time constant of the failure count's decay: e^-1 of it is left after this long. Default 60 s. */
  authPenaltyDecayMs?: number;
  /** How long an agent may take to accept a forwarded-tcpip channel. Default 15 s. */
  channelOpenTimeoutMs?: number;
  /** On close(), how long sessions get to say goodbye before their sockets are destroyed. Default 2 s. */
  closeGraceMs?: number;
  /** Registry for the relay's metrics; default a new one the relay owns. */
  registry?: Registry;
  /** Clock, for expiry-time; tests replace it. */
  now?: () => Date;
  /** Join a fleet of relays sharing tunnel names through Redis. */
  fleet?: RelayFleetOptions;
  /** Be the fleet's certificate authority for enrolled devices (docs/enrollment.md). */
  enrollment?: EnrollmentOptions;
  /** A directory for state that outlives the process (device records: inventory/file-store.ts). */
  stateDir?: string;
  /** The device inventory's retention and, outside a fleet, this relay's name (inventory/index.ts). */
  inventory?: InventoryOptions;
}

export const DEFAULT_LIMITS: RelayLimits = {
  maxUnauthenticated: 100,
  unauthenticatedDropStart: 20,
  unauthenticatedDropRatePercent: 30,
  maxUnauthenticatedPerSource: 10,
  maxTrackedSources: 10_000,
  maxSessionsPerKey: 16,
  maxPeerSessions: 1024,
  maxForwardsPerSession: 32,
  maxChannelsPerSession: 256,
  maxChannelsPerPeerSession: 4096,
  maxAuthAttempts: 6,
  maxBufferedPerChannel: 256 * 1024,
  maxBufferedPerSession: 16 * 1024 * 1024,
};

export interface ResolvedRelayOptions {
  listen: { host?: string; port: number };
  hostKey: string | Buffer;
  authorizedKeysFile: string;
  revokedKeysFile: string | undefined;
  hostCertificate: string | undefined;
  gatewayPorts: boolean;
  watchAuthorizedKeys: boolean;
  limits: RelayLimits;
  handshakeTimeoutMs: number;
  keepaliveIntervalMs: number;
  keepaliveCountMax: number;
  authFailureDelayMs: number;
  authPenaltyStepMs: number;
  authPenaltyMaxMs: number;
  authPenaltyDecayMs: number;
  channelOpenTimeoutMs: number;
  closeGraceMs: number;
  now: () => Date;
  fleet: (RelayFleetOptions & { timings: FleetTimings }) | undefined;
}

function nonNegative(name: string, v: number): number {
  if (!Number.isFinite(v) || v < 0)
    throw new RevtunError("USAGE", `relay option ${name} must be >= 0, got ${v}`);
  return v;
}

function positive(name: string, v: number): number {
  if (!Number.isFinite(v) || v <= 0)
    throw new RevtunError("USAGE", `relay option ${name} must be > 0, got ${v}`);
  return v;
}

export function resolveRelayOptions(o: RelayOptions): ResolvedRelayOptions {
  const limits = { ...DEFAULT_LIMITS, ...o.limits };
  for (const [k, v] of Object.entries(limits)) {
    if (!Number.isInteger(v) || v < 1)
      throw new RevtunError("USAGE", `relay limit ${k} must be an integer >= 1, got ${v}`);
  }
  // A lowered maxUnauthenticated alone lowers the default start with it.
  if (o.limits?.unauthenticatedDropStart === undefined)
    limits.unauthenticatedDropStart = Math.min(limits.unauthenticatedDropStart, limits.maxUnauthenticated);
  if (limits.unauthenticatedDropStart > limits.maxUnauthenticated)
    throw new RevtunError(
      "USAGE",
      `relay limit unauthenticatedDropStart (${limits.unauthenticatedDropStart}) must not exceed maxUnauthenticated (${limits.maxUnauthenticated})`,
    );
  if (limits.unauthenticatedDropRatePercent > 100)
    throw new RevtunError(
      "USAGE",
      `relay limit unauthenticatedDropRatePercent must be 1-100, got ${limits.unauthenticatedDropRatePercent}`,
    );
  if (!Number.isInteger(o.listen.port) || o.listen.port < 0 || o.listen.port > 65535) {
    throw new RevtunError("USAGE", `relay listen port must be 0-65535, got ${o.listen.port}`);
  }
  return {
    listen: o.listen,
    hostKey: o.hostKey,
    authorizedKeysFile: o.authorizedKeysFile,
    revokedKeysFile: o.revokedKeysFile,
    hostCertificate: o.hostCertificate,
    gatewayPorts: o.gatewayPorts ?? false,
    watchAuthorizedKeys: o.watchAuthorizedKeys ?? true,
    limits,
    handshakeTimeoutMs: nonNegative("handshakeTimeoutMs", o.handshakeTimeoutMs ?? 20_000),
    keepaliveIntervalMs: nonNegative("keepaliveIntervalMs", o.keepaliveIntervalMs ?? 15_000),
    keepaliveCountMax: nonNegative("keepaliveCountMax", o.keepaliveCountMax ?? 3),
    authFailureDelayMs: nonNegative("authFailureDelayMs", o.authFailureDelayMs ?? 500),
    authPenaltyStepMs: nonNegative("authPenaltyStepMs", o.authPenaltyStepMs ?? 500),
    authPenaltyMaxMs: nonNegative("authPenaltyMaxMs", o.authPenaltyMaxMs ?? 10_000),
    authPenaltyDecayMs: positive("authPenaltyDecayMs", o.authPenaltyDecayMs ?? 60_000),
    channelOpenTimeoutMs: nonNegative("channelOpenTimeoutMs", o.channelOpenTimeoutMs ?? 15_000),
    closeGraceMs: nonNegative("closeGraceMs", o.closeGraceMs ?? 2_000),
    now: o.now ?? (() => new Date()),
    fleet: o.fleet ? resolveFleet(o.fleet) : undefined,
  };
}

const RELAY_ID = /^[A-Za-z0-9._-]{1,64}$/;

function resolveFleet(f: RelayFleetOptions): RelayFleetOptions & { timings: FleetTimings } {
  const bad = (what: string) => new RevtunError("USAGE", `relay option fleet.${what}`);
  if (!f.redis || typeof f.redis.host !== "string" || !Number.isInteger(f.redis.port))
    throw bad("redis must be { host, port, db } (see parseFleetUrl)");
  if (!f.fleetKey || !Buffer.isBuffer(f.fleetKey.publicBlob) || typeof f.fleetKey.privateKey !== "string")
    throw bad("fleetKey must be a loaded fleet key (see loadFleetKey)");
  if (typeof f.relayId !== "string" || !RELAY_ID.test(f.relayId))
    throw bad(`relayId ${JSON.stringify(f.relayId)} must be [A-Za-z0-9._-], 1 to 64 characters`);
  const m =
    typeof f.advertise === "string"
      ? (/^\[([^\]]+)\]:(\d{1,5})$/.exec(f.advertise) ?? /^([^:\s]+):(\d{1,5})$/.exec(f.advertise))
      : null;
  const port = Number(m?.[2]);
  const lowest = f.peerListen ? 0 : 1;
  if (!m || !Number.isInteger(port) || port < lowest || port > 65535)
    throw bad(
      `advertise ${JSON.stringify(f.advertise)} must be host:port (or [v6]:port) with a port ${lowest}-65535`,
    );
  if (
    f.peerListen &&
    (!Number.isInteger(f.peerListen.port) || f.peerListen.port < 0 || f.peerListen.port > 65535)
  )
    throw bad(`peerListen port ${JSON.stringify(f.peerListen.port)} must be 0-65535`);
  if (m[1] === "0.0.0.0" || m[1] === "::")
    throw bad(`advertise ${JSON.stringify(f.advertise)} is a wildcard address: give one peers can dial`);
  return { ...f, timings: fleetTimings(f.timings) };
}
