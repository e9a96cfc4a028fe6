/**
 * The relay library: `new Relay(options)`, `start()`, events, `close()`.
 * It never prints, exits or reads argv; `src/cli/relay-command.ts` is the CLI.
 */
export {
  type AuthorizedKey,
  type AuthorizedKeys,
  type KeyOptions,
  type ListenPermission,
  loadAuthorizedKeys,
  parseAuthorizedKeys,
} from "./authorized-keys.js";
export type { ReleaseReason } from "./bindings.js";
export {
  type DescribedEvent,
  describeRelayEvent,
  type EventLevel,
  type ForwardInfo,
  RELAY_EVENT_NAMES,
  type RelayEventName,
  type RelayEvents,
  type SessionInfo,
  type SessionRef,
} from "./events.js";
export { RelayMetrics } from "./metrics.js";
export { DEFAULT_LIMITS, type RelayLimits, type RelayOptions } from "./options.js";
export { fromAllows } from "./patterns.js";
export { authorizeKey, checkListen, resolveBindAddress } from "./policy.js";
export { Relay } from "./server.js";
