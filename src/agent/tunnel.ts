/**
 * A tunnel, kept up for good (what autossh does for ssh). It runs one session at a time,
 * rebuilds it after any loss with capped, jittered backoff, re-binds every
 * forward, retries forwards the server refuses while the others serve, and
 * reports each state change as a typed event.
 *
 * Never retried: host key problems and configuration errors. Authentication
 * refused before the tunnel was ever up is a configuration error too; after
 * that it is retried (keys get rotated, servers get restored from backups).
 */
import { EventEmitter } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import { formatEndpoint } from "../shared/address.js";
import { type FailureReason, isPermanent, RevtunError } from "../shared/errors.js";
import type { HookStatus } from "../ssh2/hooks.js";
import { Backoff } from "./backoff.js";
import { type CertificateEvent, expiredCertificateHint, renewCertificates } from "./certificate-renewal.js";
import { classify } from "./failures.js";
import { type ForwardSpec, formatBind } from "./forward-spec.js";
import { type Identity, loadKeys, withCertificates } from "./identities.js";
import { openJumpChain } from "./jump-hosts.js";
import { type ResolvedTunnelOptions, resolveOptions, type TunnelOptions } from "./options.js";
import { type ConnectionInfo, Session, sessionConfig } from "./session.js";

export type TunnelState = "connecting" | "up" | "backoff" | "stopped";
export type ForwardState = "pending" | "bound" | "failed";

export interface ForwardStatus {
  spec: string;
  bind: string;
  target: string;
  state: ForwardState;
  port?: number | undefined;
  reason?: string | undefined;
}

export interface TunnelStatus {
  state: TunnelState;
  host: string;
  port: number;
  since: number;
  forwards: ForwardStatus[];
  openConnections: number;
  lastError?: string | undefined;
}

export interface TunnelEvents {
  connecting: [{ attempt: number; host: string; port: number }];
  connected: [{ handshakeMs: number; serverVersion: string; inactiveHooks: HookStatus[] }];
  "connect-failed": [{ reason: FailureReason; error: Error; attempt: number }];
  "host-key": [{ status: string; file?: string; certificate?: string }];
  "forward-bound": [{ forward: ForwardSpec; port: number | undefined }];
  "forward-failed": [{ forward: ForwardSpec; reason: string; retryInMs: number | undefined }];
  "connection-open": [ConnectionInfo];
  "connection-close": [
    ConnectionInfo & { bytesIn: number; bytesOut: number; durationMs: number; error?: string },
  ];
  "connection-rejected": [{ forward: ForwardSpec; origin: string; reason: string }];
  bytes: [{ bytesIn: number; bytesOut: number }];
  disconnected: [{ reason: FailureReason; error: Error | undefined; upMs: number }];
  retrying: [{ delayMs: number; attempt: number }];
  error: [Error];
  stopped: [{ error: Error | undefined }];
  /** A certificate the relay signed was renewed, could not be, or has expired (certificate-renewal.ts). */
  certificate: [CertificateEvent];
}

export class Tunnel extends EventEmitter<TunnelEvents> {
  private session: Session | undefined;
  private state: TunnelState = "connecting";
  private since = Date.now();
  private lastError: string | undefined;
  private readonly forwards = new Map<ForwardSpec, ForwardStatus>();
  private readonly forwardTimers = new Set<NodeJS.Timeout>();
  private readonly stop = new AbortController();
  private everUp = false;
  private expiredReported = false;
  private fatal: Error | undefined;
  private keys: Identity[] = [];
  private identities: Identity[] = [];

  private certificateOptions() {
    return { certificateFiles: this.options.certificateFiles ?? [], home: this.options.home };
  }
  private started = false;
  readonly options: ResolvedTunnelOptions;
  /** Resolves when the tunnel has stopped, with the error that stopped it, if any. */
  readonly done: Promise<Error | undefined>;
  private resolveDone!: (e: Error | undefined) => void;

  /** Validates the options (RevtunError "USAGE" naming the first bad one); start() connects. */
  constructor(options: TunnelOptions) {
    super();
    this.options = resolveOptions(options);
    this.done = new Promise((r) => {
      this.resolveDone = r;
    });
    for (const f of this.options.forwards) {
      this.forwards.set(f, {
        spec: f.text,
        bind: formatBind(f.bind),
        target: formatEndpoint(f.target),
        state: "pending",
      });
    }
  }

