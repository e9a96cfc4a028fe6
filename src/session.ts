/**
 * One SSH session: connect, verify the host key, authenticate, bind the
 * remote forwards, and serve every forwarded connection until the session
 * ends. It knows nothing about retrying: the supervisor builds a new session
 * for each attempt.
 */
import { EventEmitter } from "node:events";
import net from "node:net";
import type { Duplex } from "node:stream";
import ssh2, { type ConnectConfig, type ServerHostKeyAlgorithm, type TcpConnectionDetails } from "ssh2";
import { Authenticator, type Identity } from "./auth.js";
import { RevtunError } from "./errors.js";
import { type Endpoint, formatEndpoint, openTarget, splice } from "./forward.js";
import { checkHostKey, type HostKeyCheck, knownKeyAlgorithms } from "./known-hosts.js";
import { type ForwardSpec, formatBind, wireBindAddress } from "./spec.js";
import { keepaliveReset, poolPadding, remoteVersion, sendIgnore } from "./ssh2-internals.js";
import { batchWrites } from "./write-batching.js";

export interface SessionConfig {
  host: string;
  port: number;
  username: string;
  identities: Identity[];
  identitiesOnly: boolean;
  agent?: string | undefined;
  password?: string | undefined;
  hostKey: Omit<HostKeyCheck, "host" | "port"> & { alias?: string | undefined };
  connectTimeoutMs: number;
  ciphers?: string[] | undefined;
  /** Seconds; 0 disables SSH-level keepalives. */
  serverAliveInterval: number;
  serverAliveCountMax: number;
  tcpKeepAlive: boolean;
  family?: 4 | 6 | undefined;
  targetConnectTimeoutMs: number;
  streamLocalBindUnlink?: boolean | undefined;
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
  ready: [{ handshakeMs: number; serverVersion: string }];
  "forward-bound": [{ forward: ForwardSpec; port: number | undefined }];
  "forward-failed": [{ forward: ForwardSpec; reason: string }];
  "connection-open": [ConnectionInfo];
  "connection-close": [
    ConnectionInfo & { bytesIn: number; bytesOut: number; durationMs: number; error?: string },
  ];
  "connection-rejected": [{ forward: ForwardSpec; origin: string; reason: string }];
  "host-key": [{ status: string; fingerprint?: string; file?: string }];
  bytes: [{ bytesIn: number; bytesOut: number }];
  close: [{ reason: string; error: Error | undefined; wasReady: boolean }];
}

interface Bound {
  forward: ForwardSpec;
  /** The address string sent in tcpip-forward; the server echoes it back. */
  wireAddress: string;
  port: number;
}

let nextConnectionId = 1;

/** Turns ssh2/socket errors into the short reason logs and metrics use. */
export function classify(err: Error & { level?: string; code?: string }): string {
  if (err instanceof RevtunError) return err.code.toLowerCase();
  const code = err.code;
  if (code === "ECONNREFUSED") return "refused";
  if (code === "ECONNRESET" || code === "EPIPE") return "reset";
  if (code === "ENOTFOUND" || code === "EAI_AGAIN" || err.level === "client-dns") return "dns";
  if (code === "ETIMEDOUT" || code === "EHOSTUNREACH" || code === "ENETUNREACH") return "unreachable";
  if (/keepalive/i.test(err.message)) return "keepalive-timeout";
  if (err.level === "client-timeout") return "timeout";
  if (err.level === "client-authentication") return "auth";
  if (err.level === "protocol") return "protocol";
  return "error";
}

