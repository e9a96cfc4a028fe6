/**
 * The admin API's enrollment calls (docs/enrollment.md), behind the same
 * bearer token as the rest of admin-server.ts:
 *
 *   POST /api/tokens                  {"name":"device42","ttl":"1h"} -> {"token","name","expiresAt"}
 *   GET  /api/enrollments               -> {"devices":[DeviceRecord...]}
 *   POST /api/enrollments/NAME/revoke     -> {"device":DeviceRecord}, 404 for an unknown name
 *
 * POSTs must say `content-type: application/json`: a web page can send a
 * cross-origin "simple" POST (text/plain, form) without asking, but not this
 * one, so a page an operator visits cannot revoke a device or mint a token
 * on a loopback admin port that has no token.
 */
import type http from "node:http";
import { RevtunError } from "../../shared/errors.js";
import { parseDuration } from "../enrollment/duration.js";
import { DEFAULT_TOKEN_TTL_MS } from "../enrollment/enrollment.js";
import type { Relay } from "../relay.js";

const MAX_BODY = 4096;

export function isEnrollmentPath(path: string): boolean {
  return path === "/api/tokens" || path === "/api/enrollments" || path.startsWith("/api/enrollments/");
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
  res.end(`${JSON.stringify(body)}\n`);
}

function readBody(req: http.IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (d: Buffer) => {
      size += d.length;
      if (size > MAX_BODY) {
        reject(new Error(`body larger than ${MAX_BODY} bytes`));
        req.destroy();
        return;
      }
      chunks.push(d);
    });
    req.on("error", reject);
    req.on("end", () => {
      try {
        const text = Buffer.concat(chunks).toString("utf8");
        resolve(text.trim() === "" ? {} : JSON.parse(text));
      } catch {
        reject(new Error("body is not JSON"));
      }
    });
  });
}

export function serveEnrollmentApi(
  relay: Relay,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  path: string,
  authorized: boolean,
): void {
  if (!authorized) {
    res.writeHead(401, { "content-type": "text/plain", "www-authenticate": 'Bearer realm="revtun relay"' });
    res.end("unauthorized: send Authorization: Bearer <token>\n");
    return;
  }
  const enrollment = relay.enrollment;
  if (!enrollment) {
    send(res, 409, { error: "this relay enrolls no devices: start it with --ca-key" });
    return;
  }
  const post = req.method === "POST";
  if (post && !/^application\/json\b/i.test(req.headers["content-type"] ?? "")) {
    send(res, 415, { error: "send content-type: application/json" });
    return;
  }
  const fail = (err: unknown) =>
    send(res, err instanceof RevtunError && err.code === "USAGE" ? 400 : 500, {
      error: (err as Error).message,
    });
  if (path === "/api/tokens" && post) {
    readBody(req)
      .then(async (body) => {
        const b = (body ?? {}) as { name?: unknown; ttl?: unknown };
        if (typeof b.name !== "string") throw new RevtunError("USAGE", 'body needs "name"');
        let ttlMs = DEFAULT_TOKEN_TTL_MS;
        if (b.ttl !== undefined) {
          const ms = typeof b.ttl === "string" ? parseDuration(b.ttl) : undefined;
          if (ms === undefined)
            throw new RevtunError("USAGE", `bad ttl ${JSON.stringify(b.ttl)}: expected 30m, 1h, 2d`);
          ttlMs = ms;
        }
        const t = await enrollment.issueToken(b.name, ttlMs);
        send(res, 200, { token: t.token, name: t.name, expiresAt: t.expiresAt.toISOString() });
      })
      .catch(fail);
    return;
  }
  if (path === "/api/enrollments" && (req.method === "GET" || req.method === "HEAD")) {
    enrollment
      .devices()
      .then((devices) => send(res, 200, { devices }))
      .catch(fail);
    return;
  }
  const m = /^\/api\/enrollments\/([^/]+)\/revoke$/.exec(path);
  if (m && post) {
    enrollment
      .revoke(decodeURIComponent(m[1] ?? ""))
      .then((device) => (device ? send(res, 200, { device }) : send(res, 404, { error: "no such device" })))
      .catch(fail);
    return;
  }
  res.writeHead(405, { "content-type": "text/plain" }).end("method not allowed\n");
}
