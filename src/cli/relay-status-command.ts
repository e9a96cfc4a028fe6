/**
 * `revtun relay status`: the running relay's sessions (its admin API's
 * /api/sessions) as a table, one row per session, then every device of the
 * fleet (/api/devices: held by this worker, the others and other relays,
 * online and offline), or the sessions as JSON. `revtun relay devices`: the
 * devices alone, with filters, or as JSON. Exit 0; 255 with one line when
 * the admin API cannot be reached or refuses; 2 for bad flags.
 */

import http from "node:http";
import type { ParseArgsConfig } from "node:util";
import { DEFAULT_ADMIN_PORT } from "../relay/admin/admin-server.js";
import type { SessionRecord } from "../relay/admin/inventory.js";
import type { DevicePage, DeviceView } from "../relay/inventory/devices.js";
import { formatHostPort } from "../shared/address.js";
import { RevtunError } from "../shared/errors.js";
import { parseListen } from "../shared/metrics-server.js";
import { formatBytes as bytes, formatDeviceCounts, formatDevices } from "./devices-format.js";
import { parseLongOptions } from "./long-options.js";
import { exitCodeFor, type Io, readSecret } from "./process.js";

export const RELAY_STATUS_USAGE = `usage: revtun relay status [--json] [--admin host:port] [--admin-token-file FILE]

  --admin [host:]port      the relay's --admin address (default 127.0.0.1:${DEFAULT_ADMIN_PORT})
  --admin-token-file FILE  bearer token (first line); or the env REVTUN_ADMIN_TOKEN
  --json                   the inventory as JSON, as /api/sessions serves it
  -h, --help               this text

Then every device of the fleet (revtun relay devices lists them alone).
`;

export const RELAY_DEVICES_USAGE = `usage: revtun relay devices [--state online|offline] [--name TEXT] [--json] [--admin host:port] [--admin-token-file FILE]

  every device of the fleet, online and offline, wherever it is (relay, worker) or was last seen
  --state online|offline   only those
  --name TEXT              only devices whose name, key comment, fingerprint or binding contains TEXT
  --admin [host:]port      the relay's --admin address (default 127.0.0.1:${DEFAULT_ADMIN_PORT})
  --admin-token-file FILE  bearer token (first line); or the env REVTUN_ADMIN_TOKEN
  --json                   the devices as JSON, as /api/devices serves them
  -h, --help               this text
`;

export const RELAY_DEVICES_OPTIONS = {
  ...{
    admin: { type: "string" },
    "admin-token-file": { type: "string" },
    json: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  },
  state: { type: "string" },
  name: { type: "string" },
} as const satisfies ParseArgsConfig["options"];

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

function get(host: string, port: number, token: string | undefined, path = "/api/sessions"): Promise<string> {
  return new Promise((resolve, reject) => {
    const where = formatHostPort(host, port);
    const fail = (why: string) =>
      reject(new RevtunError("CONNECT", `cannot read the relay's admin API at ${where}: ${why}`));
    const req = http.get(
      {
        host,
        port,
        path,
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

/** Pages of 1,000 at most this many: 100,000 devices. */
const MAX_PAGES = 100;

/** Every device matching `filter` (state=...&name=...), page after page. */
async function allDevices(
  host: string,
  port: number,
  token: string | undefined,
  filter: URLSearchParams,
): Promise<{ devices: DeviceView[]; counts: DevicePage["counts"] }> {
  const devices: DeviceView[] = [];
  let counts: DevicePage["counts"] = { online: 0, offline: 0 };
  for (let page = 1; page <= MAX_PAGES; page++) {
    const q = new URLSearchParams(filter);
    q.set("page", String(page));
    q.set("per_page", "1000");
    const text = await get(host, port, token, `/api/devices?${q}`);
    let body: DevicePage & { pages: number };
    try {
      body = JSON.parse(text) as DevicePage & { pages: number };
      if (!Array.isArray(body.devices) || typeof body.pages !== "number") throw new Error("no devices array");
    } catch (err) {
      throw new RevtunError(
        "CONNECT",
        `the admin API's answer is not a device list: ${(err as Error).message}`,
      );
    }
    devices.push(...body.devices);
    counts = body.counts;
    if (page >= body.pages) break;
  }
  return { devices, counts };
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
    if (values.json) {
      io.stdout.write(`${JSON.stringify(body.sessions, null, 2)}\n`);
      return 0;
    }
    const fleet = await allDevices(host, where.port, token, new URLSearchParams());
    io.stdout.write(
      `${formatTable(body.sessions)}\n${formatDeviceCounts(fleet.counts)}${formatDevices(fleet.devices)}`,
    );
    return 0;
  } catch (err) {
    io.stderr.write(`revtun relay status: ${(err as Error).message}\n`);
    return exitCodeFor(err);
  }
}

export async function relayDevicesCommand(
  argv: string[],
  io: Pick<Io, "stdout" | "stderr" | "env">,
): Promise<number> {
  let values: {
    admin?: string;
    "admin-token-file"?: string;
    json?: boolean;
    help?: boolean;
    state?: string;
    name?: string;
  };
  let where: { host: string; port: number };
  try {
    values = parseLongOptions(argv, RELAY_DEVICES_OPTIONS) as typeof values;
    if (values.state !== undefined && values.state !== "online" && values.state !== "offline")
      throw new RevtunError("USAGE", `--state ${JSON.stringify(values.state)}: expected online or offline`);
    where = values.admin
      ? parseListen(values.admin, "--admin")
      : { host: "127.0.0.1", port: DEFAULT_ADMIN_PORT };
  } catch (err) {
    io.stderr.write(`revtun relay devices: ${(err as Error).message}\n${RELAY_DEVICES_USAGE}`);
    return 2;
  }
  if (values.help) {
    io.stdout.write(RELAY_DEVICES_USAGE);
    return 0;
  }
  try {
    const token =
      (await readSecret(values["admin-token-file"], io.env.REVTUN_ADMIN_TOKEN))?.trim() || undefined;
    const host = where.host === "0.0.0.0" ? "127.0.0.1" : where.host === "::" ? "::1" : where.host;
    const filter = new URLSearchParams();
    if (values.state) filter.set("state", values.state);
    if (values.name) filter.set("name", values.name);
    const fleet = await allDevices(host, where.port, token, filter);
    io.stdout.write(
      values.json
        ? `${JSON.stringify(fleet.devices, null, 2)}\n`
        : `${formatDeviceCounts(fleet.counts)}${formatDevices(fleet.devices)}`,
    );
    return 0;
  } catch (err) {
    io.stderr.write(`revtun relay devices: ${(err as Error).message}\n`);
    return exitCodeFor(err);
  }
}
