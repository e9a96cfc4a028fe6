/**
 * revtun/relay: a forwarding-only SSH server for fleets of devices.
 * `new Relay(options)`, `start()`, typed events, `reloadAuthorizedKeys()`,
 * `close()`. Devices authenticate with keys from an OpenSSH authorized_keys
 * file and may only ask for remote forwards; everything else is refused.
 * The library never prints, exits or reads argv; `revtun relay` is its CLI.
 */
export { type ErrorCode, RevtunError } from "../shared/errors.js";
export type { ReleaseReason } from "./bindings.js";
export { type CertificateAuthority, loadCertificateAuthority } from "./enrollment/certificate-authority.js";
export {
  DEFAULT_CERT_VALIDITY_MS,
  type Enrollment,
  type EnrollmentOptions,
  type EnrollmentRecord,
} from "./enrollment/enrollment.js";
export { RedisStore } from "./enrollment/redis-store.js";
export { StateDirStore } from "./enrollment/state-dir-store.js";
export type { DeviceRecord, EnrollmentStore } from "./enrollment/store.js";
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
export { DEFAULT_LIMITS, type RelayLimits, type RelayOptions } from "./options.js";
export { Relay } from "./relay.js";
