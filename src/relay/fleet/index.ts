/**
 * The relay fleet (issue 16): relays sharing a registry of tunnel names in
 * Redis and carrying operators to each other over SSH. These modules are
 * libraries the relay wires in; none of them logs, reads argv/env or exits.
 *
 * Wiring, per relay event (see the report of the fleet branch for detail):
 *  - startup with --fleet URL --fleet-key FILE: parseFleetUrl(url, "--fleet"),
 *    loadFleetKey(file), registry = new FleetRegistry({ redis, self: { relayId,
 *    address: the host:port peers dial, hostKeyFingerprint } }), await
 *    registry.start(); pool = new PeerPool(); registry.on("relayGone", (id) =>
 *    pool.drop(id)); log registry "degraded"/"restored".
 *  - authentication: an offered key with isFleetKey(fleetKey, blob) (and a
 *    valid signature, as for any key) is a peer: direct-tcpip to names only.
 *  - a session binds a name (tcpip-forward name:port): registry.announce(
 *    tunnelKey(name, port), { sessionId, deviceFingerprint }).
 *  - cancel-tcpip-forward or the session closes: registry.withdraw(key, { sessionId }).
 *  - direct-tcpip to a name not held here, from an operator (not from a peer:
 *    a peer's request is served locally or refused, never forwarded again, so
 *    two relays cannot bounce a channel between them): openViaFleet({ registry,
 *    pool, fleetKey: fleetKey.privateKey }, { name, port, originAddress,
 *    originPort }), then splice the operator's channel with route.channel.
 *  - shutdown: pool.close(); await registry.close().
 *  - --workers N: forkWorkers({ count: N, exec: the CLI entry, args }) in the
 *    primary; each worker runs the relay with relayId `<id>-w<REVTUN_WORKER_INDEX>`.
 */
export { type FleetKey, isFleetKey, loadFleetKey, parseFleetKey } from "./fleet-key.js";
export {
  FLEET_DEFAULTS,
  type FleetTimings,
  fleetTimings,
  parseFleetUrl,
  type RedisTarget,
} from "./fleet-options.js";
export { openPeerChannel, type PeerChannelRequest, PeerPool, type PeerPoolOptions } from "./peer-client.js";
export {
  FleetRegistry,
  type FleetRegistryEvents,
  type FleetRegistryOptions,
  type Hold,
  type Holder,
  MAX_HOLDERS,
  type RelaySelf,
} from "./registry.js";
export { type FleetRoute, type FleetRouteOptions, type FleetTarget, openViaFleet } from "./route.js";
export {
  forkWorkers,
  MAX_WORKERS,
  WORKER_READY,
  type WorkerEvents,
  WorkerSupervisor,
  type WorkersOptions,
} from "./workers.js";
