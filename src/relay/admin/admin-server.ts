/**
 * The relay's admin endpoint, one node:http server: `GET /api/sessions` (the
 * inventory, JSON), `GET /api/events` (server-sent events for session,
 * binding and connection changes), `/metrics` and `/healthz` (as
 * shared/metrics-server.ts serves them), and the operator's page at `/`
 * (static files from the package's assets/admin/).
 *
 * Access control is a bearer token rather than client certificates: a token
 * works unchanged from curl, a browser page and Prometheus
 * (`authorization: { credentials_file: ... }`), and needs no PKI to issue or
 * revoke. The server speaks plain HTTP: beyond loopback, TLS is expected from
 * the reverse proxy in front (which also carries the operator's own auth),
 * so the token only has to keep the endpoint from being world-readable on the
 * proxy's network. `requireToken` refuses to start without one; the CLI sets
 * it for any non-loopback address.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { RevtunError } from "../../shared/errors.js";
import { type Health, sendMetrics } from "../../shared/metrics-server.js";
import type { RelayEventName } from "../events.js";
import type { Relay } from "../relay.js";
import { devicesEvent, serveDevices } from "./devices-api.js";
import { isEnrollmentPath, serveEnrollmentApi } from "./enrollment-api.js";
import { Inventory, type SessionRecord } from "./inventory.js";
import { SseHub } from "./sse.js";

/** The events the page and `/api/events` clients see: what changes the inventory. */
export const ADMIN_EVENT_NAMES = [
  "session-opened",
  "session-closed",
  "forward-bound",
  "forward-released",
  "forwarded-open",
  "forwarded-closed",
] as const satisfies readonly RelayEventName[];

/** `revtun relay --admin PORT` and `revtun relay status` meet here unless told otherwise. */
export const DEFAULT_ADMIN_PORT = 9466;

export interface AdminServerOptions {
  relay: Relay;
  host: string;
  port: number;
  /** Bearer token every request but /healthz must carry, when set. */
  token?: string;
  /** Refuse to start without a token (the CLI sets it for non-loopback addresses). */
  requireToken?: boolean;
  /** /healthz body; default: ok while the relay listens, with session and forward counts. */
  health?: () => Health;
  /** Heartbeat comment interval on /api/events (default 15 s). */
  heartbeatMs?: number;
  /** Bytes queued for one event client before it is dropped (default 1 MiB). */
  maxQueueBytes?: number;
  /** Event-stream clients at once; more get 503 (default 64: with maxQueueBytes, 64 MiB at worst). */
  maxEventClients?: number;
}

export interface AdminServer {
  readonly address: { host: string; port: number };
  readonly inventory: Inventory;
  /** Event-stream clients connected now, and dropped for falling behind since start. */
  eventClients(): { connected: number; dropped: number };
  close(): Promise<void>;
}

/** 127.0.0.0/8, ::1, their IPv4-mapped forms, and "localhost". */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, "");
  if (h === "localhost" || h === "::1" || h === "0:0:0:0:0:0:0:1") return true;
  const v4 = h.startsWith("::ffff:") ? h.slice(7) : h;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4);
}

const ASSETS: Record<string, string> = {
  "/": "index.html",
  "/index.html": "index.html",
  "/app.js": "app.js",
  "/style.css": "style.css",
};
const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
};
// The page loads only its own files: no inline script, nothing from elsewhere,
// so even a string that escaped escaping could not run.
const PAGE_HEADERS = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store",
};

/** The page's files, read once: they ship in the package next to dist/. */
function loadAssets(): Map<string, { type: string; body: Buffer }> {
  const dir = new URL("../../../assets/admin/", import.meta.url);
  const out = new Map<string, { type: string; body: Buffer }>();
  for (const [path, file] of Object.entries(ASSETS)) {
    let body: Buffer;
    try {
      body = readFileSync(new URL(file, dir));
    } catch (err) {
      throw new RevtunError("CONFIG", `admin page asset missing: ${(err as Error).message}`);
    }
    out.set(path, { type: TYPES[file.split(".").pop() ?? ""] ?? "application/octet-stream", body });
  }
  return out;
}

const digest = (s: string) => createHash("sha256").update(s).digest();

/** Constant-time: both sides are hashed first, so neither length nor content leaks through timing. */
function tokenMatches(header: string | undefined, expected: Buffer): boolean {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? "");
  const given = digest(m?.[1] ?? "");
  return timingSafeEqual(given, expected) && m !== null;
}

