/**
 * Remote forwarding for one relay session: the tcpip-forward and
 * cancel-tcpip-forward global requests (RFC 4254 7.1), and every connection
 * that arrives on a bound port, carried to the client as a forwarded-tcpip
 * channel (RFC 4254 7.2) through shared/splice.ts.
 */
import type net from "node:net";
import type { Connection, ServerChannel } from "ssh2";
import { formatEndpoint } from "../shared/address.js";
import { splice } from "../shared/splice.js";
import { normalizeIp } from "./address-match.js";
import type { AuthorizedKey } from "./authorized-keys.js";
import type { Binding, BindingOwner, BindOutcome, ReleaseReason } from "./bindings.js";
import type { ForwardInfo, RelayEvents, SessionRef } from "./events.js";
import type { RelayMetrics } from "./metrics.js";
import type { ResolvedRelayOptions } from "./options.js";
import { type BindTarget, checkListen, listenTarget, resolveBindAddress } from "./policy.js";

/**
 * Bytes waiting in the session's own TCP socket toward the agent past which
 * forwarded sockets stop being read until it drains. ssh2 writes packets to
 * that socket without looking at write()'s answer, so 50 connections each
 * given a 2 MiB window by the agent piled up 37 MiB there (measured with
 * test/relay/hardening-forward.test.ts). 1 MiB, with the kernel's socket
 * buffer behind it, still keeps the link busy.
 */
export const TRANSPORT_BACKLOG = 1024 * 1024;

const EMPTY = Buffer.alloc(0);

/** What forwarding needs of the relay. */
export interface ForwardingHost {
  readonly options: ResolvedRelayOptions;
  readonly metrics: RelayMetrics;
  bind(owner: BindingOwner, target: BindTarget, port: number): Promise<BindOutcome>;
  release(binding: Binding, reason: ReleaseReason): void;
  emit<K extends keyof RelayEvents>(event: K, ...args: RelayEvents[K]): boolean;
}

/** What forwarding needs of its session. */
export interface ForwardingSession extends BindingOwner {
  ref(): SessionRef;
  readonly key: AuthorizedKey | undefined;
  readonly closing: string | undefined;
  readonly connection: Connection | undefined;
  timer(ms: number, fn: () => void): NodeJS.Timeout;
  clear(timer: NodeJS.Timeout): void;
  close(reason: string): void;
  /** The TCP connection to the agent, whose write backlog bounds reads from forwarded sockets. */
  readonly socket?: net.Socket;
}

export type Accept = ((chosenPort?: number) => void) | undefined;
export type Reject = (() => void) | undefined;
interface ForwardRequest {
  bindAddr: string;
  bindPort: number;
}

export function forwardInfo(b: Binding, ref: SessionRef): ForwardInfo {
  return {
    ...ref,
    address: b.target.requested,
    requestedPort: b.requestedPort,
    port: b.port,
    listening: b.listening,
  };
}

export class SessionForwarding {
  readonly bindings = new Set<Binding>();
  private pending = 0;
  private readonly forwarded = new Set<net.Socket>();
  /** Open forwarded connections per source address (entries removed at zero: bounded by the channel limit). */
  private readonly perSource = new Map<string, number>();
  /** Bytes queued toward the agent over all of this session's channels (see RelayLimits.maxBufferedPerSession). */
  private queued = 0;
  /** What each binding's client asked for, for rechecks (the binding itself holds where it listens). */
  private readonly asked = new WeakMap<Binding, BindTarget>();
  /** Forwarded sockets paused until the transport drains; one 'drain' listener wakes them all. */
  private readonly transportWaiters = new Set<() => void>();
  private transportHooked = false;

  constructor(
    private readonly host: ForwardingHost,
    private readonly session: ForwardingSession,
  ) {}

  /** Forwarded connections open now. */
  get openCount(): number {
    return this.forwarded.size;
  }

  /** Bytes so far on the forwarded connections open now (in = public side into the tunnel), for the admin inventory. */
  liveBytes(): { bytesIn: number; bytesOut: number } {
    let bytesIn = 0;
    let bytesOut = 0;
    for (const s of this.forwarded) {
      bytesIn += s.bytesRead;
      bytesOut += s.bytesWritten;
    }
    return { bytesIn, bytesOut };
  }

  /** A global request; those other than the forwarding ones are refused. */
  request(accept: Accept, reject: Reject, name: string, info: unknown): void {
    if (this.session.closing) {
      reject?.();
      return;
    }
    if (name === "tcpip-forward") {
      void this.forward(info as ForwardRequest | undefined, accept, reject);
    } else if (name === "cancel-tcpip-forward") {
      this.cancel(info as ForwardRequest | undefined, accept, reject);
    } else if (name === "streamlocal-forward@openssh.com") {
      const path = (info as { socketPath?: string } | undefined)?.socketPath ?? "";
      this.refuse(reject, path, 0, "Unix socket forwarding is not supported", "unsupported");
    } else {
      reject?.();
    }
  }

