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
 *  - --workers N: a WorkerSupervisor in the primary (src/cli/relay-workers.ts);
 *    each worker runs the relay with relayId `<id>-w<REVTUN_WORKER_INDEX>` and
 *    a peer listener of its own (RelayFleetOptions.peerListen: the shared port
 *    would hand a peer's hop to any worker), and sends WORKER_READY when it serves.
 *  - a Redis password (RedisTarget.password): registry.start() probes it first
 *    (redis-auth.ts) and rejects CONFIG when it is missing or wrong.
 *  - peers' limits: the fleet key is held to maxPeerSessions and
 *    maxChannelsPerPeerSession, and connections from members' advertised IP
 *    addresses skip the per-source pre-auth limits (member.ts isFleetSource).
 */
export { type FleetKey, isFleetKey, loadFleetKey, parseFleetKey } from "./fleet-key.js";
export {
  FLEET_DEFAULTS,
  type FleetTimings,
  fleetTimings,
  parseFleetUrl,
  type RedisTarget,
} from "./fleet-options.js";
export { loadFleetPassword, readPrivateFile } from "./fleet-secrets.js";
export { openPeerChannel, type PeerChannelRequest, PeerPool, type PeerPoolOptions } from "./peer-client.js";
export { authProblem, probeRedisAuth, type RedisAuthProbe } from "./redis-auth.js";
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
