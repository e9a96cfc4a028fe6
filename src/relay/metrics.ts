/**
 * The relay's Prometheus metrics, in a registry the relay owns (so two
 * relays in one process, or a relay beside an agent, never collide).
 *
 * Gauges are read from the relay's state at scrape time rather than kept by
 * inc/dec, so they cannot drift. Byte counters include connections still
 * open: a long-lived tunnel would otherwise show nothing until it closed.
 */
import type net from "node:net";
import { Counter, Gauge, Registry } from "prom-client";

export interface RelayState {
  sessions: number;
  unauthenticated: number;
  forwardsBound: number;
  forwardedOpen: number;
  authorizedKeys: number;
  /** Entries of the --revoked-keys list in force (keys, hashes, serial ranges, key ids). */
  revokedKeys: number;
}

type Direction = "to_agent" | "from_agent";

export class RelayMetrics {
  readonly registry: Registry;
  private readonly live = new Map<net.Socket, { read: number; written: number }>();
  private readonly bytes: Counter<"direction">;
  readonly forwardedTotal: Counter;
  readonly authFailures: Counter<"reason">;
  readonly takeovers: Counter;
  readonly forwardRefusals: Counter<"reason">;
  readonly channelRefusals: Counter<"type">;
  readonly reloads: Counter<"result">;
  readonly revokedReloads: Counter<"result">;
  /** Operator connections to tunnel names, by how they ended. */
  readonly tunnelConnections: Counter<"result">;

  constructor(state: () => RelayState, registry = new Registry()) {
    this.registry = registry;
    const registers = [registry];
    const gauge = (name: string, help: string, read: (s: RelayState) => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read(state()));
        },
      });
    gauge("revtun_relay_sessions", "Authenticated SSH sessions.", (s) => s.sessions);
    gauge(
      "revtun_relay_unauthenticated_connections",
      "SSH connections not yet authenticated.",
      (s) => s.unauthenticated,
    );
    gauge("revtun_relay_forwards_bound", "Remote forwards listening.", (s) => s.forwardsBound);
    gauge(
      "revtun_relay_forwarded_connections_open",
      "Forwarded TCP connections open.",
      (s) => s.forwardedOpen,
    );
    gauge("revtun_relay_authorized_keys", "Keys loaded from authorized_keys.", (s) => s.authorizedKeys);
    gauge(
      "revtun_relay_revoked_keys",
      "Entries of the --revoked-keys list in force (keys, key hashes, serial ranges, key ids).",
      (s) => s.revokedKeys,
    );
    this.forwardedTotal = new Counter({
      name: "revtun_relay_forwarded_connections_total",
      help: "Forwarded TCP connections spliced to an agent.",
      registers,
    });
    const live = this.live;
    const flushAll = () => {
      for (const [socket, seen] of live) this.flush(socket, seen);
    };
    this.bytes = new Counter({
      name: "revtun_relay_forwarded_bytes_total",
      help: "Bytes carried by forwarded connections: to_agent = from the public socket into the tunnel.",
      labelNames: ["direction"],
      registers,
      collect: flushAll,
    });
    this.authFailures = new Counter({
      name: "revtun_relay_auth_failures_total",
      help: "Refused authentication attempts, by reason.",
      labelNames: ["reason"],
      registers,
    });
    this.takeovers = new Counter({
      name: "revtun_relay_takeovers_total",
      help: "Bindings handed from an older session to a newer one of the same key.",
      registers,
    });
    this.forwardRefusals = new Counter({
      name: "revtun_relay_forward_refusals_total",
      help: "Refused tcpip-forward requests, by reason.",
      labelNames: ["reason"],
      registers,
    });
    this.channelRefusals = new Counter({
      name: "revtun_relay_channel_refusals_total",
      help: "Refused channel opens from clients (session, direct-tcpip, ...), by type.",
      labelNames: ["type"],
      registers,
    });
    this.tunnelConnections = new Counter({
      name: "revtun_relay_tunnel_connections_total",
      help: "Operator connections to tunnel names (direct-tcpip), by result: closed, error, no_tunnel, open_failed.",
      labelNames: ["result"],
      registers,
    });
    this.reloads = new Counter({
      name: "revtun_relay_authorized_keys_reloads_total",
      help: "authorized_keys reloads, by result.",
      labelNames: ["result"],
      registers,
    });
    this.revokedReloads = new Counter({
      name: "revtun_relay_revoked_keys_reloads_total",
      help: "--revoked-keys loads, by result (failed: the list before stays in force).",
      labelNames: ["result"],
      registers,
    });
  }

  /** Counts a forwarded socket's bytes from now until `untrack`. */
  track(socket: net.Socket): void {
    this.live.set(socket, { read: 0, written: 0 });
  }

  untrack(socket: net.Socket): void {
    const seen = this.live.get(socket);
    if (!seen) return;
    this.flush(socket, seen);
    this.live.delete(socket);
  }

  private flush(socket: net.Socket, seen: { read: number; written: number }): void {
    const add = (dir: Direction, now: number, before: number) => {
      if (now > before) this.bytes.inc({ direction: dir }, now - before);
    };
    add("to_agent", socket.bytesRead, seen.read);
    add("from_agent", socket.bytesWritten, seen.written);
    seen.read = Math.max(seen.read, socket.bytesRead);
    seen.written = Math.max(seen.written, socket.bytesWritten);
  }
}
