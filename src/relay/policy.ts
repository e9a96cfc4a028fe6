/**
 * Decisions, without I/O: may this key log in from this address, what does a
 * client's bind address mean, and may this key listen there.
 */
import net from "node:net";
import { quote } from "../shared/bounded-text.js";
import { CertChecker, type Certificate, type RevocationList } from "../shared/certificates/index.js";
import { RevtunError } from "../shared/errors.js";
import { fingerprintSha256 } from "../shared/keys.js";
import { matchPattern } from "../shared/patterns.js";
import { fromAllows, sourceAddressAllows } from "./address-match.js";
import type { AuthorizedKey, KeyOptions } from "./authorized-keys.js";
import { isTunnelName, parseTunnelName } from "./names.js";

export type KeyDecision =
  | { ok: true; key: AuthorizedKey; certificate?: Certificate }
  | { ok: false; reason: "unknown-key" | "from-not-allowed" | "expired" | "revoked" | (string & {}) };

/**
 * Finds the line that admits `blob` from `peerIp` at `now`. Like sshd, a
 * key listed on several lines is admitted by the first whose `from=` and
 * `expiry-time=` pass; the refusal reason is the most specific one seen.
 * A cert-authority line never admits its own key (it is a CA).
 */
export function authorizeKey(
  keys: readonly AuthorizedKey[],
  blob: Buffer,
  peerIp: string,
  now: Date,
): KeyDecision {
  let reason: "unknown-key" | "from-not-allowed" | "expired" = "unknown-key";
  for (const key of keys) {
    if (key.options.certAuthority || !key.blob.equals(blob)) continue;
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
 * Critical options the relay enforces. source-address is checked here;
 * force-command is moot: the relay runs no command for anyone (every
 * session channel is refused), as `command=` on a key line is.
 */
export const SUPPORTED_CRITICAL_OPTIONS = ["force-command", "source-address"];

/**
 * Finds the cert-authority line that admits user certificate `cert` for
 * login `username` from `peerIp` at `now`, as sshd's check_authkey_line:
 * the line's key is the certificate's CA and its `from=` and
 * `expiry-time=` pass; the certificate itself passes (CertChecker: type,
 * CA signature, revocation, validity, critical options, and the login name
 * among its principals when the line has no `principals=`); one of its
 * principals is in the line's `principals=`; the peer is in its
 * `source-address`. The key handed back is the line with the certificate's
 * limits merged in (certificateOptions). A refusal is one line naming what
 * failed.
 */
export function authorizeCertificate(
  keys: readonly AuthorizedKey[],
  cert: Certificate,
  peerIp: string,
  username: string,
  now: Date,
  revoked?: RevocationList,
): KeyDecision {
  const lines = keys.filter((k) => k.options.certAuthority && k.blob.equals(cert.signatureKey));
  const checker = (line: AuthorizedKey | undefined) =>
    new CertChecker({
      certType: "user",
      isAuthority: (ca) => line !== undefined && ca.equals(line.blob),
      ...(revoked ? { isRevoked: (c: Certificate) => revoked.isRevoked(c) } : {}),
      supportedCriticalOptions: SUPPORTED_CRITICAL_OPTIONS,
      clock: () => now,
      untrustedHint: "a cert-authority line in authorized_keys with that CA's public key would admit it",
    });
  if (lines.length === 0)
    return { ok: false, reason: refusal(() => checker(undefined).check(cert, undefined)) };
  let reason = "";
  for (const line of lines) {
    const o = line.options;
    if (o.from !== undefined && !fromAllows(o.from, peerIp)) {
      reason = `${peerIp} is not allowed by from="${o.from}" of the cert-authority line ${line.line}`;
      continue;
    }
    if (o.expiresAt && now.getTime() > o.expiresAt.getTime()) {
      reason = `the cert-authority line ${line.line} expired (expiry-time)`;
      continue;
    }
    // The checker first: nothing the certificate says is believed before its CA signature verifies.
    const failed = refusal(() => checker(line).check(cert, o.principals ? undefined : username));
    if (failed) {
      reason = failed;
      continue;
    }
    // principals= (match_principals_option): one certificate principal in the line's list.
    if (o.principals && !cert.principals.some((p) => o.principals?.includes(p))) {
      reason = `certificate ${quote(cert.keyId)} lists none of the principals of the cert-authority line ${line.line} (${o.principals.join(",")}); its principals are ${cert.principals.map(quote).join(", ") || "none"}`;
      continue;
    }
    const from = cert.criticalOptions.get("source-address");
    if (from !== undefined) {
      const allowed = sourceAddressAllows(from, peerIp);
      if (allowed !== true) {
        reason =
          allowed === "malformed"
            ? `certificate ${quote(cert.keyId)} has a malformed source-address ${quote(from)}`
            : `certificate ${quote(cert.keyId)} is not valid from ${peerIp} (source-address ${quote(from)})`;
        continue;
      }
    }
    return { ok: true, key: { ...line, options: certificateOptions(o, cert) }, certificate: cert };
  }
  return { ok: false, reason };
}

/** The checker's one line, or "" when `fn` passes. */
function refusal(fn: () => void): string {
  try {
    fn();
    return "";
  } catch (err) {
    if (err instanceof RevtunError) return err.message;
    throw err;
  }
}

/**
 * A certificate session's options: the line's, narrowed by the
 * certificate as sshd merges them (sshauthopt_merge): forwarding needs
 * the line's permission and the certificate's `permit-port-forwarding`
 * extension (`ssh-keygen -O clear` leaves it out: such a certificate logs
 * in and forwards nothing, listening or reaching), and the names it may
 * bind are its principals.
 */
export function certificateOptions(o: KeyOptions, cert: Certificate): KeyOptions {
  const permitted = cert.extensions.has("permit-port-forwarding");
  return {
    ...o,
    portForwarding: o.portForwarding && permitted,
    permitOpen: permitted ? o.permitOpen : [],
    tunnelNames: cert.principals.map((p) => p.toLowerCase()),
    ...(permitted
      ? {}
      : {
          forwardingDenied: `certificate ${quote(cert.keyId)} does not permit port forwarding (no permit-port-forwarding extension: signed with -O clear?)`,
        }),
  };
}

/** How a certificate session's key is named in records: the certified key's fingerprint. */
export function certifiedFingerprint(cert: Certificate): string {
  return fingerprintSha256(cert.publicKey);
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
  /** "name": a tunnel name (names.ts): held in the table, no socket listens. */
  scope: "loopback" | "any" | "specific" | "name";
  hosts: ListenHost[];
  /** The canonical (lowercase) tunnel name, for scope "name". */
  name?: string;
}

/**
 * What a tcpip-forward bind address means (RFC 4254 7.1 leaves it to the
 * server; these are OpenSSH's meanings with GatewayPorts=clientspecified):
 * "localhost" (what ssh sends for `-R port:...`) is both loopbacks, "" and
 * "*" (`-R :port:...`, `-R *:port:...`) are all interfaces, an IP literal
 * is that address. Any other string is a tunnel name (names.ts): never
 * resolved (that would let a client bind wherever DNS points) and never
 * listened on; operators reach it through the relay with direct-tcpip.
 * `port` is the port asked for: a name needs a fixed one, since the
 * operator names it (`ssh -W device42:22`).
 */
export function resolveBindAddress(requested: string, port?: number): BindTarget | string {
  const lower = requested.toLowerCase();
  if (isTunnelName(requested)) {
    const parsed = parseTunnelName(requested);
    if ("error" in parsed) return `bad tunnel name ${quote(requested)}: ${parsed.error}`;
    if (port === 0) return `a tunnel name needs a fixed port (${quote(requested)} with port 0)`;
    return { requested, scope: "name", hosts: [], name: parsed.name };
  }
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
    return (
      options.forwardingDenied ?? "port forwarding is disabled for this key (restrict / no-port-forwarding)"
    );
  if (target.scope === "name") {
    // Only a permitlisten naming it (by pattern) grants a name: a bare port
    // or no permitlisten would let any forwarding key claim any device's
    // name. Gateway ports are moot, nothing listens.
    const name = target.name ?? target.requested.toLowerCase();
    // A certificate binds its own names only: one CA line with
    // permitlisten="*:22" serves a fleet, and device42's certificate
    // cannot claim device43.
    if (options.tunnelNames && !options.tunnelNames.includes(name))
      return `tunnel name ${name} is not a principal of this certificate (${options.tunnelNames.join(", ") || "none"})`;
    const hit = options.permitListen.some(
      (p) => p.host !== undefined && (p.port === "any" || p.port === port) && matchPattern(name, p.host),
    );
    if (hit) return undefined;
    return options.permitListen.length > 0
      ? `tunnel name ${name}:${port} not allowed by permitlisten (${options.permitListen.map((p) => p.text).join(", ")})`
      : `tunnel name ${name}:${port} needs a permitlisten naming it (permitlisten="${name}:${port}")`;
  }
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
  if (gatewayPorts || target.scope === "loopback" || target.scope === "name") return target;
  return {
    requested: target.requested,
    scope: "loopback",
    hosts: [{ host: "127.0.0.1" }, { host: "::1", optional: true }],
  };
}

/**
 * May a key with `options` open a direct-tcpip channel to `host`:`port`?
 * Only tunnel names are ever reachable; a permitopen host pattern must
 * match the name (lowercased), the port equal or `*`.
 */
export function checkOpen(options: KeyOptions, host: string, port: number): boolean {
  if (!isTunnelName(host)) return false;
  const name = host.toLowerCase();
  return options.permitOpen.some((p) => (p.port === "any" || p.port === port) && matchPattern(name, p.host));
}
