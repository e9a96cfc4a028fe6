/**
 * A call to the running relay's admin API for `revtun relay token`, `revoke`
 * and `devices`: the --admin / --admin-token-file flags they share with
 * `relay status`, one JSON request, the JSON answer or a one-line error.
 */
import http from "node:http";
import { DEFAULT_ADMIN_PORT } from "../relay/admin/admin-server.js";
import { formatHostPort } from "../shared/address.js";
import { RevtunError } from "../shared/errors.js";
import { parseListen } from "../shared/metrics-server.js";
import { readSecret } from "./process.js";

/** The whole request, connect to last byte: a hung relay must not hang the command. */
const TIMEOUT_MS = 10_000;
const MAX_BODY = 16 * 1024 * 1024;

export const ADMIN_FLAGS = {
  admin: { type: "string" },
  "admin-token-file": { type: "string" },
} as const;

export const ADMIN_USAGE = `  --admin [host:]port      the relay's --admin address (default 127.0.0.1:${DEFAULT_ADMIN_PORT})
  --admin-token-file FILE  bearer token (first line); or the env REVTUN_ADMIN_TOKEN
`;

export interface AdminTarget {
  host: string;
  port: number;
  token: string | undefined;
}

export async function adminTarget(
  values: { admin?: string | undefined; "admin-token-file"?: string | undefined },
  env: Record<string, string | undefined>,
): Promise<AdminTarget> {
  const where = values.admin
    ? parseListen(values.admin, "--admin")
    : { host: "127.0.0.1", port: DEFAULT_ADMIN_PORT };
  const host = where.host === "0.0.0.0" ? "127.0.0.1" : where.host === "::" ? "::1" : where.host;
  const token = (await readSecret(values["admin-token-file"], env.REVTUN_ADMIN_TOKEN))?.trim() || undefined;
  return { host, port: where.port, token };
}

/** Sends `body` (POST) or nothing (GET) to `path`; resolves the JSON answer of a 200. */
export function adminCall(
  t: AdminTarget,
  method: "GET" | "POST",
  path: string,
  body?: unknown,
): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const where = formatHostPort(t.host, t.port);
    const fail = (why: string) => reject(new RevtunError("CONNECT", `relay admin API at ${where}: ${why}`));
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      {
        host: t.host,
        port: t.port,
        path,
        method,
        headers: {
          ...(t.token ? { authorization: `Bearer ${t.token}` } : {}),
          ...(payload !== undefined ? { "content-type": "application/json" } : {}),
        },
        timeout: TIMEOUT_MS,
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (d: Buffer) => {
          size += d.length;
          if (size > MAX_BODY) {
            req.destroy();
            fail(`answer larger than ${MAX_BODY} bytes`);
            return;
          }
          chunks.push(d);
        });
        res.on("error", (err) => fail(err.message));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let json: { error?: unknown } | undefined;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          if (res.statusCode === 401) {
            fail(
              t.token
                ? "the token was refused (401)"
                : "a token is required (401): --admin-token-file or REVTUN_ADMIN_TOKEN",
            );
          } else if (res.statusCode !== 200 || json === undefined) {
            const error = typeof json?.error === "string" ? json.error : text.trim().split("\n")[0];
            const code = res.statusCode === 400 || res.statusCode === 404 ? "USAGE" : "CONNECT";
            reject(new RevtunError(code, `${error} (HTTP ${res.statusCode})`));
          } else {
            resolve(json);
          }
        });
      },
    );
    const timer = setTimeout(() => {
      req.destroy();
      fail(`no answer within ${TIMEOUT_MS} ms`);
    }, TIMEOUT_MS);
    req.on("close", () => clearTimeout(timer));
    req.on("error", (err) => fail(err.message));
    req.end(payload);
  });
}
