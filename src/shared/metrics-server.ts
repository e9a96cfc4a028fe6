/**
 * The HTTP endpoint monitoring systems scrape: `/metrics` (Prometheus text
 * format, from a prom-client registry) and `/healthz` (200 or 503 with a small
 * JSON body). Shared by the agent and the relay.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";
import { quote } from "./bounded-text.js";
import { RevtunError } from "./errors.js";

export interface Health {
  ok: boolean;
  [key: string]: unknown;
}

export interface MetricsServerOptions {
  host: string;
  port: number;
  registry: Registry;
  health: () => Health;
}

export interface MetricsServer {
  readonly address: { host: string; port: number };
  close(): Promise<void>;
}

/** Parses `[host:]port` (host defaults to loopback: metrics are not for the world unless asked). */
export function parseListen(value: string, what: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]:|([^:[\]]*):)?(\d+)$/.exec(value.trim());
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port > 65535) {
    throw new RevtunError("USAGE", `bad ${what} ${quote(value)}: expected [host:]port, port 0-65535`);
  }
  const host = m[1] ?? m[2] ?? "127.0.0.1";
  return { host: host === "" || host === "*" ? "0.0.0.0" : host, port };
}

/** Answers a /metrics request with the registry's text exposition (500 and the reason if it fails). */
export function sendMetrics(registry: Registry, res: http.ServerResponse): void {
  registry.metrics().then(
    (text) => {
      res.writeHead(200, { "content-type": registry.contentType });
      res.end(text);
    },
    (err: Error) => {
      res.writeHead(500, { "content-type": "text/plain" });
      res.end(`${err.message}\n`);
    },
  );
}

export function serveMetrics(opts: MetricsServerOptions): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    if (path === "/healthz") {
      const h = opts.health();
      res.writeHead(h.ok ? 200 : 503, { "content-type": "application/json" });
      res.end(`${JSON.stringify(h)}\n`);
      return;
    }
    if (path === "/metrics") {
      sendMetrics(opts.registry, res);
      return;
    }
    res.writeHead(404, { "content-type": "text/plain" }).end("not found: try /healthz or /metrics\n");
  });
  server.keepAliveTimeout = 5_000;
  return new Promise((resolve, reject) => {
    server.once("error", (err) =>
      reject(
        new RevtunError("USAGE", `cannot listen for metrics on ${opts.host}:${opts.port}: ${err.message}`),
      ),
    );
    server.listen(opts.port, opts.host, () => {
      const a = server.address() as AddressInfo;
      resolve({
        address: { host: a.address, port: a.port },
        close: () =>
          new Promise<void>((r) => {
            server.close(() => r());
            server.closeAllConnections();
          }),
      });
    });
  });
}
