/**
 * Reaching a name held on another relay: the holders the registry lists,
 * newest announce first, tried in turn until one opens the channel. A relay
 * killed with -9 still has a live lease for up to leaseTtlMs, but its port
 * refuses at once (or its pooled connection is already closed), so the next
 * holder is tried within milliseconds: an operator connecting after a relay
 * died does not wait for the lease to lapse.
 */
import type { Duplex } from "node:stream";
import { RevtunError } from "../../shared/errors.js";
import { FLEET_DEFAULTS } from "./fleet-options.js";
import type { PeerPool } from "./peer-client.js";
import type { FleetRegistry, Holder } from "./registry.js";

export interface FleetRouteOptions {
  registry: Pick<FleetRegistry, "holders">;
  pool: PeerPool;
  /** The fleet key's private half. */
  fleetKey: string | Buffer;
  /** Per holder: SSH handshake plus channel open. */
  attemptTimeoutMs?: number;
  /** Holders tried at most; the rest are left alone (the operator's ssh retries the whole). */
  maxAttempts?: number;
}

export interface FleetTarget {
  name: string;
  port: number;
  /** The operator's address, passed on as the channel's originator. */
  originAddress: string;
  originPort: number;
}

export interface FleetRoute {
  channel: Duplex;
  holder: Holder;
  /** Holders that failed before this one, with why. */
  failed: { holder: Holder; error: RevtunError }[];
}

/**
 * Opens a channel to name:port through another relay of the fleet. Rejects
 * with RevtunError CONNECT: "no relay of the fleet holds device42:22", or
 * every holder's failure on one line.
 */
export async function openViaFleet(opts: FleetRouteOptions, target: FleetTarget): Promise<FleetRoute> {
  const key = `${target.name.toLowerCase()}:${target.port}`;
  const holders = await opts.registry.holders(key, { excludeSelf: true });
  if (holders.length === 0)
    throw new RevtunError("CONNECT", `no relay of the fleet holds ${key}`, { reason: "unreachable" });
  const failed: FleetRoute["failed"] = [];
  for (const holder of holders.slice(0, opts.maxAttempts ?? 4)) {
    try {
      const channel = await opts.pool.open({
        relayId: holder.relayId,
        address: holder.address,
        hostKeyFingerprint: holder.hostKeyFingerprint,
        fleetKey: opts.fleetKey,
        name: target.name,
        port: target.port,
        originAddress: target.originAddress,
        originPort: target.originPort,
        timeoutMs: opts.attemptTimeoutMs ?? FLEET_DEFAULTS.peerConnectTimeoutMs,
      });
      return { channel, holder, failed };
    } catch (err) {
      failed.push({
        holder,
        error:
          err instanceof RevtunError
            ? err
            : new RevtunError("CONNECT", `fleet peer ${holder.relayId}: ${(err as Error).message}`),
      });
    }
  }
  throw new RevtunError(
    "CONNECT",
    `${key}: every relay holding it failed: ${failed.map((f) => f.error.message).join("; ")}`,
    { reason: "unreachable" },
  );
}
