/**
 * The fleet's devices over the admin API (issue 22): every device of every
 * relay and worker, online and offline, from the relay's inventory
 * (../inventory/devices.ts), which is in memory: a page is a filter and a
 * sort of at most the fleet's records, never a Redis round trip.
 *
 *   GET /api/devices?state=online|offline&name=SUBSTRING&page=N&per_page=M
 *     -> { generatedAt, counts: {online, offline}, total, page, perPage, pages,
 *          devices: [record + state] }   (times in ms since the epoch)
 *   GET /api/devices/history
 *     -> { history: [[minute since the epoch, devices online], ...] }  (24 h)
 *
 * The event stream carries `devices` events: { changed: [record + state],
 * removed: [id], counts } or { all: true, counts } (read the list again),
 * at most a few a second however busy the fleet is (devices.ts FLUSH_MS).
 */
import type http from "node:http";
import type { DeviceInventory, DeviceQuery } from "../inventory/devices.js";

const PER_PAGE_MAX = 1000;

function json(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
  res.end(`${JSON.stringify(body)}\n`);
}

function bad(res: http.ServerResponse, what: string): void {
  res.writeHead(400, { "content-type": "text/plain" });
  res.end(`${what}\n`);
}

/** Answers /api/devices and /api/devices/history; false for any other path. */
export function serveDevices(
  devices: DeviceInventory,
  path: string,
  search: string,
  res: http.ServerResponse,
): boolean {
  if (path === "/api/devices/history") {
    json(res, 200, { history: devices.onlineHistory() });
    return true;
  }
  if (path !== "/api/devices") return false;
  const q = new URLSearchParams(search);
  const query: DeviceQuery = {};
  const state = q.get("state");
  if (state !== null && state !== "" && state !== "all") {
    if (state !== "online" && state !== "offline") {
      bad(res, `state ${JSON.stringify(state.slice(0, 40))} is not online, offline or all`);
      return true;
    }
    query.state = state;
  }
  const name = q.get("name");
  if (name) query.name = name.slice(0, 256);
  for (const [param, key, max] of [
    ["page", "page", 1_000_000],
    ["per_page", "perPage", PER_PAGE_MAX],
  ] as const) {
    const v = q.get(param);
    if (v === null || v === "") continue;
    const n = Number(v);
    if (!/^\d{1,7}$/.test(v) || n < 1 || n > max) {
      bad(res, `${param} ${JSON.stringify(v.slice(0, 40))} is not a whole number from 1 to ${max}`);
      return true;
    }
    query[key] = n;
  }
  const page = devices.list(query);
  json(res, 200, {
    generatedAt: new Date().toISOString(),
    ...page,
    pages: Math.max(1, Math.ceil(page.total / page.perPage)),
  });
  return true;
}

/** The `devices` event for ids that changed (or "all"). */
export function devicesEvent(devices: DeviceInventory, ids: string[] | "all"): unknown {
  const counts = devices.totals();
  if (ids === "all") return { all: true, counts };
  const changed = [];
  const removed = [];
  for (const id of ids) {
    const v = devices.get(id);
    if (v) changed.push(v);
    else removed.push(id);
  }
  return { changed, removed, counts };
}
