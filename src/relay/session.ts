/**
 * One client connection to the relay, from TCP accept to close: public-key
 * authentication, the remote-forward global requests (RFC 4254 7.1), the
 * forwarded-tcpip channels it receives (RFC 4254 7.2), and refusal of
 * everything else.
 */
import type { EventEmitter } from "node:events";
import type net from "node:net";
import ssh2, { type AuthContext, type Connection, type PublicKeyAuthContext, type ServerChannel } from "ssh2";
import { formatEndpoint, splice } from "../forward.js";
import { fingerprintSha256, keyTypeOf } from "../keys.js";
import { OPEN_FAILURE, poolPadding, rejectChannelOpen } from "../ssh2-internals.js";
import type { AuthorizedKey } from "./authorized-keys.js";
import type { Binding, BindingOwner, BindOutcome, ReleaseReason } from "./bindings.js";
import type { ForwardInfo, RelayEvents, SessionInfo, SessionRef } from "./events.js";
import type { RelayMetrics } from "./metrics.js";
import type { ResolvedRelayOptions } from "./options.js";
import { normalizeIp } from "./patterns.js";
import {
  algorithmFitsKey,
  type BindTarget,
  checkListen,
  type KeyDecision,
  resolveBindAddress,
} from "./policy.js";

const { utils } = ssh2;

/** What a session needs from the relay it belongs to. */
export interface SessionHost {
  readonly options: ResolvedRelayOptions;
  readonly metrics: RelayMetrics;
  authorize(blob: Buffer, peerIp: string): KeyDecision;
  sessionsForKey(fingerprint: string): number;
  bind(session: RelaySession, target: BindTarget, port: number): Promise<BindOutcome>;
  release(binding: Binding, reason: ReleaseReason): void;
  closed(session: RelaySession): void;
  emit<K extends keyof RelayEvents>(event: K, ...args: RelayEvents[K]): boolean;
}

const NO_SHELL = "revtun relay: forwarding only, no shell or commands";
const NO_LOCAL = "revtun relay: forwarding only, local forwarding (-L, -D, -W) is not allowed";

export function forwardInfo(b: Binding, s: RelaySession): ForwardInfo {
  return {
    ...s.ref(),
    address: b.target.requested,
    requestedPort: b.requestedPort,
    port: b.port,
    listening: b.listening,
  };
}

