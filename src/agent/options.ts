/**
 * The agent library's options: every default in one object, every duration
 * in milliseconds, validated once with messages that name the option, what
 * was expected and what was received (execa's style).
 */
import type { Duplex } from "node:stream";
import { describe, RevtunError } from "../shared/errors.js";
import type { ForwardSpec } from "./forward-spec.js";
import type { StrictHostKeyChecking } from "./known-hosts.js";

/** One jump host (-J, ProxyJump), already resolved: where to connect and as whom. */
export interface JumpHost {
  host: string;
  port: number;
  username: string;
}

export interface HostKeyPromptInfo {
  host: string;
  port: number;
  keyType: string;
  fingerprint: string;
}

export interface TunnelOptions {
  host: string;
  /** Default 22. */
  port?: number;
  username: string;
  /** Identity files (-i, IdentityFile); none means ssh's defaults in ~/.ssh. */
  identityFiles?: string[];
  /**
   * User certificate files (CertificateFile), offered with the identity whose
   * key each certifies. None means each identity's `-cert.pub` beside it, as ssh.
   */
  certificateFiles?: string[];
  /** Offer only the identity files, not every key the agent holds. Default false. */
  identitiesOnly?: boolean;
  /** ssh-agent socket path. */
  agent?: string | undefined;
  passphrase?: string | undefined;
  password?: string | undefined;
  /**
   * Authentication methods to try, in order (PreferredAuthentications).
   * Default: agent and keys, keyboard-interactive, password, as ssh.
   */
  authMethods?: readonly AuthMethod[];
  /** known_hosts files; the first is where new keys are recorded. Default none (every key unknown). */
  knownHostsFiles?: string[];
  /** Default "ask" (which refuses unknown keys unless `confirmHostKey` is given). */
  strictHostKeyChecking?: StrictHostKeyChecking;
  hashKnownHosts?: boolean;
  hostKeyAlias?: string | undefined;
  /** Asked when the host key is unknown and the policy is "ask". */
  confirmHostKey?: (info: HostKeyPromptInfo) => Promise<boolean>;
  /** TCP connect plus SSH handshake (ConnectTimeout). Default 15 000 ms. */
  connectTimeoutMs?: number;
  ciphers?: string[] | undefined;
  /** Stop when the server refuses a forward, instead of retrying it. Default false. */
  exitOnForwardFailure?: boolean;
  /** Keepalive interval when the server is silent (ServerAliveInterval). Default 15 000 ms; 0 disables. */
  serverAliveIntervalMs?: number;
  /** Unanswered keepalives before the session counts as dead. Default 3. */
  serverAliveCountMax?: number;
  /** TCP keepalive on the connection to the server. Default true. */
  tcpKeepAlive?: boolean;
  addressFamily?: "any" | "inet" | "inet6";
  forwards: ForwardSpec[];
  /** Ceiling of the reconnect delay. Default 30 000 ms. */
  maxBackoffMs?: number;
  /** A session up this long resets the backoff. Default 10 000 ms. */
  stableAfterMs?: number;
  /** Connect timeout toward a forward's local target. Default 10 000 ms. */
  targetConnectTimeoutMs?: number;
  /** Remove a stale unix socket on the server before listening (StreamLocalBindUnlink). Default false. */
  streamLocalBindUnlink?: boolean;
  /** Home directory for ~ and default identities. */
  home?: string;
  /** Jump hosts to reach the server through, first hop first. */
  jumpHosts?: JumpHost[];
  /** Opens the transport for each attempt instead of a TCP connection (or the jump hosts). */
  dial?: () => Promise<Duplex>;
}

export type AuthMethod = "agent" | "publickey" | "keyboard-interactive" | "password";
export const AUTH_METHODS: readonly AuthMethod[] = ["agent", "publickey", "keyboard-interactive", "password"];

