/**
 * revtun: permanent reverse SSH tunnels, and a forwarding-only SSH relay.
 *
 * - `openTunnel(options)` dials an SSH server, asks it to listen (tcpip-forward)
 *   and carries every connection that arrives back to a local service; a
 *   supervisor keeps it up for good and reports each state change as an event.
 * - `Relay` (from "revtun/relay") is the server side: an SSH server that only
 *   forwards.
 *
 * The library never prints, never exits the process and never reads argv or
 * the environment: the CLI in `src/cli/` does that.
 */
export { Authenticator, DEFAULT_IDENTITIES, type Identity, loadIdentities } from "./auth.js";
export { Backoff } from "./backoff.js";
export { type ErrorCode, isPermanent, RevtunError } from "./errors.js";
export {
  type Endpoint,
  formatEndpoint,
  openTarget,
  type SpliceResult,
  splice,
} from "./forward.js";
export { fingerprintSha256, keyTypeOf, loadOrCreateHostKey, parsePublicKey } from "./keys.js";
export * from "./known-hosts.js";
export { createLogger, type LogFormat, type Logger, type LogLevel } from "./log.js";
export { TunnelMetrics } from "./metrics.js";
export { type Health, type MetricsServer, parseListen, serveMetrics } from "./metrics-server.js";
export {
  applyDashO,
  IGNORED_OPTIONS,
  parseDashO,
  type SshOptions,
  SUPPORTED_OPTIONS,
  setOption,
} from "./options.js";
export { type ResolveContext, resolveTunnelOptions } from "./resolve.js";
export { type ConnectionInfo, Session } from "./session.js";
export {
  type BindSpec,
  type ForwardSpec,
  formatBind,
  parseConfigRemoteForward,
  parseRemoteForward,
  wireBindAddress,
} from "./spec.js";
export {
  type ForwardStatus,
  openTunnel,
  Tunnel,
  type TunnelEvents,
  type TunnelOptions,
  type TunnelState,
  type TunnelStatus,
} from "./supervisor.js";
