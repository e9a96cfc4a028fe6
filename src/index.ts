/**
 * revtun: permanent reverse SSH tunnels.
 *
 * `openTunnel(options)` dials an SSH server, asks it to listen (tcpip-forward)
 * and carries every connection that arrives there back to a local service;
 * the Tunnel keeps it up for good and reports each state change as a typed
 * event. The server side, a forwarding-only SSH relay, is `revtun/relay`.
 *
 * The library never prints, never exits the process and never reads argv or
 * the environment: the CLI in `src/cli/` does that.
 */
export type { CertificateEvent } from "./agent/certificate-renewal.js";
export { type EnrollOptions, type EnrollResult, enroll } from "./agent/enrollment.js";
export { type BindSpec, type ForwardSpec, parseRemoteForward } from "./agent/forward-spec.js";
export type { StrictHostKeyChecking } from "./agent/known-hosts.js";
export {
  type AuthMethod,
  DEFAULT_TUNNEL_OPTIONS,
  type HostKeyPromptInfo,
  type JumpHost,
  type TunnelOptions,
} from "./agent/options.js";
export type { ConnectionInfo } from "./agent/session.js";
export {
  type ForwardState,
  type ForwardStatus,
  openTunnel,
  Tunnel,
  type TunnelEvents,
  type TunnelState,
  type TunnelStatus,
} from "./agent/tunnel.js";
export type { Endpoint } from "./shared/address.js";
export { type ErrorCode, type FailureReason, isPermanent, RevtunError } from "./shared/errors.js";
export type { HookStatus } from "./ssh2/hooks.js";
