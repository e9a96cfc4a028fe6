/**
 * One SSH session: connect, verify the host key, authenticate, bind the
 * remote forwards, and serve every forwarded connection until the session
 * ends. It knows nothing about retrying: the tunnel (./tunnel.ts) builds a
 * new session for each attempt.
 *
 * A forwarded connection takes one path: the server's channel comes out of a
 * RemoteListener (./remote-forward.ts), the local socket from openTarget
 * (./local-target.ts), and shared/splice.ts joins the two.
 */
import { EventEmitter } from "node:events";
import net from "node:net";
import type { Duplex } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import ssh2, { type ConnectConfig } from "ssh2";
import { type Endpoint, formatEndpoint, sshHostName } from "../shared/address.js";
import { parseCertificate } from "../shared/certificates/index.js";
import { type FailureReason, RevtunError } from "../shared/errors.js";
import { splice } from "../shared/splice.js";
import { connectionHooks, type HookStatus } from "../ssh2/hooks.js";
import { acceptHostCertificates, CERTIFICATE_ALGORITHMS } from "../ssh2/host-certificate.js";
import { poolPadding } from "../ssh2/padding-pool.js";
import { keepaliveReset, remoteVersion, sendIgnore } from "../ssh2/transport.js";
import { signWithCertificates } from "../ssh2/user-certificate.js";
import { applyWindowPolicy } from "../ssh2/window.js";
import { batchWrites } from "../ssh2/write-batching.js";
import { cipherList, hostKeyOrder } from "./algorithms.js";
import { Authenticator } from "./authenticator.js";
import { dial } from "./dial.js";
import { openDirectChannel } from "./direct-channel.js";
import { classify } from "./failures.js";
import type { ForwardSpec } from "./forward-spec.js";
import type { Identity } from "./identities.js";
import {
  checkHostKey,
  type HostKeyCheck,
  knownKeyAlgorithms,
  trustsHostCertificates,
} from "./known-hosts.js";
import { openTarget } from "./local-target.js";
import type { AuthMethod, ResolvedTunnelOptions } from "./options.js";
import { ForwardTable } from "./remote-forward.js";

export interface SessionConfig {
  host: string;
  port: number;
  username: string;
  identities: Identity[];
  identitiesOnly: boolean;
  agent?: string | undefined;
  password?: string | undefined;
  authMethods: readonly AuthMethod[];
  hostKey: Omit<HostKeyCheck, "host" | "port"> & { alias?: string | undefined };
  connectTimeoutMs: number;
  ciphers?: string[] | undefined;
  /** 0 disables SSH-level keepalives. */
  serverAliveIntervalMs: number;
  serverAliveCountMax: number;
  tcpKeepAlive: boolean;
  family?: 4 | 6 | undefined;
  targetConnectTimeoutMs: number;
  /** A ready stream to run SSH over instead of a TCP connection (jump hosts). */
  sock?: Duplex | undefined;
  /** Prefix of every error message, e.g. "jump host user@bastion:22". */
  label?: string | undefined;
}

export interface ConnectionInfo {
  id: number;
  forward: ForwardSpec;
  /** Who connected to the server's port, as the server reports it. */
  origin: string;
}

export interface SessionEvents {
  ready: [{ handshakeMs: number; serverVersion: string; inactiveHooks: HookStatus[] }];
  "connection-open": [ConnectionInfo];
  "connection-close": [
    ConnectionInfo & { bytesIn: number; bytesOut: number; durationMs: number; error?: string },
  ];
  "connection-rejected": [{ forward: ForwardSpec; origin: string; reason: string }];
  "host-key": [{ status: string; fingerprint?: string; file?: string; certificate?: string }];
  bytes: [{ bytesIn: number; bytesOut: number }];
  close: [{ reason: FailureReason; error: Error | undefined; wasReady: boolean }];
}

let nextConnectionId = 1;

