/**
 * Typed errors. The CLI maps `code` to an exit status and prints `message`
 * as the one line a user sees, so each message names the offending value
 * and, where there is one, the fix.
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
  | "FORWARD" // the server refused a forward (ExitOnForwardFailure)
  | "PROTOCOL";

export class RevtunError extends Error {
  override readonly name = "RevtunError";
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
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

/** `value (type)` for messages, in the style "got `x` (string)". */
export function describe(value: unknown): string {
  return `\`${String(value)}\` (${value === null ? "null" : typeof value})`;
}
