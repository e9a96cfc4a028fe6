/**
 * The relay's events: the only way it reports anything (it never prints).
 * Payloads are plain JSON-able values so a host can log them as they are;
 * `describeRelayEvent` gives each a level and one human sentence.
 */
import { formatBindAddress as hostPort } from "../shared/address.js";
import { quote } from "../shared/bounded-text.js";
import type { Certificate } from "../shared/certificates/index.js";
import { fingerprintSha256 } from "../shared/keys.js";
import type { EnrollmentRecord } from "./enrollment/enrollment.js";

/**
 * A user certificate as records name it, beside the key's fingerprint
 * (which is the certified key's): flat fields, so the relay's bounding of
 * every record reaches them (the key id is the CA's text, still bounded).
 */
export interface CertificateFields {
  certKeyId?: string;
  /** Decimal: serials are 64-bit. */
  certSerial?: string;
  certPrincipals?: string[];
  /** The CA's fingerprint. */
  certCa?: string;
}

/**
 * Principals a record lists at most: a refused certificate is unverified
 * peer input, and 256 principals of 256 characters would make one
 * rate-limited record 64 KiB.
 */
const RECORD_PRINCIPALS = 16;

export function certificateFields(cert: Certificate): CertificateFields {
  const p = cert.principals;
  return {
    certKeyId: cert.keyId,
    certSerial: String(cert.serial),
    certPrincipals:
      p.length <= RECORD_PRINCIPALS
        ? p
        : [...p.slice(0, RECORD_PRINCIPALS), `…(${p.length - RECORD_PRINCIPALS} more)`],
    certCa: fingerprintSha256(cert.signatureKey),
  };
}

/** Who a record is about: every refusal names the key (when known) and the peer. */
export interface SessionRef extends CertificateFields {
  sessionId: number;
  fingerprint: string;
  /** `ip:port` of the SSH client. */
  peer: string;
}

export interface SessionInfo extends SessionRef {
  keyComment: string;
  keyType: string;
  username: string;
  /** The client's SSH version line (`SSH-2.0-OpenSSH_9.2p1 Debian-2`), bounded like every record string. */
  clientVersion?: string;
}

export interface ForwardInfo extends SessionRef {
  /** Bind address exactly as the client sent it ("" is all interfaces, "localhost" both loopbacks). */
  address: string;
  /** Port as asked; 0 = allocate. */
  requestedPort: number;
  /** Port actually bound. */
  port: number;
  /** Sockets listening, `addr:port`. */
  listening: string[];
}

export interface RelayEvents {
  /** Enrollment (docs/enrollment.md): never carries a token. */
  enrollment: [EnrollmentRecord];
  /** `fleetAddress`: where fleet peers are told to dial this relay, when in a fleet. */
  listening: [{ host: string; port: number; fleetAddress?: string }];
  closed: [];
  "keys-loaded": [{ file: string; keys: number; problems: number; reason: string }];
  "keys-problem": [{ file: string; line: number; message: string }];
  "keys-option-ignored": [{ file: string; line: number; fingerprint: string; options: string[] }];
  "keys-reload-failed": [{ file: string; error: string }];
  /** The revoked keys file (--revoked-keys) was read: a KRL or a key list, and how many entries. */
  "revoked-keys-loaded": [{ file: string; kind: "krl" | "keys"; entries: number; reason: string }];
  /** It could not be read or parsed: the revocations loaded before stay in force. */
  "revoked-keys-reload-failed": [{ file: string; error: string }];
  /**
   * A TCP connection refused before SSH began (unauthenticated limits).
   * This, handshake-ended, auth-refused and session-error are reported at
   * most 20 times a second each; `suppressed` counts those left out since the last one.
   */
  "connection-refused": [{ peer: string; reason: string; suppressed?: number }];
  /** An unauthenticated connection ended: handshake timeout, too many failures, client gave up. */
  "handshake-ended": [{ peer: string; reason: string; suppressed?: number }];
  "auth-refused": [
    CertificateFields & {
      peer: string;
      fingerprint?: string;
      keyType?: string;
      method: string;
      username: string;
      reason: string;
      suppressed?: number;
    },
  ];
  "session-opened": [SessionInfo];
  "session-closed": [SessionInfo & { reason: string; durationMs: number }];
  /** Rate-limited as connection-refused is. */
  "session-error": [{ peer: string; fingerprint?: string; error: string; suppressed?: number }];
  "forward-bound": [ForwardInfo];
  "forward-refused": [SessionRef & { address: string; port: number; reason: string }];
  "forward-released": [ForwardInfo & { reason: string }];
  "forward-taken-over": [ForwardInfo & { previousSessionId: number; previousPeer: string }];
  "channel-refused": [SessionRef & { type: string; reason: string }];
  "forwarded-open": [SessionRef & { address: string; port: number; origin: string }];
  "forwarded-closed": [
    SessionRef & {
      address: string;
      port: number;
      origin: string;
      bytesIn: number;
      bytesOut: number;
      error?: string;
    },
  ];
  "forwarded-failed": [SessionRef & { address: string; port: number; origin: string; reason: string }];
  /** An operator asked for a tunnel name nobody holds. */
  "tunnel-refused": [SessionRef & { name: string; port: number; reason: string }];
  /**
   * The audit record of one operator connection to a tunnel name (one per
   * permitted direct-tcpip to a name): who, to what, which device session
   * carried it, bytes each way, how long and how it ended.
   */
  "tunnel-connection-closed": [TunnelRecord];
  /** The fleet's Redis stopped answering: names held here are still served, others' are not reachable. */
  "fleet-degraded": [{ relayId: string; reason: string }];
  /** The fleet's Redis answers again; this relay's names were re-announced. */
  "fleet-restored": [{ relayId: string; downMs: number; reannounced: number }];
  /** A Redis password was given and the fleet's Redis needs none: it is not sent. */
  "fleet-password-unused": [{ relayId: string; redis: string }];
}

