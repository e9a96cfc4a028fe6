/**
 * GET /api/devices and /api/devices/history (src/relay/admin/devices-api.ts)
 * on a relay whose state directory holds 1,000 devices from an earlier run
 * plus one connected now: every page under 300 ms, filters by state and
 * name, pages that add up to the whole, one-line 400s naming the bad value,
 * and the token required as for every other API path.
 */
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { type AdminServer, startAdminServer } from "../../../src/relay/admin/admin-server.js";
import type { DeviceRecord } from "../../../src/relay/inventory/device-record.js";
import { type Client, device, ed } from "../../helpers/fleet.js";
import { RelayFixture } from "../../helpers/relay.js";

const TOKEN = "api-token";

function stored(i: number, lastSeen: number): DeviceRecord {
  return {
    id: `SHA256:stored${String(i).padStart(5, "0")}`,
    names: [`pump-${String(i).padStart(4, "0")}`],
    keyComment: `pump ${i}`,
    keyType: "ssh-ed25519",
    username: "device",
    firstSeen: lastSeen - 86_400_000,
    lastSeen,
    relayId: "relay-old",
    online: false,
    peer: "192.0.2.1:5000",
    bindings: [`pump-${String(i).padStart(4, "0")}:22`],
    connections: 0,
    connectionsTotal: i,
    bytesIn: i * 10,
    bytesOut: i * 20,
    minutes: [],
  };
}

describe("GET /api/devices", () => {
  const f = new RelayFixture();
  let admin: AdminServer;
  const clients: Client[] = [];
  after(async () => {
    for (const c of clients) c.end();
    await admin?.close();
    await f.cleanup();
  });

  test("1,000 stored devices and one online: pages under 300 ms, filters, bad values named", async () => {
    const stateDir = join(f.dir, "state");
    mkdirSync(stateDir, { mode: 0o700 });
    const seen = Date.now() - 3600_000;
    const devices = Array.from({ length: 1000 }, (_, i) => stored(i, seen));
    // One record a hand edit broke: skipped, the rest load.
    writeFileSync(
      join(stateDir, "inventory.json"),
      JSON.stringify({ v: 1, devices: [...devices, { id: 7 }], history: [] }),
    );
    const dev = ed();
    await f.start([`restrict,port-forwarding,permitlisten="live-1:22" ${dev.public} live`], {
      stateDir,
      inventory: { relayId: "relay-new" },
    });
    admin = await startAdminServer({ relay: f.relay, host: "127.0.0.1", port: 0, token: TOKEN });
    clients.push(await device(f.port, dev.private, "live-1"));
    const base = `http://127.0.0.1:${admin.address.port}`;
    const get = async (path: string, token = TOKEN) => {
      const t0 = performance.now();
      const res = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${token}` } });
      const text = await res.text();
      return { status: res.status, text, ms: performance.now() - t0 };
    };

    const ids = new Set<string>();
    let slowest = 0;
    for (let page = 1; page <= 11; page++) {
      const r = await get(`/api/devices?page=${page}&per_page=100`);
      assert.equal(r.status, 200, r.text);
      slowest = Math.max(slowest, r.ms);
      const body = JSON.parse(r.text) as {
        devices: { id: string; state: string }[];
        total: number;
        pages: number;
        counts: { online: number; offline: number };
      };
      assert.equal(body.total, 1001);
      assert.equal(body.pages, 11);
      assert.deepEqual(body.counts, { online: 1, offline: 1000 });
      for (const d of body.devices) ids.add(d.id);
    }
    assert.equal(ids.size, 1001, "the pages add up to every device, once each");
    assert.ok(slowest < 300, `slowest page ${slowest.toFixed(0)} ms`);

    const online = JSON.parse((await get("/api/devices?state=online")).text) as {
      devices: { names: string[]; state: string; relayId: string }[];
    };
    assert.deepEqual(
      online.devices.map((d) => [d.names, d.state, d.relayId]),
      [[["live-1"], "online", "relay-new"]],
    );
    const named = JSON.parse((await get("/api/devices?name=PUMP-00&state=offline")).text) as {
      total: number;
    };
    assert.equal(named.total, 100, "pump-0000 to pump-0099");

    const history = JSON.parse((await get("/api/devices/history")).text) as { history: [number, number][] };
    assert.deepEqual(history.history.at(-1)?.[1], 1, "the last point is devices online now");

    for (const [q, msg] of [
      ["state=gone", 'state "gone" is not online, offline or all'],
      ["page=0", 'page "0" is not a whole number from 1 to 1000000'],
      ["per_page=5000", 'per_page "5000" is not a whole number from 1 to 1000'],
      ["page=1e3", 'page "1e3" is not a whole number from 1 to 1000000'],
    ] as const) {
      const r = await get(`/api/devices?${q}`);
      assert.equal(r.status, 400, q);
      assert.equal(r.text, `${msg}\n`);
    }
    assert.equal((await get("/api/devices", "wrong")).status, 401);
    process.stdout.write(`# /api/devices: 1,001 devices, slowest page of 100 ${slowest.toFixed(0)} ms\n`);
  });
});
