/**
 * Carrying an operator's connection to the relay that holds the name: this
 * relay dials its peer as an SSH client and opens direct-tcpip to
 * name:port, exactly as an operator's `ssh -W name:port peer` would.
 *
 * Why peers trust each other this way (two independent checks, no TOFU):
 *  - The peer admits us by the fleet key, an ed25519 key pair every relay of
 *    the fleet is configured with (`--fleet-key FILE`); its public half is
 *    authorized on every relay as a peer with permitopen to any name. A
 *    device key or an operator key never gets that reach.
 *  - We admit the peer by its host key: the fingerprint it published in its
 *    relay record in the registry (registry.ts, relay:<id>). A relay whose
 *    key differs from the registry's record is refused before we
 *    authenticate, so a host that took over a dead relay's address cannot
 *    collect the fleet key's signature or operators' bytes. Accepting the
 *    first key seen (TOFU) would trust exactly that host after a restart.
 *  Redis itself is trusted to say who is in the fleet; whoever can write to
 *  it can route names to a relay it controls only if it also holds a host
 *  key and can answer at that address, and still cannot impersonate a relay
 *  whose record it leaves alone.
 *
 * One SSH connection per peer relay, keyed by relayId, carries every
 * channel to it (a handshake costs ~2 ms of CPU and a round trip per
 * operator connection otherwise); it is closed after peerIdleMs without a
 * channel, when the peer's lease disappears (`drop`, from the registry's
 * relayGone event), or when the peer's address or host key in the registry
 * changes.
 */
import type { Duplex } from "node:stream";
import ssh2, { type ClientChannel } from "ssh2";
import { RevtunError } from "../../shared/errors.js";
import { fingerprintSha256 } from "../../shared/keys.js";
import { FLEET_DEFAULTS } from "./fleet-options.js";

const { Client } = ssh2;

export interface PeerChannelRequest {
  /** The peer relay's id (pool key) and where its SSH listens, host:port. */
  relayId: string;
  address: string;
  /** SHA256 fingerprint from the peer's relay record: the only host key accepted. */
  hostKeyFingerprint: string;
  /** The fleet key's private half (OpenSSH text). */
  fleetKey: string | Buffer;
  /** The tunnel name and port to open on the peer. */
  name: string;
  port: number;
  /** The operator's own address, passed on as direct-tcpip's originator. */
  originAddress: string;
  originPort: number;
  /** Handshake plus channel open; default FLEET_DEFAULTS.peerConnectTimeoutMs. */
  timeoutMs?: number;
}

export interface PeerPoolOptions {
  /** Close a peer connection with no channel for this long. */
  idleMs?: number;
  /** The user name peers see; the relay's fleet-key entry does not look at it. */
  username?: string;
}

interface PeerConn {
  client: InstanceType<typeof Client>;
  address: string;
  fingerprint: string;
  ready: Promise<void>;
  channels: number;
  idle: NodeJS.Timeout | undefined;
  closed: boolean;
}

