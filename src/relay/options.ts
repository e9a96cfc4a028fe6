/**
 * Relay options and their defaults. Limits exist so one misbehaving or
 * hostile peer cannot exhaust the relay: each is per the thing it protects.
 */
import type { Registry } from "prom-client";
import { RevtunError } from "../shared/errors.js";

export interface RelayLimits {
  /** TCP connections that have not authenticated yet, relay-wide (sshd's MaxStartups). */
  maxUnauthenticated: number;
  /** Concurrent authenticated sessions per key. */
  maxSessionsPerKey: number;
  /** Remote forwards (tcpip-forward) per session. */
  maxForwardsPerSession: number;
  /** Forwarded connections (forwarded-tcpip channels) open per session. */
  maxChannelsPerSession: number;
  /** Failed authentication attempts before the connection is dropped (sshd's MaxAuthTries). */
  maxAuthAttempts: number;
}

export interface RelayOptions {
  /** Where SSH clients connect. No host: all interfaces (IPv6 and IPv4 when available). */
  listen: { host?: string; port: number };
  /** Private host key, OpenSSH or PEM text (see keys.ts loadOrCreateHostKey). */
  hostKey: string | Buffer;
  authorizedKeysFile: string;
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
  /** How long an agent may take to accept a forwarded-tcpip channel. Default 15 s. */
  channelOpenTimeoutMs?: number;
  /** On close(), how long sessions get to say goodbye before their sockets are destroyed. Default 2 s. */
  closeGraceMs?: number;
  /** Registry for the relay's metrics; default a new one the relay owns. */
  registry?: Registry;
  /** Clock, for expiry-time; tests replace it. */
  now?: () => Date;
}

export const DEFAULT_LIMITS: RelayLimits = {
  maxUnauthenticated: 64,
  maxSessionsPerKey: 16,
  maxForwardsPerSession: 32,
  maxChannelsPerSession: 256,
  maxAuthAttempts: 6,
};

export interface ResolvedRelayOptions {
  listen: { host?: string; port: number };
  hostKey: string | Buffer;
  authorizedKeysFile: string;
  gatewayPorts: boolean;
  watchAuthorizedKeys: boolean;
  limits: RelayLimits;
  handshakeTimeoutMs: number;
  keepaliveIntervalMs: number;
  keepaliveCountMax: number;
  authFailureDelayMs: number;
  channelOpenTimeoutMs: number;
  closeGraceMs: number;
  now: () => Date;
}

function nonNegative(name: string, v: number): number {
  if (!Number.isFinite(v) || v < 0)
    throw new RevtunError("USAGE", `relay option ${name} must be >= 0, got ${v}`);
  return v;
}

export function resolveRelayOptions(o: RelayOptions): ResolvedRelayOptions {
  const limits = { ...DEFAULT_LIMITS, ...o.limits };
  for (const [k, v] of Object.entries(limits)) {
    if (!Number.isInteger(v) || v < 1)
      throw new RevtunError("USAGE", `relay limit ${k} must be an integer >= 1, got ${v}`);
  }
  if (!Number.isInteger(o.listen.port) || o.listen.port < 0 || o.listen.port > 65535) {
    throw new RevtunError("USAGE", `relay listen port must be 0-65535, got ${o.listen.port}`);
  }
  return {
    listen: o.listen,
    hostKey: o.hostKey,
    authorizedKeysFile: o.authorizedKeysFile,
    gatewayPorts: o.gatewayPorts ?? false,
    watchAuthorizedKeys: o.watchAuthorizedKeys ?? true,
    limits,
    handshakeTimeoutMs: nonNegative("handshakeTimeoutMs", o.handshakeTimeoutMs ?? 20_000),
    keepaliveIntervalMs: nonNegative("keepaliveIntervalMs", o.keepaliveIntervalMs ?? 15_000),
    keepaliveCountMax: nonNegative("keepaliveCountMax", o.keepaliveCountMax ?? 3),
    authFailureDelayMs: nonNegative("authFailureDelayMs", o.authFailureDelayMs ?? 500),
    channelOpenTimeoutMs: nonNegative("channelOpenTimeoutMs", o.channelOpenTimeoutMs ?? 15_000),
    closeGraceMs: nonNegative("closeGraceMs", o.closeGraceMs ?? 2_000),
    now: o.now ?? (() => new Date()),
  };
}
