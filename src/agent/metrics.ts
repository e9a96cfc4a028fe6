/**
 * Agent metrics in Prometheus form, via prom-client (the de facto Node
 * client: registry, text exposition, label handling). Every series carries a
 * `tunnel` label so one endpoint can serve many tunnels.
 */
import { Counter, Gauge, Registry } from "prom-client";
import type { Health } from "../shared/metrics-server.js";
import type { Tunnel } from "./tunnel.js";

export class TunnelMetrics {
  readonly registry: Registry;
  private readonly tunnels = new Map<string, Tunnel>();
  private readonly closedBytes = new Map<string, { in: number; out: number }>();
  private readonly detach = new Map<string, () => void>();

  private readonly connectFailures: Counter<"tunnel" | "reason">;
  private readonly reconnects: Counter<"tunnel">;
  private readonly connectionsTotal: Counter<"tunnel">;
  private readonly rejected: Counter<"tunnel">;
  private readonly handshake: Gauge<"tunnel">;

  constructor(registry = new Registry()) {
    this.registry = registry;
    const registers = [registry];
    const self = this;
    new Gauge({
      name: "revtun_session_up",
      help: "1 when the SSH session is established",
      labelNames: ["tunnel"],
      registers,
      collect() {
        for (const [name, t] of self.tunnels) this.set({ tunnel: name }, t.status().state === "up" ? 1 : 0);
      },
    });
    new Gauge({
      name: "revtun_forwards_bound",
      help: "Remote forwards currently bound on the server",
      labelNames: ["tunnel"],
      registers,
      collect() {
        for (const [name, t] of self.tunnels) {
          this.set({ tunnel: name }, t.status().forwards.filter((f) => f.state === "bound").length);
        }
      },
    });
    new Gauge({
      name: "revtun_forward_up",
      help: "1 when this remote forward is bound, 0 while it is pending or refused",
      labelNames: ["tunnel", "forward"],
      registers,
      collect() {
        this.reset();
        for (const [name, t] of self.tunnels) {
          for (const f of t.status().forwards)
            this.set({ tunnel: name, forward: f.spec }, f.state === "bound" ? 1 : 0);
        }
      },
    });
    new Gauge({
      name: "revtun_connections_open",
      help: "Forwarded connections open now",
      labelNames: ["tunnel"],
      registers,
      collect() {
        for (const [name, t] of self.tunnels) this.set({ tunnel: name }, t.status().openConnections);
      },
    });
    new Counter({
      name: "revtun_bytes_total",
      help: "Bytes forwarded; direction=in is from the local service to the remote client",
      labelNames: ["tunnel", "direction"],
      registers,
      collect() {
        this.reset();
        for (const [name, t] of self.tunnels) {
          const live = t.liveBytes();
          const closed = self.closedBytes.get(name) ?? { in: 0, out: 0 };
          this.inc({ tunnel: name, direction: "in" }, closed.in + live.bytesIn);
          this.inc({ tunnel: name, direction: "out" }, closed.out + live.bytesOut);
        }
      },
    });
    this.connectFailures = new Counter({
      name: "revtun_connect_failures_total",
      help: "Failed attempts to establish the SSH session, by reason",
      labelNames: ["tunnel", "reason"],
      registers,
    });
    this.reconnects = new Counter({
      name: "revtun_reconnects_total",
      help: "Sessions established after the first one",
      labelNames: ["tunnel"],
      registers,
    });
    this.connectionsTotal = new Counter({
      name: "revtun_connections_total",
      help: "Forwarded connections served",
      labelNames: ["tunnel"],
      registers,
    });
    this.rejected = new Counter({
      name: "revtun_connections_rejected_total",
      help: "Forwarded connections refused because the local target could not be reached",
      labelNames: ["tunnel"],
      registers,
    });
    this.handshake = new Gauge({
      name: "revtun_last_handshake_seconds",
      help: "Duration of the last successful connect, handshake and authentication",
      labelNames: ["tunnel"],
      registers,
    });
  }

  add(name: string, tunnel: Tunnel): void {
    this.remove(name);
    this.tunnels.set(name, tunnel);
    if (!this.closedBytes.has(name)) this.closedBytes.set(name, { in: 0, out: 0 });
    let sessions = 0;
    const labels = { tunnel: name };
    const onConnected = (e: { handshakeMs: number }) => {
      if (sessions++ > 0) this.reconnects.inc(labels);
      this.handshake.set(labels, e.handshakeMs / 1000);
    };
    const onFailed = (e: { reason: string }) => this.connectFailures.inc({ tunnel: name, reason: e.reason });
    const onOpen = () => this.connectionsTotal.inc(labels);
    const onRejected = () => this.rejected.inc(labels);
    const onBytes = (e: { bytesIn: number; bytesOut: number }) => {
      const b = this.closedBytes.get(name);
      if (b) {
        b.in += e.bytesIn;
        b.out += e.bytesOut;
      }
    };
    tunnel.on("connected", onConnected);
    tunnel.on("connect-failed", onFailed);
    tunnel.on("connection-open", onOpen);
    tunnel.on("connection-rejected", onRejected);
    tunnel.on("bytes", onBytes);
    this.detach.set(name, () => {
      tunnel.off("connected", onConnected);
      tunnel.off("connect-failed", onFailed);
      tunnel.off("connection-open", onOpen);
      tunnel.off("connection-rejected", onRejected);
      tunnel.off("bytes", onBytes);
    });
  }

  remove(name: string): void {
    this.detach.get(name)?.();
    this.detach.delete(name);
    this.tunnels.delete(name);
  }

  /** /healthz: healthy when every tunnel is up with every forward bound. */
  health(): Health {
    const tunnels: Record<string, unknown> = {};
    let ok = this.tunnels.size > 0;
    for (const [name, t] of this.tunnels) {
      const s = t.status();
      const healthy = t.healthy();
      ok &&= healthy;
      tunnels[name] = {
        ok: healthy,
        state: s.state,
        ...(s.lastError && !healthy ? { error: s.lastError } : {}),
        forwards: s.forwards.map((f) => ({
          forward: f.spec,
          state: f.state,
          ...(f.port !== undefined ? { port: f.port } : {}),
          ...(f.reason && f.state !== "bound" ? { reason: f.reason } : {}),
        })),
      };
    }
    return { ok, tunnels };
  }
}