export class Session extends EventEmitter<SessionEvents> {
  private readonly client = new ssh2.Client();
  private readonly table = new ForwardTable(this.client);
  private sock: Duplex | undefined;
  private readonly sockets = new Set<net.Socket>();
  private closed = false;
  private ready = false;
  private stopping = false;
  private failure: Error | undefined;
  private readonly auth: Authenticator;

  constructor(private readonly cfg: SessionConfig) {
    super();
    this.auth = new Authenticator(
      {
        username: cfg.username,
        identitiesOnly: cfg.identitiesOnly,
        agent: cfg.agent,
        password: cfg.password,
        methods: cfg.authMethods,
      },
      cfg.identities,
    );
  }

  get openConnections(): number {
    return this.sockets.size;
  }

  get isReady(): boolean {
    return this.ready && !this.closed;
  }

  /** Bytes moved by connections still open, for live metrics. */
  liveBytes(): { bytesIn: number; bytesOut: number } {
    let bytesIn = 0;
    let bytesOut = 0;
    for (const s of this.sockets) {
      bytesIn += s.bytesRead;
      bytesOut += s.bytesWritten;
    }
    return { bytesIn, bytesOut };
  }

  private target(): string {
    return sshHostName(this.cfg.host, this.cfg.port);
  }

  /** Connects and authenticates; resolves when the session is ready, rejects with a typed error. */
  async connect(): Promise<void> {
    try {
      await this.handshake();
    } catch (err) {
      throw this.labelled(err as Error);
    }
  }

  private labelled(err: Error): Error {
    const label = this.cfg.label;
    return label && err instanceof RevtunError ? err.prefixed(label) : err;
  }