  get port(): number {
    return this.options.port;
  }

  /** Starts the supervision loop. Configuration errors (identity files) reject here. */
  async start(): Promise<this> {
    if (this.started) throw new RevtunError("USAGE", "tunnel already started: start() may be called once");
    this.started = true;
    this.keys = await loadKeys({
      identityFiles: this.options.identityFiles ?? [],
      passphrase: this.options.passphrase,
      home: this.options.home,
    });
    this.identities = await withCertificates(this.keys, this.certificateOptions());
    void this.run();
    return this;
  }

  /** The files of the certificates offered (certificate-renewal.ts renews those the relay signed). */
  private certificateFiles(): string[] {
    return this.identities.filter((i) => i.certificate).map((i) => i.file);
  }

  status(): TunnelStatus {
    return {
      state: this.state,
      host: this.options.host,
      port: this.port,
      since: this.since,
      forwards: [...this.forwards.values()].map((f) => ({ ...f })),
      openConnections: this.session?.openConnections ?? 0,
      lastError: this.lastError,
    };
  }

  /** Up, and every forward bound: what /healthz calls healthy. */
  healthy(): boolean {
    return this.state === "up" && [...this.forwards.values()].every((f) => f.state === "bound");
  }

  liveBytes(): { bytesIn: number; bytesOut: number } {
    return this.session?.liveBytes() ?? { bytesIn: 0, bytesOut: 0 };
  }

  private setState(s: TunnelState): void {
    this.state = s;
    this.since = Date.now();
  }

  private async run(): Promise<void> {
    // The first retry within 250 ms, as autossh restarts ssh at once: a
    // server restart costs little more than the restart itself. Full jitter
    // and doubling keep a fleet from reconnecting in lockstep.
    const backoff = new Backoff({ baseMs: 250, capMs: this.options.maxBackoffMs });
    const signal = this.stop.signal;
    let attempt = 0;
    while (!signal.aborted) {
      attempt++;
      this.setState("connecting");
      this.emit("connecting", { attempt, host: this.options.host, port: this.port });
      // Certificates are read again for each reconnect, as ssh reads them per
      // connection; one caught mid-replacement keeps the ones read before.
      if (attempt > 1) {
        this.identities = await withCertificates(this.keys, this.certificateOptions()).catch(
          () => this.identities,
        );
      }
      const cfg = sessionConfig(this.options, this.identities);
      let session: Session;
      try {
        cfg.sock = await this.transport();
        session = new Session(cfg);
        this.session = session;
        this.wire(session);
        await session.connect();
      } catch (e) {
        const err = e instanceof Error ? e : new Error(String(e));
        this.session?.destroy();
        this.session = undefined;
        this.lastError = err.message;
        const reason = classify(err);
        if (signal.aborted) break;
        // An enrolled device offline past its certificate's expiry: one line on how to enroll again.
        const hint =
          err instanceof RevtunError && err.code === "AUTH" && !this.expiredReported
            ? await expiredCertificateHint(this.certificateFiles())
            : undefined;
        if (hint) {
          this.expiredReported = true;
          this.emit("certificate", { action: "expired", file: "", message: hint });
        }
        if (isPermanent(err) || (err instanceof RevtunError && err.code === "AUTH" && !this.everUp)) {
          this.finish(err);
          return;
        }
        this.emit("connect-failed", { reason, error: err, attempt });
        await this.pause(backoff, attempt, signal);
        continue;
      }
      if (signal.aborted) {
        session.destroy();
        break;
      }
      this.everUp = true;
      this.setState("up");
      const renewal = renewCertificates({
        certificateFiles: this.certificateFiles(),
        open: (name) => session.openSubsystem(name),
        // The next attempt reads the certificate files again (withCertificates), so a renewed one is used.
        report: (e) => this.emit("certificate", e),
      });
      session.once("close", () => renewal.stop());
      const upAt = Date.now();
      const closed = new Promise<{ reason: FailureReason; error: Error | undefined }>((resolve) =>
        session.once("close", resolve),
      );
      // Refused forwards are asked for again quickly (a stale session's port is
      // usually released within seconds), never slower than every 4 s.
      for (const f of this.forwards.keys()) {
        void this.bindForward(
          session,
          f,
          new Backoff({ baseMs: 500, capMs: Math.min(4_000, this.options.maxBackoffMs) }),
        );
      }
      const { reason, error } = await closed;
      for (const t of this.forwardTimers) clearTimeout(t);
      this.forwardTimers.clear();
      for (const f of this.forwards.values()) {
        f.state = "pending";
        f.port = undefined;
        f.reason = "session down";
      }
      this.session = undefined;
      if (signal.aborted || this.fatal) break;
      this.lastError = error?.message ?? reason;
      this.setState("backoff");
      const upMs = Date.now() - upAt;
      this.emit("disconnected", { reason, error, upMs });
      if (upMs >= this.options.stableAfterMs) backoff.reset();
      await this.pause(backoff, attempt, signal);
    }
    this.finish(this.fatal);
  }

