/**
 * One client connection to the relay, from TCP accept to close: its
 * authentication (./authentication.ts), its forwards (./forwarding.ts), the
 * refusal of every other channel, and its lifetime (handshake timeout,
 * graceful close, the record when it ends).
 */
import type { EventEmitter } from "node:events";
import type net from "node:net";
import type { Connection } from "ssh2";
import { formatEndpoint } from "../shared/address.js";
import { boundText, RECORD_TEXT_MAX } from "../shared/bounded-text.js";
import type { Certificate } from "../shared/certificates/index.js";
import { OPEN_FAILURE, rejectChannelOpen } from "../ssh2/channel-open-failure.js";
import { poolPadding } from "../ssh2/padding-pool.js";
import { applyWindowPolicy } from "../ssh2/window.js";
import { ipBytes, normalizeIp } from "./address-match.js";
import { type Authenticated, type AuthHost, SessionAuthentication } from "./authentication.js";
import type { AuthorizedKey } from "./authorized-keys.js";
import type { Binding, ReleaseReason } from "./bindings.js";
import { ENROLL_SUBSYSTEM, RENEW_SUBSYSTEM, serveSubsystem } from "./enrollment/enrollment-channel.js";
import { certificateFields, type SessionInfo, type SessionRef } from "./events.js";
import { type Accept, type ForwardingHost, type Reject, SessionForwarding } from "./forwarding.js";
import type { KeyDecision } from "./policy.js";
import { type DirectTcpipInfo, SessionTunnels, type TunnelHost } from "./tunnels.js";

/** What a session needs from the relay it belongs to. */
export interface SessionHost extends AuthHost, ForwardingHost, TunnelHost {
  closed(session: RelaySession): void;
}

const NO_SHELL = "revtun relay: forwarding only, no shell or commands";
const NO_LOCAL = "revtun relay: forwarding only, local forwarding (-L, -D, -W) is not allowed";

/**
 * The unit per-source limits and penalties count by: an IPv4 address, or an
 * IPv6 /64 (one host is routinely given a whole /64, so per address would
 * let it open 2^64 "sources"; sshd's PerSourceNetBlockSize makes the same
 * knob available).
 */
export function sourceOf(ip: string): string {
  const b = ipBytes(ip);
  if (!b || b.length === 4) return ip;
  return `${Buffer.from(b.subarray(0, 8))
    .toString("hex")
    .replace(/(.{4})(?!$)/g, "$1:")}::/64`;
}

