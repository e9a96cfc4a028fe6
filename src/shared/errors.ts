/**
 * Typed errors. The CLI maps `code` to an exit status and prints `message`
 * as the one line a user sees, so each message names the offending value
 * and, where there is one, the fix. `reason` is the short, stable word logs
 * and metrics use for a failure ("refused", "keepalive-timeout", ...).
 */
export type ErrorCode =
  | "USAGE" // bad flag, spec or option value
  | "CONFIG" // a config file could not be read or is invalid
  | "HOSTKEY_UNKNOWN"
  | "HOSTKEY_MISMATCH"
  | "HOSTKEY_REVOKED"
  | "AUTH" // every method was tried and refused, or a secret is wrong
  | "IDENTITY" // an identity file is missing or unreadable
  | "CONNECT" // network-level: refused, reset, timeout, DNS
  | "LISTEN" // a server (relay, metrics) cannot listen where it was asked to
  | "FORWARD" // the server refused a forward (ExitOnForwardFailure)
  | "CERTIFICATE" // an OpenSSH certificate or revocation list is malformed, untrusted or refused
  | "PROTOCOL";

/** Why a connection or session failed, as logs and the `reason` metric label say it. */
export type FailureReason =
  | "refused"
  | "reset"
  | "dns"
  | "unreachable"
  | "timeout"
  | "keepalive-timeout"
  | "auth"
  | "protocol"
  | "closed-by-server"
  | "shutdown"
  | "error"
  | Lowercase<ErrorCode>;

export class RevtunError extends Error {
  override readonly name = "RevtunError";
  /** The failure's short reason; undefined where the code says it all. */
  readonly reason: FailureReason | undefined;
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown; reason?: FailureReason },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.reason = options?.reason;
  }

  /** The same error with `prefix: ` in front of its message (a jump host's label, say). */
  prefixed(prefix: string): RevtunError {
    return new RevtunError(this.code, `${prefix}: ${this.message}`, {
      cause: this,
      ...(this.reason ? { reason: this.reason } : {}),
    });
  }
}

/** Failures that no amount of retrying fixes: the supervisor stops on these. */
export function isPermanent(err: unknown): boolean {
  if (!(err instanceof RevtunError)) return false;
  return (
    err.code === "HOSTKEY_MISMATCH" ||
    err.code === "HOSTKEY_REVOKED" ||
    err.code === "HOSTKEY_UNKNOWN" ||
    err.code === "USAGE" ||
    err.code === "CONFIG" ||
    err.code === "IDENTITY"
  );
}

/** `value (type)` for messages, in execa's style "got `x` (string)". */
export function describe(value: unknown): string {
  const type = value === null ? "null" : Array.isArray(value) ? "array" : typeof value;
  const text = typeof value === "string" ? value : (JSON.stringify(value) ?? String(value));
  return `\`${text}\` (${type})`;
}
