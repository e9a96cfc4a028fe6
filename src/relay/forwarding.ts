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
import { type BindTarget, checkListen, resolveBindAddress } from "./policy.js";

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
    const target = resolveBindAddress(address);
    if (typeof target === "string") return refuse(target, "address");
    const key = this.session.key;
    if (!key) return refuse("not authenticated", "not-permitted");
    const why = checkListen(key.options, target, port, this.host.options.gatewayPorts);
    if (why) return refuse(why, "not-permitted");

    this.pending++;
    let outcome: BindOutcome;
    try {
      outcome = await this.host.bind(this.session, target, port);
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
      if (checkListen(key.options, b.target, b.requestedPort, this.host.options.gatewayPorts)) {
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
    const max = this.host.options.limits.maxChannelsPerSession;
    if (this.forwarded.size >= max) {
      fail(`open channel limit (${max}) reached`);
      return;
    }
    this.forwarded.add(socket);

    let settled = false;
    const timeoutMs = this.host.options.channelOpenTimeoutMs;
    const timer = this.session.timer(timeoutMs, () => {
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
      this.session.clear(timer);
      if (err || !channel) {
        this.forwarded.delete(socket);
        fail(err?.message ?? "channel open failed");
        return;
      }
      if (socket.destroyed || this.session.closing) {
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
}
