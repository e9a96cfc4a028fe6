/**
 * Reaching a tunnel name: an operator's direct-tcpip channel (`ssh -J relay
 * root@device42`, `-W device42:22`, `-L 8080:device42:80`) to a name a
 * device holds (bindings.ts) is carried as a forwarded-tcpip channel on the
 * device's own connection, and the two channels are spliced
 * (shared/splice.ts). No socket opens on the relay host for this.
 */
import type { Connection, ServerChannel } from "ssh2";
import { boundText, escapeControl } from "../shared/bounded-text.js";
import { splice } from "../shared/splice.js";
import { OPEN_FAILURE, rejectChannelOpen } from "../ssh2/channel-open-failure.js";
import type { AuthorizedKey } from "./authorized-keys.js";
import type { Binding } from "./bindings.js";
import type { RelayEvents, SessionRef, TunnelRecord } from "./events.js";
import type { FleetRoute, FleetTarget } from "./fleet/route.js";
import type { RelayMetrics } from "./metrics.js";
import { parseTunnelName } from "./names.js";
import type { ResolvedRelayOptions } from "./options.js";
import { checkOpen } from "./policy.js";

/** What tunnels need of the relay. */
export interface TunnelHost {
  readonly options: ResolvedRelayOptions;
  readonly metrics: RelayMetrics;
  /** The sessions holding `name`:`port`, newest first. */
  holders(name: string, port: number): Binding[];
  emit<K extends keyof RelayEvents>(event: K, ...args: RelayEvents[K]): boolean;
  /** Set when the relay is in a fleet (relay.ts). */
  readonly fleet?: TunnelFleet | undefined;
  /** `device42 is offline (last seen ... on relay-b)` for a name whose device is known and offline (inventory/devices.ts). */
  offline?(name: string): string | undefined;
}

/** What tunnels need of the fleet: who is a peer, and a channel through another relay. */
export interface TunnelFleet {
  /** A peer relay's session: served from local holders only, never routed on (no loops). */
  isPeer(key: AuthorizedKey): boolean;
  open(target: FleetTarget): Promise<FleetRoute>;
}

/** What tunnels need of the operator's session. */
export interface TunnelSession {
  ref(): SessionRef;
  readonly ip: string;
  readonly socket: { remotePort?: number | undefined };
  readonly key: AuthorizedKey | undefined;
  readonly closing: string | undefined;
  readonly connection: Connection | undefined;
  /** Refuses a channel administratively, as every other refused channel (NO_LOCAL). */
  refuse(reject: () => void, description: string): void;
}

/** A holder's session, as far as opening a channel on it goes. */
interface DeviceSession {
  readonly id: number;
  readonly fingerprint: string;
  readonly closing?: string | undefined;
  readonly connection?: Connection | undefined;
}

export interface DirectTcpipInfo {
  destIP: string;
  destPort: number;
  srcIP: string;
  srcPort: number;
}

type Accept = () => ServerChannel | undefined;

/**
 * Tunnel channels each device session carries now, so a device is held to
 * maxChannelsPerSession for operators' channels as it is for its ports'
 * (entries go with the session object).
 */
const carried = new WeakMap<object, number>();

export class SessionTunnels {
  /** Operator channels open or opening now (bounded by maxChannelsPerSession). */
  private readonly live = new Set<ServerChannel | Accept>();

  constructor(
    private readonly host: TunnelHost,
    private readonly session: TunnelSession,
    /** The refusal for a key that may not reach this destination. */
    private readonly notAllowed: string,
  ) {}

  get openCount(): number {
    return this.live.size;
  }

