/** `--metrics [host:]port`: serves /healthz and /metrics for a command and logs where. */
import type { Registry } from "prom-client";
import type { Logger } from "../shared/log.js";
import { type Health, type MetricsServer, parseListen, serveMetrics } from "../shared/metrics-server.js";

export async function startMetrics(
  listen: string | { host: string; port: number } | undefined,
  registry: Registry,
  health: () => Health,
  log: Logger,
): Promise<MetricsServer | undefined> {
  if (listen === undefined) return undefined;
  const where = typeof listen === "string" ? parseListen(listen, "--metrics") : listen;
  const server = await serveMetrics({ ...where, registry, health });
  const { host, port } = server.address;
  log.info({ event: "metrics-listening", host, port }, `metrics on http://${host}:${port}/metrics`);
  return server;
}