export class RelaySession {
  readonly ip: string;
  /** What per-source limits count by (sourceOf). */
  readonly source: string;
  readonly peer: string;
  fingerprint = "";
  key: AuthorizedKey | undefined;
  username = "";
  authenticated = false;
  /** The device name, for a session that logged in with a certificate this relay's CA signed. */
  certificateName: string | undefined;
  /** Enrollment channels opened on this connection (at most one). */
  private enrollChannels = 0;
  /** The client's SSH version line, as it sent it (the device inventory keeps it). */
  clientVersion: string | undefined;
  /** Set once the session is being closed; the reason reported when it is. */
  closing: string | undefined;
  readonly finished: Promise<void>;
  private conn: Connection | undefined;
  private keyBlob: Buffer | undefined;
  private accepted: Authenticated | undefined;
  private readonly auth: SessionAuthentication;
  private readonly forwarding: SessionForwarding;
  private readonly tunnels: SessionTunnels;
  private readonly timers = new Set<NodeJS.Timeout>();
  private lastError: string | undefined;
  private readonly openedAt = Date.now();
  private resolveFinished: () => void = () => {};
  private handshakeTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly id: number,
    readonly socket: net.Socket,
    private readonly host: SessionHost,
  ) {
    this.ip = normalizeIp(socket.remoteAddress ?? "");
    this.source = sourceOf(this.ip);
    this.peer = formatEndpoint({ kind: "tcp", host: this.ip, port: socket.remotePort ?? 0 });
    this.finished = new Promise((r) => {
      this.resolveFinished = r;
    });
    socket.on("error", (err) => {
      this.lastError ??= err.message;
    });
    socket.once("close", () => this.finish());
    this.auth = new SessionAuthentication(host, this);
    this.forwarding = new SessionForwarding(host, this);
    this.tunnels = new SessionTunnels(host, this, NO_LOCAL);
    const ms = host.options.handshakeTimeoutMs;
    if (ms > 0) this.handshakeTimer = this.timer(ms, () => this.close(`not authenticated within ${ms} ms`));
  }

  ref(): SessionRef {
    const cert = this.accepted?.certificate;
    return {
      sessionId: this.id,
      fingerprint: this.fingerprint,
      peer: this.peer,
      ...(cert ? certificateFields(cert) : {}),
    };
  }

  /** The user certificate this session authenticated with, if it did with one. */
  get certificate(): Certificate | undefined {
    return this.accepted?.certificate;
  }

  /** The login name exactly as the client sent it (username is bounded for records). */
  get loginName(): string {
    return this.accepted?.username ?? "";
  }

  info(): SessionInfo {
    return {
      ...this.ref(),
      keyComment: this.key?.comment ?? "",
      // A certificate session names the certificate type (sshd: ED25519-CERT), not its CA line's.
      keyType: this.certificate?.type ?? this.key?.type ?? "",
      username: this.username,
      ...(this.clientVersion !== undefined ? { clientVersion: this.clientVersion } : {}),
    };
  }

  /** The blob of the key this session authenticated with. */
  get publicKey(): Buffer | undefined {
    return this.keyBlob;
  }

  get connection(): Connection | undefined {
    return this.conn;
  }

  /** This session's bindings. */
  get bindings(): ReadonlySet<Binding> {
    return this.forwarding.bindings;
  }

  get forwardedCount(): number {
    return this.forwarding.openCount;
  }

  /** When the TCP connection was accepted (ms since the epoch), for the admin inventory. */
  get connectedAt(): number {
    return this.openedAt;
  }

  /** Bytes so far on this session's open forwarded connections, for the admin inventory. */
  liveBytes(): { bytesIn: number; bytesOut: number } {
    return this.forwarding.liveBytes();
  }

  /** A connection arrived on one of this session's ports (bindings.ts calls this). */
  onConnection(binding: Binding, socket: net.Socket): void {
    this.forwarding.onConnection(binding, socket);
  }

  /** Called by the relay when a binding of this session is released. */
  forget(b: Binding, reason: ReleaseReason): void {
    this.forwarding.forget(b, reason);
  }

  /** After an authorized_keys or revoked keys reload: the key's current line, or why it is gone. */
  recheck(decision: KeyDecision): void {
    if (!this.authenticated || this.closing) return;
    if (!decision.ok) {
      this.close(`${this.certificate ? "certificate" : "key"} no longer authorized (${decision.reason})`);
      return;
    }
    this.key = decision.key;
    this.forwarding.recheck(decision.key);
  }

  /** Takes over the ssh2 connection ssh2 built on this session's socket. */
  attach(conn: Connection): void {
    this.conn = conn;
    // Every ssh2 error (protocol garbage, resets, keepalive timeout) lands
    // here; without a listener it would be thrown and crash the relay.
    conn.on("error", (err: Error & { level?: string }) => {
      if (err.level === "client-timeout") {
        this.close("keepalive timeout: no answer from the client");
        return;
      }
      // A client's DISCONNECT description arrives as err.message.
      const error = boundText(err.message, RECORD_TEXT_MAX);
      this.lastError ??= error;
      this.host.emit("session-error", {
        peer: this.peer,
        ...(this.fingerprint ? { fingerprint: this.fingerprint } : {}),
        error,
      });
    });
    conn.on("authentication", (ctx) => {
      if (this.closing) return;
      this.username = boundText(ctx.username);
      this.auth.handle(ctx);
    });
    poolPadding(conn);
    applyWindowPolicy(conn, { onViolation: (reason) => this.close(reason) });
    conn.on("ready", () => this.ready());
    conn.on("session", (accept, reject) => this.session(accept, reject));
    // direct-tcpip reaches tunnel names only, with permitopen (tunnels.ts).
    conn.on("tcpip", (accept, reject, info) =>
      this.tunnels.open(accept, reject, info as DirectTcpipInfo | undefined),
    );
    conn.on("openssh.streamlocal", (_accept, reject) =>
      this.refuseChannel(reject, "direct-streamlocal@openssh.com", NO_LOCAL),
    );
    // ssh2 types 'request' as overloads per request name; one handler takes them all.
    (conn as EventEmitter).on("request", (accept: Accept, reject: Reject, name: string, info: unknown) =>
      this.forwarding.request(accept, reject, name, info),
    );
    if (this.closing) conn.end();
  }

  private ready(): void {
    const accepted = this.auth.accepted;
    if (this.closing || !accepted) return;
    this.accepted = accepted;
    this.key = accepted.key;
    this.keyBlob = accepted.blob;
    this.fingerprint = accepted.fingerprint;
    this.certificateName = accepted.enrolledName;
    this.authenticated = true;
    if (this.handshakeTimer) this.clear(this.handshakeTimer);
    this.host.emit("session-opened", this.info());
  }

  /**
   * A session channel is only ever enrollment's (docs/enrollment.md): to
   * enroll, for a session that logged in as revtun-enroll, or to renew, for
   * one that logged in with a certificate this relay signed.
   */
  private session(accept: () => unknown, reject: () => void): void {
    const e = this.host.enrollment;
    const name = this.certificateName;
    const enrolling = this.auth.enrolling && !this.authenticated;
    if (!e || (!enrolling && !name) || this.closing) {
      this.refuseChannel(reject, "session", NO_SHELL);
      return;
    }
    // One token try per connection: more would let one handshake window try tokens in parallel.
    if (enrolling && this.enrollChannels++ > 0) {
      this.refuseChannel(reject, "session", "revtun relay: one enrollment per connection");
      return;
    }
    const keyBlob = this.key?.blob;
    const answer = enrolling
      ? (line: string) => e.enroll(line, this.peer)
      : (_line: string) => e.renew(name ?? "", keyBlob ?? Buffer.alloc(0), this.peer);
    const mean = this.host.options.authFailureDelayMs;
    serveSubsystem(
      accept as Parameters<typeof serveSubsystem>[0],
      enrolling ? ENROLL_SUBSYSTEM : RENEW_SUBSYSTEM,
      answer,
      (ms, fn) => this.timer(ms, fn),
      () => mean * (0.6 + Math.random() * 0.8) + this.host.penalize(this.source),
      // An enrollment connection has done its one thing; a renewing session goes on.
      () => {
        if (enrolling) this.timer(1_000, () => this.close("enrollment answered"));
      },
    );
  }

  // ---- refused channels --------------------------------------------------------

  /** Refuses a direct-tcpip open administratively (tunnels.ts). */
  refuse(reject: () => void, description: string): void {
    this.refuseChannel(reject, "direct-tcpip", description);
  }

  private refuseChannel(reject: () => void, type: string, description: string): void {
    if (this.conn)
      rejectChannelOpen(this.conn, reject, OPEN_FAILURE.ADMINISTRATIVELY_PROHIBITED, description);
    else reject();
    this.host.metrics.channelRefusals.inc({ type });
    this.host.emit("channel-refused", { ...this.ref(), type, reason: description });
  }

  // ---- lifetime -------------------------------------------------------------

  /**
   * Ends the session: its ports stop listening at once, the client gets a
   * DISCONNECT, and the socket is destroyed if the client does not close its
   * side within the grace period (a stopped or vanished peer never will).
   */
  close(reason: string): void {
    if (this.closing || this.socket.destroyed) return;
    this.closing = reason;
    this.forwarding.releaseAll();
    this.tunnels.closeAll();
    if (!this.conn) {
      this.socket.destroy();
      return;
    }
    this.conn.end();
    this.timer(this.host.options.closeGraceMs, () => this.socket.destroy());
  }

  /** Destroys the socket now (relay shutdown after the grace period). */
  destroy(reason: string): void {
    this.closing ??= reason;
    this.socket.destroy();
  }

  private finish(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.forwarding.releaseAll();
    this.tunnels.closeAll();
    const reason =
      this.closing ?? (this.lastError ? `connection lost: ${this.lastError}` : "client disconnected");
    this.host.closed(this);
    if (this.authenticated) {
      this.host.emit("session-closed", { ...this.info(), reason, durationMs: Date.now() - this.openedAt });
    } else {
      this.host.emit("handshake-ended", { peer: this.peer, reason });
    }
    this.resolveFinished();
  }

  /** A timer cleared when the session ends. */
  timer(ms: number, fn: () => void): NodeJS.Timeout {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
    return t;
  }

  clear(t: NodeJS.Timeout): void {
    clearTimeout(t);
    this.timers.delete(t);
  }
}