  private refuse(reject: Reject, address: string, port: number, reason: string, label: string): void {
    reject?.();
    this.host.metrics.forwardRefusals.inc({ reason: label });
    this.host.emit("forward-refused", { ...this.session.ref(), address, port, reason });
  }

  private async forward(req: ForwardRequest | undefined, accept: Accept, reject: Reject): Promise<void> {
    if (!req || typeof req.bindAddr !== "string" || !Number.isInteger(req.bindPort) || req.bindPort > 65535) {
      this.refuse(reject, "", 0, "malformed tcpip-forward request", "malformed");
      return;
    }
    const { bindAddr: address, bindPort: port } = req;
    const refuse = (reason: string, label: string) => this.refuse(reject, address, port, reason, label);
    const max = this.host.options.limits.maxForwardsPerSession;
    if (this.bindings.size + this.pending >= max) return refuse(`forward limit (${max}) reached`, "limit");
    const target = resolveBindAddress(address, port);
    if (typeof target === "string") return refuse(target, "address");
    const key = this.session.key;
    if (!key) return refuse("not authenticated", "not-permitted");
    const why = checkListen(key.options, target, port, this.host.options.gatewayPorts);
    if (why) return refuse(why, "not-permitted");

    this.pending++;
    let outcome: BindOutcome;
    try {
      outcome = await this.host.bind(
        this.session,
        listenTarget(target, this.host.options.gatewayPorts),
        port,
      );
    } finally {
      this.pending--;
    }
    if (!outcome.ok) return refuse(outcome.reason, outcome.heldBy ? "held" : "listen-failed");
    if (this.session.closing) {
      this.host.release(outcome.binding, "session-closed");
      reject?.();
      return;
    }
    this.bindings.add(outcome.binding);
    this.asked.set(outcome.binding, target);
    // RFC 4254 7.1: the reply carries the port only when port 0 was asked
    // for; ssh2 adds it in exactly that case.
    accept?.(outcome.binding.port);
    this.host.emit("forward-bound", forwardInfo(outcome.binding, this.session.ref()));
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

  /** Called by the relay when one of these bindings is released. */
  forget(b: Binding, reason: ReleaseReason): void {
    this.bindings.delete(b);
    // A session whose last port was taken over is the stale connection of an
    // agent that has come back: close it rather than wait for keepalives.
    if (reason === "taken-over" && this.bindings.size === 0 && this.pending === 0) {
      this.session.close("all its forwards were taken over by a newer session of the same key");
    }
  }

  /** After an authorized_keys reload: releases the bindings the key's line no longer permits. */
  recheck(key: AuthorizedKey): void {
    for (const b of [...this.bindings]) {
      const asked = this.asked.get(b) ?? b.target;
      if (checkListen(key.options, asked, b.requestedPort, this.host.options.gatewayPorts)) {
        this.host.release(b, "no-longer-permitted");
      }
    }
  }

  /** Releases every binding and closes every forwarded connection (the session is ending). */
  releaseAll(): void {
    for (const b of [...this.bindings]) this.host.release(b, "session-closed");
    for (const s of this.forwarded) s.destroy();
  }

  /** A connection arrived on one of this session's ports: open a forwarded-tcpip channel for it. */
  onConnection(binding: Binding, socket: net.Socket): void {
    socket.setNoDelay(true);
    // Until splice takes over, a reset must not become an unhandled 'error'.
    socket.on("error", () => {});
    const originIp = normalizeIp(socket.remoteAddress ?? "");
    const originPort = socket.remotePort ?? 0;
    const base = {
      ...this.session.ref(),
      address: binding.target.requested,
      port: binding.port,
      origin: formatEndpoint({ kind: "tcp", host: originIp, port: originPort }),
    };
    const fail = (reason: string) => {
      socket.destroy();
      this.host.emit("forwarded-failed", { ...base, reason });
    };
    const conn = this.session.connection;
    if (!conn || this.session.closing) {
      fail("session is closing");
      return;
    }
    // Fair share: a source address may open a channel only while the open
    // channels plus the ones it already holds stay under the limit, i.e. it
    // may hold at most half of what the other sources leave free. One
    // address alone gets at most half the limit; a new address is refused
    // only when the session is truly full. Before, one address holding 256
    // idle connections locked every other client out (ECONNRESET; issue 12
    // item 8). Admission only: nothing already open is cut.
    const max = this.host.options.limits.maxChannelsPerSession;
    const held = this.perSource.get(originIp) ?? 0;
    if (this.forwarded.size + held >= max) {
      fail(
        held > 0 && this.forwarded.size < max
          ? `${originIp} holds its share of the open channel limit (${max})`
          : `open channel limit (${max}) reached`,
      );
      return;
    }
    this.forwarded.add(socket);
    this.perSource.set(originIp, held + 1);
    const drop = () => {
      if (!this.forwarded.delete(socket)) return;
      const n = (this.perSource.get(originIp) ?? 1) - 1;
      if (n > 0) this.perSource.set(originIp, n);
      else this.perSource.delete(originIp);
    };

    let settled = false;
    const timeoutMs = this.host.options.channelOpenTimeoutMs;
    const timer = this.session.timer(timeoutMs, () => {
      settled = true;
      drop();
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
      this.session.clear(timer);
      if (err || !channel) {
        drop();
        fail(err?.message ?? "channel open failed");
        return;
      }
      if (socket.destroyed || this.session.closing) {
        drop();
        channel.close();
        socket.destroy();
        return;
      }
      this.splice(channel, socket, base, drop);
    });
  }

  private splice(
    channel: ServerChannel,
    socket: net.Socket,
    base: RelayEvents["forwarded-open"][0],
    drop: () => void,
  ): void {
    const { metrics } = this.host;
    metrics.forwardedTotal.inc();
    metrics.track(socket);
    this.host.emit("forwarded-open", base);
    const done = splice(channel, socket);
    const uncap = this.capBuffering(channel, socket);
    void done.then((r) => {
      uncap();
      metrics.untrack(socket);
      drop();
      this.host.emit("forwarded-closed", {
        ...base,
        bytesIn: r.bytesIn,
        bytesOut: r.bytesOut,
        ...(r.error ? { error: r.error.message } : {}),
      });
    });
  }

  /**
   * Bounds what the relay queues toward the agent for one connection (and
   * the session). splice pauses the socket only when channel.write returns
   * false, at ssh2's 2 MiB highWaterMark; this listener, after splice's own,
   * pauses it earlier and resumes it when an empty write's callback says the
   * queue has reached the transport (the trick splice uses before EOF). It
   * also pauses it while the session's socket has more than
   * TRANSPORT_BACKLOG unsent, until that socket drains.
   */
  private capBuffering(channel: ServerChannel, socket: net.Socket): () => void {
    const { maxBufferedPerChannel: perChannel, maxBufferedPerSession: perSession } = this.host.options.limits;
    let counted = 0; // this channel's part of this.queued
    let waitingQueue = false;
    let waitingTransport = false;
    let stopped = false;
    const account = () => {
      const n = stopped ? 0 : channel.writableLength;
      this.queued += n - counted;
      counted = n;
    };
    const resume = () => {
      if (!waitingQueue && !waitingTransport && !stopped && !socket.destroyed) socket.resume();
    };
    const wakeTransport = () => {
      waitingTransport = false;
      resume();
    };
    const onData = () => {
      account();
      if (stopped || channel.destroyed || channel.writableEnded) return;
      const transport = this.session.socket;
      if (
        !waitingTransport &&
        transport &&
        !transport.destroyed &&
        transport.writableLength > TRANSPORT_BACKLOG
      ) {
        waitingTransport = true;
        socket.pause();
        this.waitForTransport(transport, wakeTransport);
      }
      if (waitingQueue || counted === 0) return;
      if (counted <= perChannel && this.queued <= perSession) return;
      waitingQueue = true;
      socket.pause();
      channel.write(EMPTY, () => {
        waitingQueue = false;
        account();
        resume();
      });
    };
    const stop = () => {
      if (stopped) return;
      stopped = true;
      socket.removeListener("data", onData);
      channel.removeListener("close", stop);
      this.transportWaiters.delete(wakeTransport);
      account();
    };
    socket.on("data", onData);
    // After the peer's CLOSE, splice resumes the socket to discard what
    // remains; nothing more is queued.
    channel.once("close", stop);
    return stop;
  }

  private waitForTransport(transport: net.Socket, wake: () => void): void {
    this.transportWaiters.add(wake);
    if (this.transportHooked) return;
    this.transportHooked = true;
    // writableLength past the highWaterMark means a write returned false, so
    // 'drain' comes once the agent has read the backlog; if the connection
    // dies instead, the session destroys every forwarded socket.
    transport.once("drain", () => {
      this.transportHooked = false;
      const waiters = [...this.transportWaiters];
      this.transportWaiters.clear();
      for (const w of waiters) w();
    });
  }
}