export class Session extends EventEmitter<SessionEvents> {
  private readonly client = new ssh2.Client();
  private sock: Duplex | undefined;
  private readonly bound = new Map<ForwardSpec, Bound>();
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
        identityFiles: [],
        identitiesOnly: cfg.identitiesOnly,
        agent: cfg.agent,
        password: cfg.password,
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
    return this.cfg.port === 22 ? this.cfg.host : `[${this.cfg.host}]:${this.cfg.port}`;
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
    if (!label || !(err instanceof RevtunError)) return err;
    return Object.assign(new RevtunError(err.code, `${label}: ${err.message}`, { cause: err }), {
      reason: (err as { reason?: string }).reason,
    });
  }

  private async handshake(): Promise<void> {
    const started = Date.now();
    const { cfg } = this;
    // With HostKeyAlias, ssh looks the alias up as given, without [host]:port.
    const hostKeyHost = cfg.hostKey.alias ?? cfg.host;
    const hostKeyPort = cfg.hostKey.alias ? 22 : cfg.port;
    const known = await knownKeyAlgorithms(hostKeyHost, hostKeyPort, cfg.hostKey.files).catch(() => []);

    const sock = cfg.sock ?? (await this.dial());
    this.sock = sock;
    if (sock instanceof net.Socket) {
      sock.setNoDelay(true);
      batchWrites(sock);
      if (cfg.tcpKeepAlive) sock.setKeepAlive(true, Math.max(1, cfg.serverAliveInterval || 15) * 1000);
    }

    const config: ConnectConfig = {
      sock: sock as ConnectConfig["sock"],
      username: cfg.username,
      readyTimeout: cfg.connectTimeoutMs,
      keepaliveInterval: cfg.serverAliveInterval * 1000,
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
      this.client.on("hostkeys", () => sendIgnore(this.client));
      this.client.on("tcp connection", (info, accept, reject) => this.onTcpConnection(info, accept, reject));
      this.client.on("unix connection", (info, accept, reject) =>
        this.onUnixConnection(info.socketPath, accept, reject),
      );
      try {
        this.client.connect(config);
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
    if (!reset || this.cfg.serverAliveInterval <= 0) return;
    let last = 0;
    sock.on("data", () => {
      const now = Date.now();
      if (now - last < 250 || !this.ready) return;
      last = now;
      reset();
    });
  }

  private dial(): Promise<net.Socket> {
    const { cfg } = this;
    return new Promise((resolve, reject) => {
      const sock = net.connect({
        host: cfg.host,
        port: cfg.port,
        noDelay: true,
        ...(cfg.family ? { family: cfg.family } : {}),
      });
      const timer = setTimeout(() => {
        sock.destroy();
        reject(
          Object.assign(
            new RevtunError(
              "CONNECT",
              `connect to ${this.target()} timed out after ${cfg.connectTimeoutMs} ms`,
            ),
            { reason: "timeout" },
          ),
        );
      }, cfg.connectTimeoutMs);
      sock.once("connect", () => {
        clearTimeout(timer);
        sock.removeAllListeners("error");
        resolve(sock);
      });
      sock.once("error", (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        sock.destroy();
        const what =
          err.code === "ECONNREFUSED"
            ? "connection refused"
            : err.code === "ENOTFOUND" || err.code === "EAI_AGAIN"
              ? `cannot resolve ${cfg.host}`
              : err.message;
        reject(
          Object.assign(new RevtunError("CONNECT", `cannot connect to ${this.target()}: ${what}`), {
            reason: classify(err),
          }),
        );
      });
    });
  }

  private explain(err: Error & { level?: string; code?: string }): Error {
    if (err instanceof RevtunError) return err;
    const reason = classify(err);
    if (reason === "auth") return this.auth.failure(`${this.cfg.username}@${this.target()}`);
    if (reason === "keepalive-timeout") {
      return Object.assign(
        new RevtunError(
          "CONNECT",
          `no answer from ${this.target()} for ${this.cfg.serverAliveInterval * (this.cfg.serverAliveCountMax + 1)} s (ServerAliveInterval ${this.cfg.serverAliveInterval} × ServerAliveCountMax ${this.cfg.serverAliveCountMax})`,
        ),
        { reason },
      );
    }
    return Object.assign(
      new RevtunError("CONNECT", `connection to ${this.target()} failed: ${err.message}`),
      { reason },
    );
  }

  /** Asks the server to listen for one forward (RFC 4254 7.1, or streamlocal). */
  bind(forward: ForwardSpec): Promise<number | undefined> {
    return new Promise((resolve, reject) => {
      if (!this.isReady) {
        reject(new Error("session is not connected"));
        return;
      }
      const b = forward.bind;
      if (b.kind === "unix") {
        this.client.openssh_forwardInStreamLocal(b.path, (err) => {
          if (err) {
            reject(new Error(`server refused to listen on ${b.path}: ${err.message}`));
            return;
          }
          this.bound.set(forward, { forward, wireAddress: b.path, port: 0 });
          sendIgnore(this.client);
          this.emit("forward-bound", { forward, port: undefined });
          resolve(undefined);
        });
        return;
      }
      const wireAddress = wireBindAddress(b.address);
      this.client.forwardIn(wireAddress, b.port, (err, port) => {
        if (err) {
          reject(new Error(`server refused to listen on ${formatBind(b)} (port in use, or not permitted)`));
          return;
        }
        // Port 0: the server picks; its reply carries the real port (RFC 4254 7.1).
        this.bound.set(forward, { forward, wireAddress, port });
        sendIgnore(this.client);
        this.emit("forward-bound", { forward, port });
        resolve(port);
      });
    });
  }

  /**
   * Opens a direct-tcpip channel (RFC 4254 7.2) to host:port through this
   * session: how a jump host carries the next hop.
   */
  openChannel(host: string, port: number, timeoutMs: number): Promise<Duplex> {
    const target = port === 22 ? host : `[${host}]:${port}`;
    const fail = (why: string) =>
      this.labelled(Object.assign(new RevtunError("CONNECT", why), { reason: "refused" }));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(fail(`no answer opening a channel to ${target} after ${timeoutMs} ms`)),
        timeoutMs,
      );
      try {
        this.client.forwardOut("127.0.0.1", 0, host, port, (err, channel) => {
          clearTimeout(timer);
          if (err) {
            reject(fail(`cannot reach ${target} through it: ${err.message}`));
            return;
          }
          // SSH over a channel cannot run half-closed: when the far end stops
          // sending, close our half too, as a TCP socket without allowHalfOpen
          // would. Otherwise sshd waits for our EOF while ssh2 waits for a close.
          channel.once("end", () => channel.destroy());
          resolve(channel);
        });
      } catch (err) {
        clearTimeout(timer);
        reject(fail((err as Error).message));
      }
    });
  }

  isBound(forward: ForwardSpec): boolean {
    return this.bound.has(forward);
  }

  private matchTcp(info: TcpConnectionDetails): Bound | undefined {
    let byPort: Bound | undefined;
    for (const b of this.bound.values()) {
      if (b.forward.bind.kind !== "tcp" || b.port !== info.destPort) continue;
      if (b.wireAddress === info.destIP) return b;
      byPort ??= b;
    }
    return byPort;
  }

  private onTcpConnection(info: TcpConnectionDetails, accept: () => Duplex, reject: () => void): void {
    const b = this.matchTcp(info);
    const origin = `${info.srcIP}:${info.srcPort}`;
    if (!b || this.stopping) {
      reject();
      return;
    }
    this.serve(b.forward, b.forward.target, origin, accept, reject);
  }

  private onUnixConnection(socketPath: string, accept: () => Duplex, reject: () => void): void {
    const b = [...this.bound.values()].find(
      (x) => x.forward.bind.kind === "unix" && x.wireAddress === socketPath,
    );
    if (!b || this.stopping) {
      reject();
      return;
    }
    this.serve(b.forward, b.forward.target, socketPath, accept, reject);
  }

  private serve(
    forward: ForwardSpec,
    target: Endpoint,
    origin: string,
    accept: () => Duplex,
    reject: () => void,
  ): void {
    if (this.closed) {
      reject();
      return;
    }
    let channel: Duplex;
    try {
      channel = accept();
    } catch {
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
    if (this.isReady) {
      const cancels = [...this.bound.values()].map(
        (b) =>
          new Promise<void>((resolve) => {
            const done = () => resolve();
            try {
              if (b.forward.bind.kind === "unix")
                this.client.openssh_unforwardInStreamLocal(b.wireAddress, done);
              else this.client.unforwardIn(b.wireAddress, b.port, done);
            } catch {
              resolve();
            }
          }),
      );
      await withTimeout(Promise.all(cancels), 2_000);
    }
    const deadline = Date.now() + graceMs;
    while (this.sockets.size > 0 && Date.now() < deadline && !this.closed) {
      await new Promise((r) => setTimeout(r, 50));
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
    const reason = this.stopping
      ? "shutdown"
      : err
        ? ((err as { reason?: string }).reason ?? classify(err))
        : "closed-by-server";
    this.emit("close", { reason, error: err, wasReady: this.ready });
  }
}

/** ssh2's default host key algorithms (lib/protocol/constants.js), in its order. */
const HOST_KEY_ALGORITHMS = [
  "ssh-ed25519",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "rsa-sha2-512",
  "rsa-sha2-256",
  "ssh-rsa",
];

/**
 * Asks for the key types known_hosts already has first, as OpenSSH does, so a
 * server with several host keys offers one we can check. ssh2's `prepend`
 * ignores names already in its list, hence a full ordered list.
 */
function hostKeyOrder(known: string[]): ServerHostKeyAlgorithm[] {
  const usable = known.filter((k) => HOST_KEY_ALGORITHMS.includes(k));
  return [...new Set([...usable, ...HOST_KEY_ALGORITHMS])] as ServerHostKeyAlgorithm[];
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  return Promise.race([p, new Promise<undefined>((r) => setTimeout(() => r(undefined), ms).unref())]);
}

/** OpenSSH's Ciphers syntax: a list, or +append, -remove, ^prepend. */
function cipherList(
  ciphers: string[],
): ConnectConfig["algorithms"] extends infer A ? (A extends { cipher?: infer C } ? C : never) : never {
  const first = ciphers[0] ?? "";
  const strip = (list: string[]) => list.map((c, i) => (i === 0 ? c.slice(1) : c));
  if (first.startsWith("+")) return { append: strip(ciphers) } as never;
  if (first.startsWith("-")) return { remove: strip(ciphers) } as never;
  if (first.startsWith("^")) return { prepend: strip(ciphers) } as never;
  return ciphers as never;
}
