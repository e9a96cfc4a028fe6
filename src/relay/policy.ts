/**
 * Decisions, without I/O: may this key log in from this address, what does a
 * client's bind address mean, and may this key listen there.
 */
import net from "node:net";
import { matchPattern } from "../shared/patterns.js";
import { fromAllows } from "./address-match.js";
import type { AuthorizedKey, KeyOptions } from "./authorized-keys.js";

export type KeyDecision =
  | { ok: true; key: AuthorizedKey }
  | { ok: false; reason: "unknown-key" | "from-not-allowed" | "expired" };

/**
 * Finds the line that admits `blob` from `peerIp` at `now`. Like sshd, a
 * key listed on several lines is admitted by the first whose `from=` and
 * `expiry-time=` pass; the refusal reason is the most specific one seen.
 */
export function authorizeKey(
  keys: readonly AuthorizedKey[],
  blob: Buffer,
  peerIp: string,
  now: Date,
): KeyDecision {
  let reason: "unknown-key" | "from-not-allowed" | "expired" = "unknown-key";
  for (const key of keys) {
    if (!key.blob.equals(blob)) continue;
    if (key.options.from !== undefined && !fromAllows(key.options.from, peerIp)) {
      reason = "from-not-allowed";
      continue;
    }
    if (key.options.expiresAt && now.getTime() > key.options.expiresAt.getTime()) {
      reason = "expired";
      continue;
    }
    return { ok: true, key };
  }
  return { ok: false, reason };
}

/**
 * Whether the signature algorithm a client names fits the key it sends:
 * RSA keys sign as rsa-sha2-256/512 (RFC 8332) or ssh-rsa, others as
 * their own type.
 */
export function algorithmFitsKey(algo: string, keyType: string): boolean {
  if (algo === keyType) return true;
  return keyType === "ssh-rsa" && (algo === "rsa-sha2-256" || algo === "rsa-sha2-512");
}

/** One socket the relay listens on for a binding. */
export interface ListenHost {
  host: string;
  /** Bind only if possible ("localhost" is 127.0.0.1 and, when there is IPv6, ::1). */
  optional?: boolean;
  ipv6Only?: boolean;
}

export interface BindTarget {
  /** The address string exactly as the client sent it in tcpip-forward. */
  requested: string;
  scope: "loopback" | "any" | "specific";
  hosts: ListenHost[];
}

/**
 * What a tcpip-forward bind address means (RFC 4254 7.1 leaves it to the
 * server; these are OpenSSH's meanings with GatewayPorts=clientspecified):
 * "localhost" (what ssh sends for `-R port:...`) is both loopbacks, "" and
 * "*" (`-R :port:...`, `-R *:port:...`) are all interfaces, an IP literal
 * is that address. Other host names are refused: resolving names the
 * client picks would let it bind wherever DNS points.
 */
export function resolveBindAddress(requested: string): BindTarget | string {
  const lower = requested.toLowerCase();
  if (lower === "localhost") {
    return { requested, scope: "loopback", hosts: [{ host: "127.0.0.1" }, { host: "::1", optional: true }] };
  }
  if (lower === "" || lower === "*") return { requested, scope: "any", hosts: [{ host: "::" }] };
  if (lower === "0.0.0.0") return { requested, scope: "any", hosts: [{ host: "0.0.0.0" }] };
  if (lower === "::") return { requested, scope: "any", hosts: [{ host: "::", ipv6Only: true }] };
  const family = net.isIP(requested);
  if (family === 0) return `bind address "${requested}" is not an IP address or "localhost"`;
  const loopback = family === 4 ? requested.startsWith("127.") : lower === "::1";
  return { requested, scope: loopback ? "loopback" : "specific", hosts: [{ host: requested }] };
}

/**
 * May a key with `options` listen on `target`:`port`? Returns undefined when
 * it may, else the reason.
 *
 * With permitlisten lines, one must match: port equal (or `*`; 0 asks for
 * allocation and must be listed as 0), host matched as an ssh pattern
 * against the client's bind string lowercased (so "localhost" and
 * "127.0.0.1" differ, as in sshd). A bare-port permitlisten, or no
 * permitlisten at all, keeps the default address rule: loopback only unless
 * the relay runs with gateway ports. Without permitlisten, ports below 1024
 * are refused.
 */
export function checkListen(
  options: KeyOptions,
  target: BindTarget,
  port: number,
  gatewayPorts: boolean,
): string | undefined {
  if (!options.portForwarding)
    return "port forwarding is disabled for this key (restrict / no-port-forwarding)";
  const addressOk = target.scope === "loopback" || gatewayPorts;
  if (options.permitListen.length > 0) {
    const requested = target.requested.toLowerCase();
    const hit = options.permitListen.some((p) => {
      if (p.port !== "any" && p.port !== port) return false;
      return p.host === undefined ? addressOk : matchPattern(requested, p.host);
    });
    if (hit) return undefined;
    return `not allowed by permitlisten (${options.permitListen.map((p) => p.text).join(", ")})`;
  }
  if (port !== 0 && port < 1024) return `port ${port} is privileged: list it in permitlisten to allow it`;
  if (!addressOk)
    return `bind address "${target.requested}" is not loopback: needs permitlisten or --gateway-ports`;
  return undefined;
}

/**
 * Where a permitted request actually listens. Without gateway ports this is
 * loopback whatever the client asked, as sshd does with `GatewayPorts no`
 * (OpenSSH channels.c channel_fwd_bind_addr: on the server side, unless
 * gateway_ports is set, only a literal "127.0.0.1" or "::1" is kept and every
 * other address becomes the loopback default). permitlisten was matched
 * against what the client asked (checkListen above), so `permitlisten="*:9002"`
 * admits `-R *:9002:...` but, without --gateway-ports, on loopback only
 * (before: every interface, issue 12 item 7). `requested` is kept: the
 * forwarded-tcpip channels must name the address as the client sent it.
 */
export function listenTarget(target: BindTarget, gatewayPorts: boolean): BindTarget {
  if (gatewayPorts || target.scope === "loopback") return target;
  return {
    requested: target.requested,
    scope: "loopback",
    hosts: [{ host: "127.0.0.1" }, { host: "::1", optional: true }],
  };
}