export interface TunnelRecord extends SessionRef {
  /** The operator's key comment. */
  keyComment: string;
  name: string;
  port: number;
  /** The device session that carried it (absent when none did). */
  deviceSessionId?: number;
  deviceFingerprint?: string;
  /** The fleet peer relay that carried it, when the device is held there (fleet/route.ts). */
  viaRelay?: string;
  /** Bytes from the operator to the device, and back. */
  bytesToDevice: number;
  bytesFromDevice: number;
  durationMs: number;
  /** "closed", "no tunnel", "open failed: ...", or the error text. */
  ended: string;
}

export type RelayEventName = keyof RelayEvents;

export type EventLevel = "debug" | "info" | "warn" | "error";
export interface DescribedEvent {
  level: EventLevel;
  msg: string;
}

function who(r: { fingerprint?: string; peer: string } & CertificateFields): string {
  const cert =
    r.certKeyId !== undefined
      ? ` (certificate ${quote(r.certKeyId)} serial ${r.certSerial}, principals ${(r.certPrincipals ?? []).map(quote).join(",") || "none"}, CA ${r.certCa})`
      : "";
  return r.fingerprint ? `${r.fingerprint}${cert} from ${r.peer}` : r.peer;
}

/** The tail of a rate-limited record: how many like it were left out before it. */
function notLogged(x: { suppressed?: number }): string {
  return x.suppressed ? ` (and ${x.suppressed} more like it not logged)` : "";
}