  private async handshake(): Promise<void> {
    const started = Date.now();
    const { cfg } = this;
    // With HostKeyAlias, ssh looks the alias up as given, without [host]:port.
    const hostKeyHost = cfg.hostKey.alias ?? cfg.host;
    const hostKeyPort = cfg.hostKey.alias ? 22 : cfg.port;
    const known = await knownKeyAlgorithms(hostKeyHost, hostKeyPort, cfg.hostKey.files).catch(() => []);
    const certificates = await trustsHostCertificates(hostKeyHost, hostKeyPort, cfg.hostKey.files).catch(
      () => false,
    );

    const sock =
      cfg.sock ??
      (await dial({ host: cfg.host, port: cfg.port, family: cfg.family, timeoutMs: cfg.connectTimeoutMs }));
    this.sock = sock;
    if (sock instanceof net.Socket) {
      sock.setNoDelay(true);
      batchWrites(sock);
      if (cfg.tcpKeepAlive) sock.setKeepAlive(true, cfg.serverAliveIntervalMs || 15_000);
    }

    const config: ConnectConfig = {
      sock: sock as ConnectConfig["sock"],
      username: cfg.username,
      readyTimeout: cfg.connectTimeoutMs,
      keepaliveInterval: cfg.serverAliveIntervalMs,
      keepaliveCountMax: cfg.serverAliveCountMax,
      authHandler: this.auth.handler,
      algorithms: {
        ...(cfg.ciphers ? { cipher: cipherList(cfg.ciphers) } : {}),
        ...(known.length ? { serverHostKey: hostKeyOrder(known) } : {}),
      },
      hostVerifier: (key: Buffer, verify: (ok: boolean) => void) => {
        checkHostKey({ ...cfg.hostKey, host: hostKeyHost, port: hostKeyPort }, key).then(
          (verdict) => {
            this.emit("host-key", {
              status: verdict.status,
              ...("file" in verdict ? { file: verdict.file } : {}),
              ...("certificate" in verdict && verdict.certificate
                ? { certificate: verdict.certificate }
                : {}),
            });
            verify(true);
          },
          (err: Error) => {
            this.failure = err;
            verify(false);
          },
        );
      },
    };

    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error & { level?: string }) => {
        // An agent that cannot be reached is one method failing, not the session.
        if (err.level === "agent") return;
        this.failure ??= this.explain(err);
        if (!this.ready) reject(this.failure);
      };
      this.client.on("error", onError);
      this.client.once("ready", () => {
        this.ready = true;
        this.client.setNoDelay(true);
        this.emit("ready", {
          handshakeMs: Date.now() - started,
          serverVersion: remoteVersion(this.client),
          inactiveHooks: connectionHooks(this.client).filter((h) => !h.live),
        });
        resolve();
      });
      this.client.once("close", () => {
        if (!this.ready)
          reject(
            this.failure ??
              new RevtunError("CONNECT", `connection to ${this.target()} closed during handshake`),
          );
        this.onClose();
      });
      poolPadding(this.client);
      applyWindowPolicy(this.client);
      this.client.on("hostkeys", () => sendIgnore(this.client));
      try {
        this.client.connect(config);
        // Both hooks must be in place before the server's version line arrives.
        if (certificates) acceptHostCertificates(this.client, CERTIFICATE_ALGORITHMS, certifiedKey);
        if (cfg.identities.some((i) => i.certificate)) signWithCertificates(this.client);
      } catch (err) {
        // ssh2 validates algorithm names synchronously.
        reject(new RevtunError("USAGE", `bad Ciphers value: ${(err as Error).message}`));
        sock.destroy();
      }
      this.trackActivity(sock);
    });
  }

  /** Any bytes from the server prove it alive, as in OpenSSH (checked at most every 250 ms). */
  private trackActivity(sock: Duplex): void {
    const reset = keepaliveReset(this.client);
    if (!reset || this.cfg.serverAliveIntervalMs <= 0) return;
    let last = 0;
    sock.on("data", () => {
      const now = Date.now();
      if (now - last < 250 || !this.ready) return;
      last = now;
      reset();
    });
  }

  private explain(err: Error & { level?: string; code?: string }): Error {
    if (err instanceof RevtunError) return err;
    const reason = classify(err, this.ready);
    if (reason === "auth") return this.auth.failure(`${this.cfg.username}@${this.target()}`);
    if (reason === "keepalive-timeout") {
      const s = this.cfg.serverAliveIntervalMs / 1000;
      const n = this.cfg.serverAliveCountMax;
      return new RevtunError(
        "CONNECT",
        `no answer from ${this.target()} for ${s * (n + 1)} s (ServerAliveInterval ${s} × ServerAliveCountMax ${n})`,
        { reason },
      );
    }
    return new RevtunError("CONNECT", `connection to ${this.target()} failed: ${err.message}`, { reason });
  }

  /** Asks the server to listen for one forward; resolves with the bound port (undefined for a socket). */
  /** A subsystem channel on the live session (certificate-renewal.ts's renew@revtun). */
  openSubsystem(name: string): Promise<ssh2.ClientChannel> {
    return new Promise((resolve, reject) =>
      this.client.subsys(name, (err, channel) => (err ? reject(err) : resolve(channel))),
    );
  }

  async bind(forward: ForwardSpec): Promise<number | undefined> {
    if (!this.isReady) throw new Error("session is not connected");
    const listener = this.table.add(forward);
    listener.on("connection", (channel, origin) => this.serve(forward, forward.target, origin, channel));
    try {
      return await listener.listen();
    } catch (err) {
      this.table.remove(forward);
      throw err;
    }
  }

  isBound(forward: ForwardSpec): boolean {
    return this.table.isListening(forward);
  }

  /** A direct-tcpip channel to host:port through this session: how a jump host carries the next hop. */
  openChannel(host: string, port: number, timeoutMs: number): Promise<Duplex> {
    return openDirectChannel(this.client, host, port, timeoutMs).catch((err: Error) => {
      throw this.labelled(err);
    });
  }

  /** remote connection → channel → splice → local socket. */
  private serve(forward: ForwardSpec, target: Endpoint, origin: string, channel: Duplex): void {
    if (this.closed || this.stopping) {
      channel.destroy();
      return;
    }
    const socket = openTarget(target, this.cfg.targetConnectTimeoutMs);
    const info: ConnectionInfo = { id: nextConnectionId++, forward, origin };
    let started = 0;
    this.sockets.add(socket);
    socket.once("connect", () => {
      started = Date.now();
      this.emit("connection-open", info);
    });
    splice(channel, socket).then((r) => {
      this.sockets.delete(socket);
      if (!r.connected) {
        this.emit("connection-rejected", {
          forward,
          origin,
          reason: `${formatEndpoint(target)}: ${r.error?.message ?? "closed before connecting"}`,
        });
        return;
      }
      this.emit("bytes", { bytesIn: r.bytesIn, bytesOut: r.bytesOut });
      this.emit("connection-close", {
        ...info,
        bytesIn: r.bytesIn,
        bytesOut: r.bytesOut,
        durationMs: Date.now() - started,
        ...(r.error ? { error: r.error.message } : {}),
      });
    });
  }

  /**
   * Graceful end: cancel the forwards so the server stops listening, let open
   * connections finish for up to `graceMs`, then close the session.
   */
  async shutdown(graceMs: number): Promise<void> {
    if (this.closed) return;
    this.stopping = true;
    if (this.isReady) await withTimeout(this.table.closeAll(), 2_000);
    const deadline = Date.now() + graceMs;
    while (this.sockets.size > 0 && Date.now() < deadline && !this.closed) {
      await sleep(50);
    }
    this.destroy();
  }

  /** Ends the session now; open connections are closed on both ends. */
  destroy(): void {
    for (const s of this.sockets) s.destroy();
    try {
      this.client.end();
    } catch {
      // already gone
    }
    // end() sends DISCONNECT and FIN; do not wait for a peer that may be gone.
    setTimeout(() => this.sock?.destroy(), 1_000).unref();
    if (!this.ready) this.sock?.destroy();
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    // A dead session's connections can carry nothing more: close them at once.
    for (const s of this.sockets) s.destroy();
    this.sock?.destroy();
    const err = this.failure;
    const reason: FailureReason = this.stopping ? "shutdown" : err ? classify(err, true) : "closed-by-server";
    this.emit("close", { reason, error: err, wasReady: this.ready });
  }
}