/** "host:port" or "[v6]:port". */
function splitAddress(address: string): { host: string; port: number } | undefined {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(address) ?? /^([^:]+):(\d{1,5})$/.exec(address);
  const port = Number(m?.[2]);
  if (!m?.[1] || !Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  return { host: m[1], port };
}

export class PeerPool {
  private readonly peers = new Map<string, PeerConn>();
  private readonly idleMs: number;
  private readonly username: string;
  private closed = false;

  constructor(opts: PeerPoolOptions = {}) {
    this.idleMs = opts.idleMs ?? FLEET_DEFAULTS.peerIdleMs;
    this.username = opts.username ?? "revtun-fleet";
  }

  /** Relay ids with an open (or opening) connection. */
  connected(): string[] {
    return [...this.peers.keys()];
  }

  /**
   * Opens direct-tcpip to name:port on the peer, reusing its connection.
   * Rejects with RevtunError CONNECT naming the peer and the name; the
   * caller then tries the next holder.
   */
  async open(req: PeerChannelRequest): Promise<Duplex> {
    const what = `fleet peer ${req.relayId} (${req.address})`;
    const fail = (
      msg: string,
      reason: "refused" | "timeout" | "hostkey_mismatch" | "error",
      cause?: unknown,
    ) =>
      new RevtunError("CONNECT", `${what}: cannot open ${req.name}:${req.port}: ${msg}`, {
        reason,
        ...(cause === undefined ? {} : { cause }),
      });
    if (this.closed) throw fail("the peer pool is closed", "error");
    const timeoutMs = req.timeoutMs ?? FLEET_DEFAULTS.peerConnectTimeoutMs;
    const deadline = performance.now() + timeoutMs;
    const conn = this.connection(req, fail);
    conn.channels++;
    clearTimeout(conn.idle);
    conn.idle = undefined;
    let opened = false;
    try {
      await withTimeout(conn.ready, deadline - performance.now(), () =>
        fail(`no SSH handshake within ${timeoutMs} ms`, "timeout"),
      );
      const channel = await new Promise<ClientChannel>((resolve, reject) => {
        let done = false;
        const t = setTimeout(
          () => {
            done = true;
            reject(fail(`the peer did not answer the channel open within ${timeoutMs} ms`, "timeout"));
          },
          Math.max(0, deadline - performance.now()),
        );
        try {
          conn.client.forwardOut(req.originAddress, req.originPort, req.name, req.port, (err, ch) => {
            clearTimeout(t);
            if (done) {
              // Timed out already: the late channel has no one to read it.
              ch?.destroy();
              return;
            }
            done = true;
            if (err) reject(fail(`the peer refused: ${err.message}`, "refused", err));
            else resolve(ch);
          });
        } catch (err) {
          // ssh2 throws synchronously when the connection is no longer writable.
          clearTimeout(t);
          done = true;
          reject(fail(`the connection is gone: ${(err as Error).message}`, "error", err));
        }
      });
      opened = true;
      channel.once("close", () => this.release(req.relayId, conn));
      return channel;
    } finally {
      if (!opened) this.release(req.relayId, conn);
    }
  }

  /** Closes the connection to a relay (its lease disappeared, say); its open channels go with it. */
  drop(relayId: string): void {
    const conn = this.peers.get(relayId);
    if (conn) this.end(relayId, conn);
  }

  /** Closes every peer connection. */
  close(): void {
    this.closed = true;
    for (const [id, conn] of this.peers) this.end(id, conn);
  }

  private connection(
    req: PeerChannelRequest,
    fail: (
      msg: string,
      reason: "refused" | "timeout" | "hostkey_mismatch" | "error",
      cause?: unknown,
    ) => Error,
  ): PeerConn {
    const existing = this.peers.get(req.relayId);
    if (existing && !existing.closed) {
      if (existing.address === req.address && existing.fingerprint === req.hostKeyFingerprint)
        return existing;
      // The registry now says another address or key for this relay id: the old connection is not it.
      this.end(req.relayId, existing);
    }
    const client = new Client();
    let seen: string | undefined;
    const conn: PeerConn = {
      client,
      address: req.address,
      fingerprint: req.hostKeyFingerprint,
      channels: 0,
      idle: undefined,
      closed: false,
      ready: Promise.resolve(),
    };
    conn.ready = new Promise<void>((resolve, reject) => {
      const target = splitAddress(req.address);
      if (!target) {
        conn.closed = true;
        reject(fail(`the address ${req.address} is not host:port`, "error"));
        return;
      }
      client.once("ready", () => resolve());
      client.on("error", (err) => {
        if (seen !== undefined && seen !== req.hostKeyFingerprint)
          reject(
            fail(
              `host key ${seen} is not the ${req.hostKeyFingerprint} the fleet registry lists for it`,
              "hostkey_mismatch",
              err,
            ),
          );
        else
          reject(
            fail(err.message, (err as { code?: string }).code === "ECONNREFUSED" ? "refused" : "error", err),
          );
        this.end(req.relayId, conn);
      });
      client.once("close", () => {
        reject(fail("the connection closed", "error"));
        this.end(req.relayId, conn);
      });
      try {
        client.connect({
          host: target.host,
          port: target.port,
          username: this.username,
          privateKey: req.fleetKey,
          // Only the key, never an agent or a password prompt.
          tryKeyboard: false,
          readyTimeout: req.timeoutMs ?? FLEET_DEFAULTS.peerConnectTimeoutMs,
          // A peer that dies without a FIN is noticed in ~10 s and its channels closed.
          keepaliveInterval: 5000,
          keepaliveCountMax: 2,
          hostVerifier: (key: Buffer) => {
            seen = fingerprintSha256(key);
            return seen === req.hostKeyFingerprint;
          },
        });
        // ssh2's client leaves Nagle on. This one connection carries every operator's channel to
        // the peer, and when the far side closes first its last packet is our CHANNEL_CLOSE, which
        // the peer answers only with a delayed ACK: the next CHANNEL_OPEN then waited 42-47 ms for
        // it (bench/fleet.ts, test/relay/fleet-e2e.test.ts). The relay's own sockets are noDelay.
        client.setNoDelay(true);
      } catch (err) {
        // A malformed fleet key is thrown synchronously by ssh2.
        reject(fail(`cannot use the fleet key: ${(err as Error).message}`, "error", err));
        this.end(req.relayId, conn);
      }
    });
    // Every opener awaits ready; this keeps an unawaited rejection from being unhandled.
    conn.ready.catch(() => {});
    this.peers.set(req.relayId, conn);
    return conn;
  }

  private release(relayId: string, conn: PeerConn): void {
    conn.channels = Math.max(0, conn.channels - 1);
    if (conn.channels > 0 || conn.closed) return;
    clearTimeout(conn.idle);
    conn.idle = setTimeout(() => this.end(relayId, conn), this.idleMs);
    conn.idle.unref();
  }

  private end(relayId: string, conn: PeerConn): void {
    clearTimeout(conn.idle);
    conn.idle = undefined;
    if (this.peers.get(relayId) === conn) this.peers.delete(relayId);
    if (conn.closed) return;
    conn.closed = true;
    conn.client.end();
    // end() waits for the peer's close; destroy so a hung peer cannot keep the socket.
    setImmediate(() => conn.client.destroy());
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(onTimeout()), Math.max(0, ms));
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

/** One channel through a pool: the function the relay calls per operator connection to a remote name. */
export function openPeerChannel(pool: PeerPool, req: PeerChannelRequest): Promise<Duplex> {
  return pool.open(req);
}
