/**
 * Error classification: the short reason logs and metrics use for a failed
 * connection or a lost session, from socket errno codes and ssh2's error
 * levels (never from message text).
 */
import { type FailureReason, RevtunError } from "../shared/errors.js";

type Ssh2Error = Error & { level?: string; code?: string };

/**
 * Turns ssh2 and socket errors into a reason. ssh2 gives both of its
 * timeouts the level "client-timeout": before the session is ready it is the
 * handshake's readyTimeout, after it the keepalive (lib/client.js), so
 * `ready` tells them apart.
 */
export function classify(err: Ssh2Error, ready = false): FailureReason {
  if (err instanceof RevtunError) return err.reason ?? (err.code.toLowerCase() as FailureReason);
  const code = err.code;
  if (code === "ECONNREFUSED") return "refused";
  if (code === "ECONNRESET" || code === "EPIPE") return "reset";
  if (code === "ENOTFOUND" || code === "EAI_AGAIN" || err.level === "client-dns") return "dns";
  if (code === "ETIMEDOUT" || code === "EHOSTUNREACH" || code === "ENETUNREACH") return "unreachable";
  if (err.level === "client-timeout") return ready ? "keepalive-timeout" : "timeout";
  if (err.level === "client-authentication") return "auth";
  if (err.level === "protocol") return "protocol";
  return "error";
}