  /** A direct-tcpip channel open from the operator. */
  open(accept: Accept, reject: () => void, info: DirectTcpipInfo | undefined): void {
    const key = this.session.key;
    const conn = this.session.connection;
    const host = typeof info?.destIP === "string" ? info.destIP : "";
    const port = Number.isInteger(info?.destPort) ? (info?.destPort as number) : -1;
    if (this.session.closing || !conn) {
      reject();
      return;
    }
    if (key?.options.forwardingDenied) {
      this.session.refuse(reject, `revtun relay: ${key.options.forwardingDenied}`);
      return;
    }
    if (!key || key.options.permitOpen.length === 0 || port < 0) {
      this.session.refuse(reject, this.notAllowed);
      return;
    }
    if (!checkOpen(key.options, host, port)) {
      const shown = escapeControl(boundText(host));
      this.session.refuse(
        reject,
        `revtun relay: ${shown}:${port} is not allowed by permitopen (${key.options.permitOpen.map((p) => p.text).join(", ")})`,
      );
      return;
    }
    const parsed = parseTunnelName(host);
    if ("error" in parsed) {
      this.session.refuse(reject, `revtun relay: bad tunnel name: ${parsed.error}`);
      return;
    }
    const name = parsed.name;
    const startedAt = Date.now();
    const record = (
      ended: string,
      result: string,
      device?: DeviceSession,
      bytes = { toDevice: 0, fromDevice: 0 },
      viaRelay?: string,
    ) => {
      this.host.metrics.tunnelConnections.inc({ result });
      const r: TunnelRecord = {
        ...this.session.ref(),
        keyComment: key.comment,
        name,
        port,
        ...(device ? { deviceSessionId: device.id, deviceFingerprint: device.fingerprint } : {}),
        ...(viaRelay ? { viaRelay } : {}),
        bytesToDevice: bytes.toDevice,
        bytesFromDevice: bytes.fromDevice,
        durationMs: Date.now() - startedAt,
        ended,
      };
      this.host.emit("tunnel-connection-closed", r);
    };
    const limits = this.host.options.limits;
    const max = limits.maxChannelsPerSession;
    const peer = this.host.fleet?.isPeer(key) ?? false;
    // A peer's one session carries all its relay's operators: its own, larger bound.
    const ownMax = peer ? limits.maxChannelsPerPeerSession : max;
    if (this.live.size >= ownMax) {
      rejectChannelOpen(
        conn,
        reject,
        OPEN_FAILURE.RESOURCE_SHORTAGE,
        `revtun relay: open channel limit (${ownMax}) reached`,
      );
      record(`open channel limit (${ownMax}) reached`, "open_failed");
      return;
    }
    const holders = this.host.holders(name, port);
    const fleet = this.host.fleet && !peer ? this.host.fleet : undefined;
    const originIp = this.session.ip;
    const originPort = this.session.socket.remotePort ?? 0;
    // Not held here (or every local holder failed): another relay of the
    // fleet may hold it. A peer's request never gets here (fleet undefined).
    const viaFleet = (fleet: TunnelFleet, localFailures: string[]) => {
      this.live.add(accept);
      fleet.open({ name, port, originAddress: originIp, originPort }).then(
        (route) => {
          this.live.delete(accept);
          const via = route.holder.relayId;
          if (this.session.closing) {
            route.channel.destroy();
            record("operator session closing", "open_failed", undefined, undefined, via);
            return;
          }
          const opChannel = accept();
          if (!opChannel) {
            route.channel.destroy();
            record("operator connection gone", "open_failed", undefined, undefined, via);
            return;
          }
          this.live.add(opChannel);
          void splice(opChannel, route.channel).then((r) => {
            this.live.delete(opChannel);
            const bytes = { toDevice: r.bytesOut, fromDevice: r.bytesIn };
            if (r.error) record(boundText(r.error.message), "error", undefined, bytes, via);
            else record("closed", "closed", undefined, bytes, via);
          });
        },
        (err: Error) => {
          this.live.delete(accept);
          // No holder anywhere, and the fleet's inventory knows the device: say it is offline, and since when.
          const offline = localFailures.length === 0 ? this.host.offline?.(name) : undefined;
          const why = offline ?? [...localFailures, boundText(err.message)].join("; ");
          if (this.session.closing) {
            record("operator session closing", "open_failed");
            return;
          }
          rejectChannelOpen(
            conn,
            reject,
            OPEN_FAILURE.CONNECT_FAILED,
            offline ?? `tunnel ${name}:${port}: ${why}`,
          );
          if (localFailures.length === 0)
            this.host.emit("tunnel-refused", { ...this.session.ref(), name, port, reason: why });
          record(
            localFailures.length === 0 ? "no tunnel" : `open failed: ${why}`,
            localFailures.length === 0 ? "no_tunnel" : "open_failed",
          );
        },
      );
    };
    if (holders.length === 0 && fleet) {
      viaFleet(fleet, []);
      return;
    }
    if (holders.length === 0) {
      // A name never held stays "no tunnel"; one whose device is offline says so to an operator
      // (issue 22). A peer relay gets "no tunnel": its own operator is told by its own relay.
      const reason = (peer ? undefined : this.host.offline?.(name)) ?? `no tunnel ${name}:${port}`;
      rejectChannelOpen(conn, reject, OPEN_FAILURE.CONNECT_FAILED, reason);
      this.host.emit("tunnel-refused", { ...this.session.ref(), name, port, reason });
      record("no tunnel", "no_tunnel");
      return;
    }
    this.live.add(accept);
    const failures: string[] = [];
    const tryHolder = (i: number) => {
      const binding = holders[i];
      if (this.session.closing) {
        // The operator's connection is ending: nothing to answer.
        this.live.delete(accept);
        record("operator session closing", "open_failed");
        return;
      }
      if (!binding && fleet) {
        this.live.delete(accept);
        viaFleet(fleet, failures);
        return;
      }
      if (!binding) {
        this.live.delete(accept);
        const why = `open failed: ${failures.join("; ")}`;
        rejectChannelOpen(conn, reject, OPEN_FAILURE.CONNECT_FAILED, `tunnel ${name}:${port} ${why}`);
        record(why, "open_failed");
        return;
      }
      const device = binding.owner as unknown as DeviceSession;
      const devConn = device.connection;
      if (binding.released || device.closing || !devConn) {
        failures.push(`session ${device.id} is closing`);
        tryHolder(i + 1);
        return;
      }
      if ((carried.get(device) ?? 0) >= max) {
        failures.push(`session ${device.id} is at its open channel limit (${max})`);
        tryHolder(i + 1);
        return;
      }
      carried.set(device, (carried.get(device) ?? 0) + 1);
      let counted = true;
      const uncount = () => {
        if (!counted) return;
        counted = false;
        const n = (carried.get(device) ?? 1) - 1;
        if (n > 0) carried.set(device, n);
        else carried.delete(device);
      };
      let settled = false;
      const timeoutMs = this.host.options.channelOpenTimeoutMs;
      // Not a session timer: it must fire even after the operator's session
      // ends (its timers are cleared), or the device's count would leak.
      const timer = setTimeout(() => {
        settled = true;
        uncount();
        failures.push(`session ${device.id} did not answer within ${timeoutMs} ms`);
        tryHolder(i + 1);
      }, timeoutMs);
      // The device's ssh finds its forward by the address exactly as it sent
      // it in tcpip-forward, and the port.
      devConn.forwardOut(binding.target.requested, port, originIp, originPort, (err, devChannel) => {
        if (settled) {
          devChannel?.close();
          return;
        }
        settled = true;
        clearTimeout(timer);
        if (err || !devChannel) {
          uncount();
          failures.push(`session ${device.id}: ${boundText(err?.message ?? "channel open failed")}`);
          tryHolder(i + 1);
          return;
        }
        this.live.delete(accept);
        if (this.session.closing) {
          uncount();
          devChannel.close();
          record("operator session closing", "open_failed", device);
          return;
        }
        const opChannel = accept();
        if (!opChannel) {
          uncount();
          devChannel.close();
          record("operator connection gone", "open_failed", device);
          return;
        }
        this.live.add(opChannel);
        void splice(opChannel, devChannel).then((r) => {
          this.live.delete(opChannel);
          uncount();
          const bytes = { toDevice: r.bytesOut, fromDevice: r.bytesIn };
          if (r.error) record(boundText(r.error.message), "error", device, bytes);
          else record("closed", "closed", device, bytes);
        });
      });
    };
    tryHolder(0);
  }

  /** The operator's session is ending: its open tunnels go with it. */
  closeAll(): void {
    for (const c of this.live) if (typeof c !== "function") c.destroy();
  }
}
