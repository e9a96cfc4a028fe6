/**
 * `revtun relay status`: the running relay's inventory (its admin API's
 * /api/sessions) as a table, one row per session, or as JSON. Exit 0; 255
 * with one line when the admin API cannot be reached or refuses; 2 for bad
 * flags.
 */

import http from "node:http";
import type { ParseArgsConfig } from "node:util";
import { DEFAULT_ADMIN_PORT } from "../relay/admin/admin-server.js";
import type { SessionRecord } from "../relay/admin/inventory.js";
import { formatHostPort } from "../shared/address.js";
import { RevtunError } from "../shared/errors.js";
import { parseListen } from "../shared/metrics-server.js";
import { parseLongOptions } from "./long-options.js";
import { exitCodeFor, type Io, readSecret } from "./process.js";

export const RELAY_STATUS_USAGE = `usage: revtun relay status [--json] [--admin host:port] [--admin-token-file FILE]

  --admin [host:]port      the relay's --admin address (default 127.0.0.1:${DEFAULT_ADMIN_PORT})
  --admin-token-file FILE  bearer token (first line); or the env REVTUN_ADMIN_TOKEN
  --json                   the inventory as JSON, as /api/sessions serves it
  -h, --help               this text
`;

export const RELAY_STATUS_OPTIONS = {
  admin: { type: "string" },
  "admin-token-file": { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const satisfies ParseArgsConfig["options"];

/** The whole request, connect to last byte: a hung relay must not hang the command. */
const TIMEOUT_MS = 5_000;
/** An inventory is a few hundred bytes a session; this is ~30 000 sessions. */
const MAX_BODY = 16 * 1024 * 1024;

function get(host: string, port: number, token: string | undefined): Promise<string> {
  return new Promise((resolve, reject) => {
    const where = formatHostPort(host, port);
    const fail = (why: string) =>
      reject(new RevtunError("CONNECT", `cannot read the relay's admin API at ${where}: ${why}`));
    const req = http.get(
      {
        host,
        port,
        path: "/api/sessions",
        headers: token ? { authorization: `Bearer ${token}` } : {},
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
          if (res.statusCode === 401) {
            fail(
              token
                ? "the token was refused (401)"
                : "a token is required (401): --admin-token-file or REVTUN_ADMIN_TOKEN",
            );
          } else if (res.statusCode !== 200) {
            fail(`HTTP ${res.statusCode}`);
          } else {
            resolve(Buffer.concat(chunks).toString("utf8"));
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
  });
}

function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

/** Control characters in device-supplied strings (key comments) must not drive the terminal. */
const clean = (s: string) => s.replace(/[\p{Cc}\p{Cf}]/gu, "?");

export function formatTable(sessions: SessionRecord[]): string {
  if (sessions.length === 0) return "no sessions\n";
  const head = ["KEY", "FINGERPRINT", "PEER", "SINCE", "BINDINGS", "CONNS", "IN", "OUT"];
  const rows = sessions.map((s) => [
    // A certificate session's line comment is its CA's: the key id says which device it is.
    clean(s.certKeyId !== undefined ? `${s.certKeyId} (cert ${s.certSerial})` : s.keyComment) || "-",
    s.fingerprint.replace(/^SHA256:/, "").slice(0, 12),
    s.peer,
    s.since.replace(/\.\d+Z$/, "Z"),
    s.bindings.map((b) => b.address).join(",") || "-",
    String(s.connections),
    bytes(s.bytesIn),
    bytes(s.bytesOut),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => (i >= 5 ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return `${[head, ...rows].map(line).join("\n")}\n`;
}

export async function relayStatusCommand(
  argv: string[],
  io: Pick<Io, "stdout" | "stderr" | "env">,
): Promise<number> {
  let values: { admin?: string; "admin-token-file"?: string; json?: boolean; help?: boolean };
  let where: { host: string; port: number };
  try {
    values = parseLongOptions(argv, RELAY_STATUS_OPTIONS) as typeof values;
    where = values.admin
      ? parseListen(values.admin, "--admin")
      : { host: "127.0.0.1", port: DEFAULT_ADMIN_PORT };
  } catch (err) {
    io.stderr.write(`revtun relay status: ${(err as Error).message}\n${RELAY_STATUS_USAGE}`);
    return 2;
  }
  if (values.help) {
    io.stdout.write(RELAY_STATUS_USAGE);
    return 0;
  }
  try {
    const token =
      (await readSecret(values["admin-token-file"], io.env.REVTUN_ADMIN_TOKEN))?.trim() || undefined;
    const host = where.host === "0.0.0.0" ? "127.0.0.1" : where.host === "::" ? "::1" : where.host;
    const text = await get(host, where.port, token);
    let body: { sessions: SessionRecord[] };
    try {
      body = JSON.parse(text) as { sessions: SessionRecord[] };
      if (!Array.isArray(body.sessions)) throw new Error("no sessions array");
    } catch (err) {
      throw new RevtunError(
        "CONNECT",
        `the admin API's answer is not an inventory: ${(err as Error).message}`,
      );
    }
    io.stdout.write(values.json ? `${JSON.stringify(body.sessions, null, 2)}\n` : formatTable(body.sessions));
    return 0;
  } catch (err) {
    io.stderr.write(`revtun relay status: ${(err as Error).message}\n`);
    return exitCodeFor(err);
  }
}
