/**
 * The device inventory's wiring: which store a relay's options call for
 * (the fleet's Redis, a state directory, or memory), in one place, so
 * relay.ts only creates, starts and closes it.
 */
import { existsSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { RedisDeviceStore } from "../fleet/inventory-store.js";
import type { FleetMember } from "../fleet/member.js";
import type { ResolvedRelayOptions } from "../options.js";
import type { DeviceRecord } from "./device-record.js";
import { DeviceInventory, type InventoryOptions } from "./devices.js";
import { FileDeviceStore } from "./file-store.js";
import { type DeviceStore, MemoryDeviceStore } from "./store.js";

export { type DeviceRecord, formatSeen, offlineLine } from "./device-record.js";
export {
  DEFAULT_RETENTION_MS,
  DeviceInventory,
  type DevicePage,
  type DeviceQuery,
  type DeviceView,
} from "./devices.js";

export function createDeviceInventory(
  options: ResolvedRelayOptions,
  extra: { stateDir?: string | undefined; inventory?: InventoryOptions | undefined },
  fleet: FleetMember | undefined,
): DeviceInventory {
  const f = options.fleet;
  let store: DeviceStore;
  if (f && fleet) {
    const redis = new RedisDeviceStore({
      redis: f.redis,
      // The fleet's name from its prefix (`revtun:NAME:`, fleet-args.ts) until the options carry the name itself.
      fleet: /^revtun:(.+):$/.exec(f.prefix ?? "")?.[1] ?? "",
      fleetKey: f.fleetKey.privateKey,
      relayId: fleet.relayId,
      timings: f.timings,
    });
    // The registry probes the password first (its start() runs before the inventory's).
    fleet.registry.once("passwordUnused", () => redis.dropPassword());
    store = redis;
  } else if (extra.stateDir !== undefined) store = new FileDeviceStore(extra.stateDir);
  else store = new MemoryDeviceStore();
  const relayId = fleet?.relayId ?? extra.inventory?.relayId ?? hostname();
  // Enrollment (docs/enrollment.md) keeps DIR/devices/<name>.json per enrolled device: those are
  // never forgotten. In a fleet the enrollment store answers; until it is wired here, the retention
  // applies to every device (pruning runs hourly, and only past 30 days offline).
  const stateDir = extra.stateDir;
  const isEnrolled =
    !f && stateDir !== undefined
      ? (r: DeviceRecord) => r.names.some((n) => existsSync(join(stateDir, "devices", `${n}.json`)))
      : undefined;
  return new DeviceInventory({
    relayId,
    store,
    ...(extra.inventory?.retentionMs !== undefined ? { retentionMs: extra.inventory.retentionMs } : {}),
    ...(fleet
      ? {
          relayAlive: (id: string) => fleet.registry.relays().has(id),
          relays: () => new Set([fleet.relayId, ...fleet.registry.relays().keys()]),
        }
      : {}),
    ...(f ? { isPeer: (fp: string) => fp === f.fleetKey.fingerprint } : {}),
    ...(isEnrolled ? { isEnrolled } : {}),
  });
}