export function startAdminServer(opts: AdminServerOptions): Promise<AdminServer> {
  const token = opts.token === "" ? undefined : opts.token;
  if (opts.requireToken && token === undefined) {
    return Promise.reject(
      new RevtunError(
        "USAGE",
        `admin endpoint on ${opts.host}:${opts.port} is beyond loopback and needs a token (--admin-token-file or REVTUN_ADMIN_TOKEN)`,
      ),
    );
  }
  let assets: Map<string, { type: string; body: Buffer }>;
  try {
    assets = loadAssets();
  } catch (err) {
    return Promise.reject(err);
  }
  const expected = token !== undefined ? digest(token) : undefined;
  const { relay } = opts;
  const inventory = new Inventory(relay);
  const hub = new SseHub({
    heartbeatMs: opts.heartbeatMs ?? 15_000,
    maxQueueBytes: opts.maxQueueBytes ?? 1024 * 1024,
  });
  const listeners: [RelayEventName, (x: unknown) => void][] = ADMIN_EVENT_NAMES.map((name) => [
    name,
    (x: unknown) => hub.send(name, x),
  ]);
  const on = relay.on as (e: RelayEventName, fn: (x: unknown) => void) => Relay;
  const off = relay.off as (e: RelayEventName, fn: (x: unknown) => void) => Relay;
  for (const [name, fn] of listeners) on.call(relay, name, fn);
  // The fleet's devices (devices-api.ts): batched by the inventory, a few events a second at most.
  const onDevices = (ids: string[] | "all") => hub.send("devices", devicesEvent(relay.devices, ids));
  relay.devices.on("changed", onDevices);
  const maxEventClients = opts.maxEventClients ?? 64;
  const health =
    opts.health ??
    (() => ({
      ok: relay.listening,
      sessions: relay.authenticatedSessions().length,
      forwards: relay.forwards().length,
    }));

  const server = http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    // Enrollment (POST /api/tokens, /api/enrollments...): its own file, the same token.
    if (isEnrollmentPath(path))
      return serveEnrollmentApi(
        relay,
        req,
        res,
        path,
        !expected || tokenMatches(req.headers.authorization, expected),
      );
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    if (path === "/healthz") {
      const h = health();
      res.writeHead(h.ok ? 200 : 503, { "content-type": "application/json" });
      res.end(`${JSON.stringify(h)}\n`);
      return;
    }
    // Browsers ask for it on their own; a 401 or 404 would be an error in their console.
    if (path === "/favicon.ico") {
      res.writeHead(204, PAGE_HEADERS).end();
      return;
    }
    const asset = assets.get(path);
    // The page itself is public (it holds no data); everything it fetches is not.
    if (asset) {
      res.writeHead(200, { "content-type": asset.type, ...PAGE_HEADERS });
      res.end(req.method === "HEAD" ? undefined : asset.body);
      return;
    }
    if (expected && !tokenMatches(req.headers.authorization, expected)) {
      res.writeHead(401, { "content-type": "text/plain", "www-authenticate": 'Bearer realm="revtun relay"' });
      res.end("unauthorized: send Authorization: Bearer <token>\n");
      return;
    }
    if (path === "/api/sessions") {
      const body: { sessions: SessionRecord[]; generatedAt: string } = {
        generatedAt: new Date().toISOString(),
        sessions: inventory.sessions(),
      };
      res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
      res.end(`${JSON.stringify(body)}\n`);
      return;
    }
    if (serveDevices(relay.devices, path, (req.url ?? "").split("?")[1] ?? "", res)) return;
    if (path === "/api/events") {
      if (hub.size >= maxEventClients) {
        res.writeHead(503, { "content-type": "text/plain", "retry-after": "10" });
        res.end(`too many event clients (limit ${maxEventClients})\n`);
        return;
      }
      hub.add(req, res);
      return;
    }
    if (path === "/metrics") {
      sendMetrics(relay.registry, res);
      return;
    }
    res
      .writeHead(404, { "content-type": "text/plain" })
      .end("not found: try /, /api/sessions, /api/devices, /api/events, /metrics or /healthz\n");
  });
  server.keepAliveTimeout = 5_000;
  // Bounded: a client that opens sockets and sends nothing is cut off.
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  server.maxHeadersCount = 50;
  // An operator's browser, a scraper and a few scripts: a few hundred sockets is plenty.
  server.maxConnections = 256;

  const teardown = () => {
    for (const [name, fn] of listeners) off.call(relay, name, fn);
    relay.devices.off("changed", onDevices);
    inventory.close();
    hub.close();
  };
  return new Promise((resolve, reject) => {
    server.once("error", (err) => {
      teardown();
      reject(
        new RevtunError("LISTEN", `cannot listen for admin on ${opts.host}:${opts.port}: ${err.message}`),
      );
    });
    server.listen(opts.port, opts.host, () => {
      const a = server.address() as AddressInfo;
      resolve({
        address: { host: a.address, port: a.port },
        inventory,
        eventClients: () => ({ connected: hub.size, dropped: hub.dropped }),
        close: () =>
          new Promise<void>((r) => {
            teardown();
            server.close(() => r());
            server.closeAllConnections();
          }),
      });
    });
  });
}