const DESCRIBE: { [K in RelayEventName]: (...args: RelayEvents[K]) => DescribedEvent } = {
  "tunnel-refused": (x) => ({
    level: "warn",
    msg: `refused tunnel ${x.name}:${x.port} for ${who(x)}: ${x.reason}`,
  }),
  "tunnel-connection-closed": (x) => ({
    level: "info",
    msg:
      `tunnel ${x.name}:${x.port} for ${who(x)}${x.keyComment ? ` (${x.keyComment})` : ""}` +
      (x.deviceFingerprint ? ` via session ${x.deviceSessionId} ${x.deviceFingerprint}` : "") +
      (x.viaRelay ? ` via relay ${x.viaRelay}` : "") +
      `: ${x.ended}, ${x.bytesToDevice} bytes to the device, ${x.bytesFromDevice} back, ${x.durationMs} ms`,
  }),
  "fleet-degraded": (x) => ({
    level: "warn",
    msg: `fleet registry unavailable (${x.reason}): serving this relay's own tunnels only`,
  }),
  "fleet-password-unused": (x) => ({
    level: "warn",
    msg: `fleet Redis ${x.redis} requires no password: the one given is not used (set requirepass on it, or drop the password)`,
  }),
  "fleet-restored": (x) => ({
    level: "info",
    msg: `fleet registry back after ${x.downMs} ms: ${x.reannounced} tunnel name(s) re-announced as ${x.relayId}`,
  }),
  listening: (x) => ({
    level: "info",
    msg: `relay listening on ${hostPort(x.host, x.port)}${x.fleetAddress ? `; fleet peers dial ${x.fleetAddress}` : ""}`,
  }),
  closed: () => ({ level: "info", msg: "relay closed" }),
  enrollment: (x) => ({
    level: x.action === "refused" || x.action === "renewal-refused" ? "warn" : "info",
    msg: `enrollment: ${x.action} ${x.name}${x.peer ? ` from ${x.peer}` : ""}${x.fingerprint ? ` key ${x.fingerprint}` : ""}${x.serial ? ` serial ${x.serial}` : ""}${x.reason ? `: ${x.reason}` : ""}`,
  }),
  "keys-loaded": (x) => ({
    level: "info",
    msg: `loaded ${x.keys} key(s) from ${x.file}${x.problems ? `, ${x.problems} line(s) skipped` : ""} (${x.reason})`,
  }),
  "keys-problem": (x) => ({ level: "warn", msg: `${x.file}:${x.line}: ${x.message}; line skipped` }),
  "keys-option-ignored": (x) => ({
    level: "debug",
    msg: `${x.file}:${x.line}: ignoring option(s) ${x.options.join(", ")}`,
  }),
  "keys-reload-failed": (x) => ({
    level: "error",
    msg: `cannot reload ${x.file}, keeping the keys loaded before: ${x.error}`,
  }),
  "revoked-keys-loaded": (x) => ({
    level: "info",
    msg: `loaded ${x.entries} revocation(s) from ${x.kind === "krl" ? "KRL" : "key list"} ${x.file} (${x.reason})`,
  }),
  "revoked-keys-reload-failed": (x) => ({
    level: "error",
    msg: `cannot reload revoked keys ${x.file}, keeping the revocations loaded before: ${x.error}`,
  }),
  "connection-refused": (x) => ({
    level: "warn",
    msg: `refused connection from ${x.peer}: ${x.reason}${notLogged(x)}`,
  }),
  "handshake-ended": (x) => ({
    level: "info",
    msg: `unauthenticated connection from ${x.peer} ended: ${x.reason}${notLogged(x)}`,
  }),
  "auth-refused": (x) => ({
    level: "warn",
    // A certificate's refusal names it (key id, serial, CA) itself: not twice in one line.
    msg: `refused ${x.method} authentication for ${x.reason.startsWith("certificate ") ? who({ peer: x.peer, ...(x.fingerprint ? { fingerprint: x.fingerprint } : {}) }) : who(x)}: ${x.reason}${notLogged(x)}`,
  }),
  "session-opened": (x) => ({
    level: "info",
    msg: `session ${x.sessionId} opened: ${who(x)}${x.keyComment ? ` (${x.keyComment})` : ""}`,
  }),
  "session-closed": (x) => ({ level: "info", msg: `session ${x.sessionId} closed: ${who(x)}: ${x.reason}` }),
  "session-error": (x) => ({ level: "debug", msg: `SSH error from ${who(x)}: ${x.error}${notLogged(x)}` }),
  "forward-bound": (x) => ({
    level: "info",
    // A tunnel name listens nowhere (listening is empty): it is held.
    msg: `session ${x.sessionId} ${x.listening.length === 0 && x.address !== "" ? "holds tunnel" : "listening on"} ${hostPort(x.address, x.port)} for ${who(x)}`,
  }),
  "forward-refused": (x) => ({
    level: "warn",
    msg: `refused forward ${hostPort(x.address, x.port)} for ${who(x)}: ${x.reason}`,
  }),
  "forward-released": (x) => ({
    level: "info",
    msg: `session ${x.sessionId} released ${hostPort(x.address, x.port)}: ${x.reason}`,
  }),
  "forward-taken-over": (x) => ({
    level: "warn",
    msg: `session ${x.sessionId} (${who(x)}) took over ${hostPort(x.address, x.port)} from session ${x.previousSessionId} (${x.previousPeer}) of the same key`,
  }),
  "channel-refused": (x) => ({ level: "warn", msg: `refused ${x.type} channel for ${who(x)}: ${x.reason}` }),
  "forwarded-open": (x) => ({
    level: "debug",
    msg: `${x.origin} → ${hostPort(x.address, x.port)} → session ${x.sessionId}`,
  }),
  "forwarded-closed": (x) => ({
    level: "debug",
    msg: `${x.origin} → ${hostPort(x.address, x.port)} closed: ${x.bytesIn} B in, ${x.bytesOut} B out${x.error ? ` (${x.error})` : ""}`,
  }),
  "forwarded-failed": (x) => ({
    level: "warn",
    msg: `${x.origin} → ${hostPort(x.address, x.port)}: no channel from ${who(x)}: ${x.reason}`,
  }),
};

export const RELAY_EVENT_NAMES = Object.keys(DESCRIBE) as RelayEventName[];

/** A level and one sentence for a relay event, for hosts that log them. */
export function describeRelayEvent<K extends RelayEventName>(
  name: K,
  ...args: RelayEvents[K]
): DescribedEvent {
  const describe = DESCRIBE[name] as (...a: RelayEvents[K]) => DescribedEvent;
  return describe(...args);
}
