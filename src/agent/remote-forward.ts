/**
 * Remote forwards, modelled as Go's x/crypto/ssh models them: asking the
 * server to listen (RFC 4254 7.1 tcpip-forward, or OpenSSH's
 * streamlocal-forward) gives a listener, and every connection that arrives
 * there comes out of it as an accepted SSH channel, a Duplex stream like a
 * socket. The ForwardTable routes the server's channel opens to the
 * listener they belong to.
 */
import { EventEmitter } from "node:events";
import type { Duplex } from "node:stream";
import type { Client, TcpConnectionDetails } from "ssh2";
import { sendIgnore } from "../ssh2/transport.js";
import { type ForwardSpec, formatBind, wireBindAddress } from "./forward-spec.js";

export interface RemoteListenerEvents {
  /** A connection arrived at the server's port; `origin` is who connected, as the server reports it. */
  connection: [channel: Duplex, origin: string];
}

export class RemoteListener extends EventEmitter<RemoteListenerEvents> {
  /** The address string sent in tcpip-forward; the server echoes it back in every channel open. */
  readonly wireAddress: string;
  /** The port the server listens on: the allocated one for port 0. */
  port = 0;
  private open = false;

  constructor(
    private readonly client: Client,
    readonly forward: ForwardSpec,
  ) {
    super();
    const b = forward.bind;
    this.wireAddress = b.kind === "unix" ? b.path : wireBindAddress(b.address);
  }

  /** Asks the server to listen; resolves with the port (undefined for a unix socket). */
  listen(): Promise<number | undefined> {
    const b = this.forward.bind;
    return new Promise((resolve, reject) => {
      const done = (port: number | undefined) => {
        this.open = true;
        // See ssh2/transport.ts: an IGNORE carries the ACK sshd's Nagle waits for.
        sendIgnore(this.client);
        resolve(port);
      };
      if (b.kind === "unix") {
        this.client.openssh_forwardInStreamLocal(b.path, (err) => {
          if (err) reject(new Error(`server refused to listen on ${b.path}: ${err.message}`));
          else done(undefined);
        });
        return;
      }
      this.client.forwardIn(this.wireAddress, b.port, (err, port) => {
        if (err) {
          reject(new Error(`server refused to listen on ${formatBind(b)} (port in use, or not permitted)`));
          return;
        }
        // Port 0: the server picks; its reply carries the real port (RFC 4254 7.1).
        this.port = port;
        done(port);
      });
    });
  }

  get listening(): boolean {
    return this.open;
  }

  /** Accepts a channel the server opened for this listener, or rejects it once closed. */
  offer(accept: () => Duplex, reject: () => void, origin: string): void {
    if (!this.open) {
      reject();
      return;
    }
    let channel: Duplex;
    try {
      channel = accept();
    } catch {
      return; // the session is going away
    }
    this.emit("connection", channel, origin);
  }

  /** Stops accepting and asks the server to stop listening (cancel-tcpip-forward); never rejects. */
  close(): Promise<void> {
    const wasOpen = this.open;
    this.open = false;
    if (!wasOpen) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = () => resolve();
      try {
        if (this.forward.bind.kind === "unix")
          this.client.openssh_unforwardInStreamLocal(this.wireAddress, done);
        else this.client.unforwardIn(this.wireAddress, this.port, done);
      } catch {
        resolve();
      }
    });
  }
}

/** The session's listeners, and the routing of the server's forwarded channels to them. */
export class ForwardTable {
  private readonly listeners = new Map<ForwardSpec, RemoteListener>();

  constructor(private readonly client: Client) {
    client.on("tcp connection", (info, accept, reject) => {
      const l = this.matchTcp(info);
      if (l) l.offer(accept, reject, `${info.srcIP}:${info.srcPort}`);
      else reject();
    });
    client.on("unix connection", (info, accept, reject) => {
      const l = [...this.listeners.values()].find(
        (x) => x.forward.bind.kind === "unix" && x.wireAddress === info.socketPath,
      );
      if (l) l.offer(accept, reject, info.socketPath);
      else reject();
    });
  }

  /** A new listener for `forward`, registered before it listens so no early channel is lost. */
  add(forward: ForwardSpec): RemoteListener {
    const l = new RemoteListener(this.client, forward);
    this.listeners.set(forward, l);
    return l;
  }

  remove(forward: ForwardSpec): void {
    this.listeners.delete(forward);
  }

  isListening(forward: ForwardSpec): boolean {
    return this.listeners.get(forward)?.listening ?? false;
  }

  /** Closes every listener: the server stops listening; resolves when it has answered. */
  closeAll(): Promise<void> {
    return Promise.all([...this.listeners.values()].map((l) => l.close())).then(() => undefined);
  }

  /**
   * ssh2 reports the address and port the server echoes; the exact address
   * wins, else any listener on that port (servers differ in what they echo
   * for "localhost" and "").
   */
  private matchTcp(info: TcpConnectionDetails): RemoteListener | undefined {
    let byPort: RemoteListener | undefined;
    for (const l of this.listeners.values()) {
      if (l.forward.bind.kind !== "tcp" || !l.listening || l.port !== info.destPort) continue;
      if (l.wireAddress === info.destIP) return l;
      byPort ??= l;
    }
    return byPort;
  }
}