/** The key a host certificate certifies, for ssh2 to check the key exchange signature with. */
function certifiedKey(blob: Buffer): Buffer | undefined {
  try {
    return parseCertificate(blob).publicKey;
  } catch {
    return undefined;
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  return Promise.race([p, sleep(ms, undefined, { ref: false })]);
}

/** The session settings a tunnel's options imply; jump hosts reuse them for each hop. */
export function sessionConfig(o: ResolvedTunnelOptions, identities: Identity[]): SessionConfig {
  return {
    host: o.host,
    port: o.port,
    username: o.username,
    identities,
    identitiesOnly: o.identitiesOnly,
    agent: o.agent,
    password: o.password,
    authMethods: o.authMethods,
    hostKey: {
      files: o.knownHostsFiles ?? [],
      policy: o.strictHostKeyChecking,
      hashKnownHosts: o.hashKnownHosts,
      alias: o.hostKeyAlias,
      ...(o.confirmHostKey ? { confirm: o.confirmHostKey } : {}),
    },
    connectTimeoutMs: o.connectTimeoutMs,
    ciphers: o.ciphers,
    serverAliveIntervalMs: o.serverAliveIntervalMs,
    serverAliveCountMax: o.serverAliveCountMax,
    tcpKeepAlive: o.tcpKeepAlive,
    family: o.addressFamily === "inet" ? 4 : o.addressFamily === "inet6" ? 6 : undefined,
    targetConnectTimeoutMs: o.targetConnectTimeoutMs,
  };
}