/** Every default of TunnelOptions, in one place. */
export const DEFAULT_TUNNEL_OPTIONS = {
  port: 22,
  identitiesOnly: false,
  authMethods: AUTH_METHODS,
  strictHostKeyChecking: "ask",
  hashKnownHosts: false,
  connectTimeoutMs: 15_000,
  exitOnForwardFailure: false,
  serverAliveIntervalMs: 15_000,
  serverAliveCountMax: 3,
  tcpKeepAlive: true,
  addressFamily: "any",
  // The first retry within 250 ms (backoff base, agent/backoff.ts), doubling up to this.
  maxBackoffMs: 30_000,
  stableAfterMs: 10_000,
  targetConnectTimeoutMs: 10_000,
  streamLocalBindUnlink: false,
} as const satisfies Partial<TunnelOptions>;

export type ResolvedTunnelOptions = TunnelOptions &
  Required<Pick<TunnelOptions, keyof typeof DEFAULT_TUNNEL_OPTIONS>>;

function expected(name: string, what: string, value: unknown): RevtunError {
  return new RevtunError("USAGE", `Expected the \`${name}\` option to be ${what}, got ${describe(value)}`);
}

const isInt = (v: unknown, min: number, max: number) =>
  typeof v === "number" && Number.isInteger(v) && v >= min && v <= max;

const DURATIONS = [
  "connectTimeoutMs",
  "serverAliveIntervalMs",
  "maxBackoffMs",
  "stableAfterMs",
  "targetConnectTimeoutMs",
] as const;

/** Fills in the defaults and checks every option; throws RevtunError("USAGE") naming the first bad one. */
export function resolveOptions(o: TunnelOptions): ResolvedTunnelOptions {
  if (typeof o !== "object" || o === null) throw expected("options", "an object", o);
  const r = { ...DEFAULT_TUNNEL_OPTIONS, ...withoutUndefined(o) } as ResolvedTunnelOptions;
  if (typeof r.host !== "string" || r.host === "") throw expected("host", "a non-empty string", r.host);
  if (typeof r.username !== "string" || r.username === "")
    throw expected("username", "a non-empty string", r.username);
  if (!isInt(r.port, 1, 65535)) throw expected("port", "an integer from 1 to 65535", r.port);
  if (!Array.isArray(r.forwards) || r.forwards.length === 0)
    throw expected("forwards", "a non-empty array of forward specs (parseRemoteForward)", r.forwards);
  for (const name of DURATIONS) {
    const v = r[name];
    const min = name === "maxBackoffMs" || name === "connectTimeoutMs" ? 1 : 0;
    if (!isInt(v, min, 2 ** 31 - 1))
      throw expected(name, `a whole number of milliseconds${min ? " above 0" : " (0 or more)"}`, v);
  }
  if (!isInt(r.serverAliveCountMax, 1, 1_000))
    throw expected("serverAliveCountMax", "an integer from 1 to 1000", r.serverAliveCountMax);
  if (!["yes", "no", "ask", "accept-new"].includes(r.strictHostKeyChecking))
    throw expected("strictHostKeyChecking", "yes, no, ask or accept-new", r.strictHostKeyChecking);
  if (!["any", "inet", "inet6"].includes(r.addressFamily))
    throw expected("addressFamily", "any, inet or inet6", r.addressFamily);
  if (!Array.isArray(r.authMethods) || r.authMethods.some((m) => !AUTH_METHODS.includes(m)))
    throw expected("authMethods", `a list of ${AUTH_METHODS.join(", ")}`, r.authMethods);
  for (const name of ["identityFiles", "certificateFiles", "knownHostsFiles"] as const) {
    const v = r[name];
    if (v !== undefined && (!Array.isArray(v) || v.some((f) => typeof f !== "string")))
      throw expected(name, "an array of file paths", v);
  }
  if (r.jumpHosts !== undefined && !Array.isArray(r.jumpHosts))
    throw expected("jumpHosts", "an array of { host, port, username }", r.jumpHosts);
  for (const j of r.jumpHosts ?? []) {
    if (typeof j?.host !== "string" || !isInt(j.port, 1, 65535) || typeof j.username !== "string")
      throw expected("jumpHosts", "an array of { host, port, username }", j);
  }
  for (const name of ["confirmHostKey", "dial"] as const) {
    const v = r[name];
    if (v !== undefined && typeof v !== "function") throw expected(name, "a function", v);
  }
  return r;
}

function withoutUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