export class RelaySession implements BindingOwner {
  readonly ip: string;
  readonly peer: string;
  fingerprint = "";
  key: AuthorizedKey | undefined;
  username = "";
  authenticated = false;
  /** Set once the session is being closed; the reason reported when it is. */
  closing: string | undefined;
  readonly bindings = new Set<Binding>();
  readonly finished: Promise<void>;
  private conn: Connection | undefined;
  private keyBlob: Buffer | undefined;
  private pendingForwards = 0;
  private readonly forwarded = new Set<net.Socket>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private authFailures = 0;
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
    this.peer = formatEndpoint({ kind: "tcp", host: this.ip, port: socket.remotePort ?? 0 });
    this.finished = new Promise((r) => {
      this.resolveFinished = r;
    });
    socket.on("error", (err) => {
      this.lastError ??= err.message;
    });
    socket.once("close", () => this.finish());
    const ms = host.options.handshakeTimeoutMs;
    if (ms > 0) this.handshakeTimer = this.timer(ms, () => this.close(`not authenticated within ${ms} ms`));
  }

  ref(): SessionRef {
    return { sessionId: this.id, fingerprint: this.fingerprint, peer: this.peer };
  }

  info(): SessionInfo {
    return {
      ...this.ref(),
      keyComment: this.key?.comment ?? "",
      keyType: this.key?.type ?? "",
      username: this.username,
    };
  }

  /** The blob of the key this session authenticated with. */
  get publicKey(): Buffer | undefined {
    return this.keyBlob;
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
      this.lastError ??= err.message;
      this.host.emit("session-error", {
        peer: this.peer,
        ...(this.fingerprint ? { fingerprint: this.fingerprint } : {}),
        error: err.message,
      });
    });
    conn.on("authentication", (ctx) => this.authenticate(ctx));
    poolPadding(conn);
    conn.on("ready", () => this.ready());
    conn.on("session", (_accept, reject) => this.refuseChannel(reject, "session", NO_SHELL));
    conn.on("tcpip", (_accept, reject) => this.refuseChannel(reject, "direct-tcpip", NO_LOCAL));
    conn.on("openssh.streamlocal", (_accept, reject) =>
      this.refuseChannel(reject, "direct-streamlocal@openssh.com", NO_LOCAL),
    );
    // ssh2 types 'request' as overloads per request name; one handler takes them all.
    (conn as EventEmitter).on("request", (accept: Accept, reject: Reject, name: string, info: unknown) =>
      this.globalRequest(accept, reject, name, info),
    );
    if (this.closing) conn.end();
  }

  // ---- authentication (RFC 4252) --------------------------------------------

  private authenticate(ctx: AuthContext): void {
    if (this.closing) return;
    this.username = ctx.username;
    if (ctx.method === "none") {
      // The probe every client starts with; answering it lists the methods.
      ctx.reject(["publickey"]);
      return;
    }
    if (ctx.method !== "publickey") {
      this.refuseAuth(ctx, `${ctx.method} authentication is not offered`);
      return;
    }
    this.publicKeyAuth(ctx);
  }

  private publicKeyAuth(ctx: PublicKeyAuthContext): void {
    const blob = ctx.key.data;
    const fingerprint = fingerprintSha256(blob);
    const decision = this.host.authorize(blob, this.ip);
    if (!decision.ok) {
      this.refuseAuth(ctx, decision.reason, fingerprint);
      return;
    }
    if (!algorithmFitsKey(ctx.key.algo, decision.key.type)) {
      this.refuseAuth(
        ctx,
        `signature algorithm ${ctx.key.algo} does not fit a ${decision.key.type} key`,
        fingerprint,
      );
      return;
    }
    // RFC 4252 7: without a signature the client only asks whether this key
    // would do; answering PK_OK for a listed key costs nothing and saves it a
    // signature (and an agent prompt) for keys that would not.
    if (!ctx.signature || !ctx.blob) {
      ctx.accept();
      return;
    }
    const parsed = utils.parseKey(blob);
    const key = Array.isArray(parsed) ? parsed[0] : parsed;
    if (!key || key instanceof Error) {
      this.refuseAuth(ctx, "unreadable public key", fingerprint);
      return;
    }
    // verify() returns an Error for malformed input: only `true` is a pass.
    if (key.verify(ctx.blob, ctx.signature, ctx.hashAlgo) !== true) {
      this.refuseAuth(ctx, "bad signature", fingerprint);
      return;
    }
    const max = this.host.options.limits.maxSessionsPerKey;
    if (this.host.sessionsForKey(fingerprint) >= max) {
      this.refuseAuth(ctx, `too many sessions for this key (limit ${max})`, fingerprint);
      return;
    }
    this.key = decision.key;
    this.keyBlob = blob;
    this.fingerprint = fingerprint;
    ctx.accept();
  }

  /**
   * Answers a failed attempt only after a delay, so guessing is slow and the
   * answer's timing does not say which check failed.
   */
  private refuseAuth(ctx: AuthContext, reason: string, fingerprint?: string): void {
    this.authFailures++;
    this.host.metrics.authFailures.inc({ reason: reasonLabel(reason) });
    this.host.emit("auth-refused", {
      peer: this.peer,
      ...(fingerprint ? { fingerprint, keyType: keyTypeOf((ctx as PublicKeyAuthContext).key.data) } : {}),
      method: ctx.method,
      username: ctx.username,
      reason,
    });
    const mean = this.host.options.authFailureDelayMs;
    const tooMany = this.authFailures >= this.host.options.limits.maxAuthAttempts;
    this.timer(mean * (0.6 + Math.random() * 0.8), () => {
      ctx.reject(["publickey"]);
      if (tooMany) this.close(`too many authentication failures (${this.authFailures})`);
    });
  }

  private ready(): void {
    if (this.closing) return;
    this.authenticated = true;
    if (this.handshakeTimer) this.clear(this.handshakeTimer);
    this.host.emit("session-opened", this.info());
  }

  // ---- refused channels --------------------------------------------------------

  private refuseChannel(reject: () => void, type: string, description: string): void {
    if (this.conn)
      rejectChannelOpen(this.conn, reject, OPEN_FAILURE.ADMINISTRATIVELY_PROHIBITED, description);
    else reject();
    this.host.metrics.channelRefusals.inc({ type });
    this.host.emit("channel-refused", { ...this.ref(), type, reason: description });
  }

  // ---- global requests: remote forwarding (RFC 4254 7.1) -----------------------

  private globalRequest(accept: Accept, reject: Reject, name: string, info: unknown): void {
    if (this.closing) {
      reject?.();
      return;
    }
    if (name === "tcpip-forward") {
      void this.forward(info as ForwardRequest | undefined, accept, reject);
    } else if (name === "cancel-tcpip-forward") {
      this.cancel(info as ForwardRequest | undefined, accept, reject);
    } else if (name === "streamlocal-forward@openssh.com") {
      const path = (info as { socketPath?: string } | undefined)?.socketPath ?? "";
      this.refuseForward(reject, path, 0, "Unix socket forwarding is not supported", "unsupported");
    } else {
      reject?.();
    }
  }

  private refuseForward(reject: Reject, address: string, port: number, reason: string, label: string): void {
    reject?.();
    this.host.metrics.forwardRefusals.inc({ reason: label });
    this.host.emit("forward-refused", { ...this.ref(), address, port, reason });
  }

  private async forward(req: ForwardRequest | undefined, accept: Accept, reject: Reject): Promise<void> {
    if (!req || typeof req.bindAddr !== "string" || !Number.isInteger(req.bindPort) || req.bindPort > 65535) {
      this.refuseForward(reject, "", 0, "malformed tcpip-forward request", "malformed");
      return;
    }
    const { bindAddr: address, bindPort: port } = req;
    const refuse = (reason: string, label: string) =>
      this.refuseForward(reject, address, port, reason, label);
    const max = this.host.options.limits.maxForwardsPerSession;
    if (this.bindings.size + this.pendingForwards >= max)
      return refuse(`forward limit (${max}) reached`, "limit");
    const target = resolveBindAddress(address);
    if (typeof target === "string") return refuse(target, "address");
    const key = this.key;
    if (!key) return refuse("not authenticated", "not-permitted");
    const why = checkListen(key.options, target, port, this.host.options.gatewayPorts);
    if (why) return refuse(why, "not-permitted");

    this.pendingForwards++;
    let outcome: BindOutcome;
    try {
      outcome = await this.host.bind(this, target, port);
    } finally {
      this.pendingForwards--;
    }
    if (!outcome.ok) return refuse(outcome.reason, outcome.heldBy ? "held" : "listen-failed");
    if (this.closing) {
      this.host.release(outcome.binding, "session-closed");
      reject?.();
      return;
    }
    this.bindings.add(outcome.binding);
    // RFC 4254 7.1: the reply carries the port only when port 0 was asked
    // for; ssh2 adds it in exactly that case.
    accept?.(outcome.binding.port);
    this.host.emit("forward-bound", forwardInfo(outcome.binding, this));
  }

  private cancel(req: ForwardRequest | undefined, accept: Accept, reject: Reject): void {
    const b = req
      ? [...this.bindings].find(
          (x) =>
            x.target.requested === req.bindAddr &&
            (x.port === req.bindPort || (req.bindPort === 0 && x.requestedPort === 0)),
        )
      : undefined;
    if (!b) {
      reject?.();
      return;
    }
    this.host.release(b, "cancelled");
    accept?.();
  }

  /** Called by the relay when a binding of this session is released. */
  forget(b: Binding, reason: ReleaseReason): void {
    this.bindings.delete(b);
    // A session whose last port was taken over is the stale connection of an
    // agent that has come back: close it rather than wait for keepalives.
    if (reason === "taken-over" && this.bindings.size === 0 && this.pendingForwards === 0) {
      this.close("all its forwards were taken over by a newer session of the same key");
    }
  }

  /** After an authorized_keys reload: the key's current line, or why it is gone. */
  recheck(decision: KeyDecision): void {
    if (!this.authenticated || this.closing) return;
    if (!decision.ok) {
      this.close(`key no longer authorized (${decision.reason})`);
      return;
    }
    this.key = decision.key;
    for (const b of [...this.bindings]) {
      if (checkListen(decision.key.options, b.target, b.requestedPort, this.host.options.gatewayPorts)) {
        this.host.release(b, "no-longer-permitted");
      }
    }
  }

  // ---- forwarded connections (RFC 4254 7.2) -------------------------------------

  onConnection(binding: Binding, socket: net.Socket): void {
    socket.setNoDelay(true);
    // Until splice takes over, a reset must not become an unhandled 'error'.
    socket.on("error", () => {});
    const originIp = normalizeIp(socket.remoteAddress ?? "");
    const originPort = socket.remotePort ?? 0;
    const base = {
      ...this.ref(),
      address: binding.target.requested,
      port: binding.port,
      origin: formatEndpoint({ kind: "tcp", host: originIp, port: originPort }),
    };
    const fail = (reason: string) => {
      socket.destroy();
      this.host.emit("forwarded-failed", { ...base, reason });
    };
    const conn = this.conn;
    if (!conn || this.closing) {
      fail("session is closing");
      return;
    }
    const max = this.host.options.limits.maxChannelsPerSession;
    if (this.forwarded.size >= max) {
      fail(`open channel limit (${max}) reached`);
      return;
    }
    this.forwarded.add(socket);

    let settled = false;
    const timeoutMs = this.host.options.channelOpenTimeoutMs;
    const timer = this.timer(timeoutMs, () => {
      settled = true;
      this.forwarded.delete(socket);
      fail(`the agent did not answer the channel open within ${timeoutMs} ms`);
    });
    // The channel names the bind address exactly as the client sent it and
    // the port actually bound: OpenSSH and ssh2 clients find the forward by
    // comparing those (a "localhost" forward answered as "127.0.0.1" is
    // refused by the client).
    conn.forwardOut(binding.target.requested, binding.port, originIp, originPort, (err, channel) => {
      if (settled) {
        channel?.close();
        return;
      }
      settled = true;
      this.clear(timer);
      if (err || !channel) {
        this.forwarded.delete(socket);
        fail(err?.message ?? "channel open failed");
        return;
      }
      if (socket.destroyed || this.closing) {
        this.forwarded.delete(socket);
        channel.close();
        socket.destroy();
        return;
      }
      this.splice(channel, socket, base);
    });
  }

  private splice(channel: ServerChannel, socket: net.Socket, base: RelayEvents["forwarded-open"][0]): void {
    const { metrics } = this.host;
    metrics.forwardedTotal.inc();
    metrics.track(socket);
    this.host.emit("forwarded-open", base);
    void splice(channel, socket).then((r) => {
      metrics.untrack(socket);
      this.forwarded.delete(socket);
      this.host.emit("forwarded-closed", {
        ...base,
        bytesIn: r.bytesIn,
        bytesOut: r.bytesOut,
        ...(r.error ? { error: r.error.message } : {}),
      });
    });
  }

  get forwardedCount(): number {
    return this.forwarded.size;
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
    for (const b of [...this.bindings]) this.host.release(b, "session-closed");
    for (const s of this.forwarded) s.destroy();
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
    for (const b of [...this.bindings]) this.host.release(b, "session-closed");
    for (const s of this.forwarded) s.destroy();
    this.forwarded.clear();
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

  private timer(ms: number, fn: () => void): NodeJS.Timeout {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
    return t;
  }

  private clear(t: NodeJS.Timeout): void {
    clearTimeout(t);
    this.timers.delete(t);
  }
}

type Accept = ((chosenPort?: number) => void) | undefined;
type Reject = (() => void) | undefined;
interface ForwardRequest {
  bindAddr: string;
  bindPort: number;
}

/** A bounded label set for the auth-failure counter. */
function reasonLabel(reason: string): string {
  if (reason === "unknown-key" || reason === "from-not-allowed" || reason === "expired") return reason;
  if (reason === "bad signature") return "bad-signature";
  if (reason.startsWith("too many sessions")) return "session-limit";
  if (reason.endsWith("is not offered")) return "method";
  return "other";
}
