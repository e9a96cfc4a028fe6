/**
 * Turns a tunnel's events into log lines: one line per state change, with
 * per-connection detail at debug level. ssh's own "Allocated port" line is
 * printed verbatim for port-0 forwards, since scripts parse it.
 */
import type { Tunnel } from "../agent/tunnel.js";
import { formatEndpoint } from "../shared/address.js";
import type { Logger } from "../shared/log.js";

export function logTunnel(tunnel: Tunnel, log: Logger, stderr: NodeJS.WritableStream): void {
  const allocated = new Set<string>();
  tunnel.on("connecting", (e) =>
    log.info({ event: "connecting", attempt: e.attempt }, `connecting to ${e.host} port ${e.port}`),
  );
  tunnel.on("host-key", (e) => {
    if (e.status === "recorded")
      log.warn({ event: "host-key-recorded", file: e.file }, "new host key recorded");
    else if (e.certificate)
      log.debug(
        { event: "host-certificate", certificate: e.certificate, file: e.file },
        `host certificate ${e.certificate} trusted by an @cert-authority line in ${e.file}`,
      );
  });
  tunnel.on("certificate", (e) =>
    log[e.action === "renewed" ? "info" : e.action === "expired" ? "error" : "warn"](
      { event: `certificate-${e.action}`, file: e.file },
      e.message,
    ),
  );
  let hooksReported = false;
  tunnel.on("connected", (e) => {
    log.info(
      { event: "connected", handshakeMs: e.handshakeMs, server: e.serverVersion },
      `connected in ${e.handshakeMs} ms`,
    );
    if (hooksReported) return;
    hooksReported = true;
    for (const h of e.inactiveHooks)
      log.debug({ event: "ssh2-hook-inactive", hook: h.name }, `ssh2 hook ${h.name} inactive: no ${h.needs}`);
  });
  tunnel.on("connect-failed", (e) => {
    const line = { event: "connect-failed", reason: e.reason, attempt: e.attempt };
    // After the tunnel was up once, a refused login is retried, but loudly.
    if (e.reason === "auth") log.error(line, e.error.message);
    else log.warn(line, e.error.message);
  });
  tunnel.on("forward-bound", (e) => {
    const target = formatEndpoint(e.forward.target);
    const b = e.forward.bind;
    if (b.kind === "tcp" && b.port === 0 && e.port !== undefined) {
      const key = `${e.forward.text}:${e.port}`;
      if (!allocated.has(key)) {
        allocated.add(key);
        stderr.write(`Allocated port ${e.port} for remote forward to ${target}\n`);
      }
    }
    log.info(
      { event: "forward-bound", forward: e.forward.text, port: e.port },
      `forward ${e.forward.text} bound${e.port !== undefined ? ` on port ${e.port}` : ""}`,
    );
  });
  tunnel.on("forward-failed", (e) =>
    log.warn(
      { event: "forward-failed", forward: e.forward.text, retryInMs: e.retryInMs },
      `remote port forwarding failed for ${e.forward.text}: ${e.reason}${e.retryInMs !== undefined ? `; retrying in ${e.retryInMs} ms` : ""}`,
    ),
  );
  // Per-connection lines only at -v: building them costs CPU on every connection.
  if (log.isLevelEnabled("debug")) {
    tunnel.on("connection-open", (e) =>
      log.debug(
        { event: "connection-open", id: e.id, forward: e.forward.text, origin: e.origin },
        "connection opened",
      ),
    );
    tunnel.on("connection-close", (e) =>
      log.debug(
        {
          event: "connection-close",
          id: e.id,
          bytesIn: e.bytesIn,
          bytesOut: e.bytesOut,
          durationMs: e.durationMs,
          ...(e.error ? { error: e.error } : {}),
        },
        "connection closed",
      ),
    );
  }
  tunnel.on("connection-rejected", (e) =>
    log.warn(
      { event: "connection-rejected", forward: e.forward.text, origin: e.origin },
      `connection refused locally: ${e.reason}`,
    ),
  );
  tunnel.on("disconnected", (e) =>
    log.warn(
      { event: "disconnected", reason: e.reason, upMs: e.upMs },
      `disconnected: ${e.error?.message ?? e.reason}`,
    ),
  );
  tunnel.on("retrying", (e) =>
    log.info(
      { event: "retrying", delayMs: e.delayMs, attempt: e.attempt },
      `next attempt in ${e.delayMs} ms`,
    ),
  );
}