  private async pause(backoff: Backoff, attempt: number, signal: AbortSignal): Promise<void> {
    this.setState("backoff");
    const delayMs = backoff.next();
    this.emit("retrying", { delayMs, attempt: attempt + 1 });
    await sleep(delayMs, undefined, { signal }).catch(() => {});
  }

  /** The stream this attempt runs SSH over: the caller's dial(), the jump host chain, or (undefined) TCP. */
  private async transport() {
    const o = this.options;
    if (o.dial) return o.dial();
    if (o.jumpHosts?.length) return openJumpChain(o.jumpHosts, o, this.identities);
    return undefined;
  }

  private wire(session: Session): void {
    session.on("ready", (e) => this.emit("connected", e));
    session.on("host-key", (e) => this.emit("host-key", e));
    session.on("connection-open", (e) => this.emit("connection-open", e));
    session.on("connection-close", (e) => this.emit("connection-close", e));
    session.on("connection-rejected", (e) => this.emit("connection-rejected", e));
    session.on("bytes", (e) => this.emit("bytes", e));
  }

  private async bindForward(session: Session, forward: ForwardSpec, backoff: Backoff): Promise<void> {
    const status = this.forwards.get(forward);
    if (!status || !session.isReady || this.stop.signal.aborted) return;
    try {
      const port = await session.bind(forward);
      status.state = "bound";
      status.port = port;
      status.reason = undefined;
      this.emit("forward-bound", { forward, port });
    } catch (e) {
      if (!session.isReady || this.stop.signal.aborted) return;
      const reason = (e as Error).message;
      status.state = "failed";
      status.reason = reason;
      if (this.options.exitOnForwardFailure) {
        this.emit("forward-failed", { forward, reason, retryInMs: undefined });
        this.fatal = new RevtunError(
          "FORWARD",
          `remote port forwarding failed for ${forward.text}: ${reason}`,
        );
        session.destroy();
        return;
      }
      // Typically a stale session still holds the port: keep asking on this
      // live session while the other forwards serve.
      const retryInMs = Math.max(250, backoff.next());
      this.emit("forward-failed", { forward, reason, retryInMs });
      const t = setTimeout(() => {
        this.forwardTimers.delete(t);
        void this.bindForward(session, forward, backoff);
      }, retryInMs);
      this.forwardTimers.add(t);
    }
  }

  private finish(err: Error | undefined): void {
    if (this.state === "stopped") return;
    this.fatal = err;
    this.setState("stopped");
    if (err) {
      this.lastError = err.message;
      if (this.listenerCount("error") > 0) this.emit("error", err);
    }
    this.emit("stopped", { error: err });
    this.resolveDone(err);
  }

  /**
   * Stops for good: cancels the forwards, lets open connections finish for up
   * to `graceMs`, closes the session. Resolves when everything is released.
   */
  async close(graceMs = 10_000): Promise<void> {
    if (!this.stop.signal.aborted) {
      this.stop.abort();
      const s = this.session;
      if (s) await s.shutdown(graceMs);
      else this.finish(undefined);
    }
    await this.done;
  }
}

/** Opens a supervised tunnel and starts keeping it up. */
export async function openTunnel(options: TunnelOptions): Promise<Tunnel> {
  return new Tunnel(options).start();
}
