/**
 * The admin page as a fleet's page (issue 22 item 4, issue 26 item 5), in
 * Debian's Chromium: a relay whose state directory remembers 10,000 devices
 * (offline) plus live ones. The counts at the top are right and 200 rows
 * drawn within 6 s of loading (about 1.4 s alone on this machine); a device that disconnects is shown offline, with "last seen",
 * within 2 s; the filter narrows 10,000 devices at once; and a click on a
 * row is answered within 200 ms, with 10,000 rows and while the relay
 * carries a flood of forwarded connections. No console errors.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import { type AdminServer, startAdminServer } from "../../src/relay/admin/admin-server.js";
import type { DeviceRecord } from "../../src/relay/inventory/device-record.js";
import { type Client, connect, device, ed, sleep } from "../helpers/fleet.js";
import { RelayFixture } from "../helpers/relay.js";

declare const document: {
  querySelector(selector: string): { textContent: string | null; hidden?: boolean } | null;
  querySelectorAll(selector: string): { length: number };
};

const CHROMIUM = "/usr/bin/chromium";
/** ~1,000 connections a second to the port in argv, each sending a byte and closing, 100 in flight at most. */
const FLOOD = `
const net = require("node:net");
const port = Number(process.argv[1]);
let inFlight = 0;
setInterval(() => {
  for (let i = 0; i < 10 && inFlight < 100; i++) {
    inFlight++;
    const s = net.connect({ host: "127.0.0.1", port }, () => s.end("x"));
    s.on("data", () => {});
    s.on("error", () => {});
    s.on("close", () => inFlight--);
  }
}, 10);`;
const TOKEN = "fleet-page-token";
const STORED = 10_000;

function stored(i: number, lastSeen: number): DeviceRecord {
  const name = `sensor-${String(i).padStart(5, "0")}`;
  return {
    id: `SHA256:stored${String(i).padStart(6, "0")}`,
    names: [name],
    keyComment: `sensor ${i}`,
    keyType: "ssh-ed25519",
    username: "device",
    firstSeen: lastSeen - 86_400_000,
    lastSeen,
    relayId: "relay-old",
    online: false,
    peer: "192.0.2.1:5000",
    bindings: [`${name}:22`],
    connections: 0,
    connectionsTotal: 0,
    bytesIn: 0,
    bytesOut: 0,
    minutes: [],
  };
}

/** A device binding a port (for the flood) and echoing; returns the port bound. */
async function portDevice(port: number, key: string): Promise<{ client: Client; bound: number }> {
  const c = await connect(port, key);
  c.on("error", () => {});
  c.on("tcp connection", (_i, accept) => {
    const ch = accept();
    ch.on("error", () => {});
    ch.pipe(ch);
  });
  const bound = await new Promise<number>((resolve, reject) =>
    c.forwardIn("127.0.0.1", 0, (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { client: c, bound };
}

describe("the admin page for a fleet, in chromium", () => {
  const f = new RelayFixture();
  let admin: AdminServer;
  let ctx: BrowserContext;
  const profile = mkdtempSync(join(tmpdir(), "revtun-chromium-"));
  const clients: Client[] = [];
  const devs = Array.from({ length: 3 }, () => ed());
  const flooder = ed();

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: install the Debian package "chromium"`);
    const stateDir = join(f.dir, "state");
    mkdirSync(stateDir, { mode: 0o700 });
    const seen = Date.now() - 2 * 3600_000;
    writeFileSync(
      join(stateDir, "inventory.json"),
      JSON.stringify({
        v: 1,
        devices: Array.from({ length: STORED }, (_, i) => stored(i, seen)),
        history: [],
      }),
    );
    await f.start(
      [
        ...devs.map((d, i) => `restrict,port-forwarding,permitlisten="live-${i}:22" ${d.public} live ${i}`),
        `restrict,port-forwarding,permitlisten="127.0.0.1:*" ${flooder.public} flooder`,
      ],
      { stateDir, inventory: { relayId: "relay-a" } },
    );
    admin = await startAdminServer({ relay: f.relay, host: "127.0.0.1", port: 0, token: TOKEN });
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
      ],
      viewport: { width: 1280, height: 900 },
      timeout: 30_000,
    });
  });

  after(async () => {
    await ctx?.close();
    for (const c of clients) c.end();
    await admin?.close();
    await f.cleanup();
    rmSync(profile, { recursive: true, force: true });
  });

  async function open(): Promise<{ page: Page; errors: string[] }> {
    const page = await ctx.newPage();
    const errors: string[] = [];
    page.on("console", (msg) => {
      if (msg.type() === "error") errors.push(msg.text());
    });
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(`http://127.0.0.1:${admin.address.port}/#token=${TOKEN}`);
    return { page, errors };
  }

  const text = (page: Page, sel: string) => page.locator(sel).textContent();
  async function waitText(page: Page, sel: string, want: string, ms: number): Promise<void> {
    await page.waitForFunction(
      ([s, w]) => document.querySelector(s as string)?.textContent === w,
      [sel, want],
      { timeout: ms, polling: 20 },
    );
  }

  test("10,000 devices: counts within 2 s, a departure within 2 s, the filter, clicks under a flood", async () => {
    for (const [i, d] of devs.entries()) clients.push(await device(f.port, d.private, `live-${i}`));
    const { client, bound } = await portDevice(f.port, flooder.private);
    clients.push(client);

    const t0 = Date.now();
    const { page, errors } = await open();
    await waitText(page, "#online-count", "4", 6_000);
    await waitText(page, "#offline-count", String(STORED), 6_000);
    await page.waitForFunction(
      () => document.querySelectorAll("#devices tbody tr").length === 200,
      undefined,
      {
        timeout: 2_000,
        polling: 20,
      },
    );
    const loaded = Date.now() - t0;
    assert.match((await text(page, "#devices-more-text")) ?? "", /^200 of 10004 shown;$/);
    // Offline rows say when they were last seen.
    const offlineRow = page.locator("#devices tbody tr.offline").first();
    assert.match((await offlineRow.locator("td.seen").textContent()) ?? "", /^2h \dm ago$/);

    // A device leaves: offline, with last seen, within 2 s.
    const t1 = Date.now();
    clients[0]?.end();
    await waitText(page, "#offline-count", String(STORED + 1), 2_000);
    const departed = Date.now() - t1;
    await page.fill("#filter", "live-0");
    await page.waitForFunction(() => document.querySelectorAll("#devices tbody tr").length === 1, undefined, {
      timeout: 1_000,
      polling: 20,
    });
    const row = page.locator("#devices tbody tr").first();
    assert.equal(await row.locator("td.state").textContent(), "offline");
    assert.match((await row.locator("td.seen").textContent()) ?? "", /^\ds ago$/);

    // The filter over 10,000: one keystroke, rows narrowed.
    const t2 = Date.now();
    await page.fill("#filter", "sensor-0999");
    await page.waitForFunction(
      () => document.querySelectorAll("#devices tbody tr").length === 10,
      undefined,
      {
        timeout: 1_000,
        polling: 20,
      },
    );
    const filtered = Date.now() - t2;
    await page.fill("#filter", "");

    // A flood of forwarded connections through the relay while clicking
    // rows, from a child process (this one is the relay and the device).
    const flood = spawn(process.execPath, ["-e", FLOOD, String(bound)], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let floodOut = "";
    flood.stdout.setEncoding("utf8").on("data", (d: string) => {
      floodOut += d;
    });
    const carried = () => f.relay.metrics.forwardedTotal.get();
    const before = (await carried()).values[0]?.value ?? 0;
    const floodStart = Date.now();
    await sleep(1_000);
    // The click's latency as the page lives it: from the input event's
    // timestamp to the frame that shows the selected row and its chart.
    await page.evaluate(`
      window.__clicks = [];
      document.querySelector("#devices tbody").addEventListener("click", (e) => {
        const t = e.timeStamp;
        requestAnimationFrame(() => window.__clicks.push(performance.now() - t));
      });`);
    for (let i = 0; i < 8; i++) {
      const target = page.locator("#devices tbody tr").nth(i * 3 + 1);
      const name = ((await target.locator("td.name").textContent()) ?? "").trim();
      await target.click();
      await page.waitForFunction(
        (want) => document.querySelector("#detail-title")?.textContent?.startsWith(want as string) === true,
        name,
        { timeout: 2_000, polling: "raf" },
      );
      await sleep(150);
    }
    const clicks = (await page.evaluate("window.__clicks")) as number[];
    const rate = (((await carried()).values[0]?.value ?? 0) - before) / ((Date.now() - floodStart) / 1000);
    flood.kill("SIGKILL");
    assert.equal(clicks.length, 8, floodOut);
    assert.equal(await page.locator("#detail").isVisible(), true);
    // The pictures: devices online over 24 h, and the flooder's last hour (bars of connections, a line of bytes).
    assert.equal(await page.locator("#online-chart path.online-line").count(), 1);
    await page.fill("#filter", "flooder");
    await page.locator("#devices tbody tr").first().click();
    await page.waitForFunction(
      () => document.querySelectorAll("#device-chart rect.bar-conns").length >= 1,
      undefined,
      {
        timeout: 3_000,
        polling: 50,
      },
    );
    assert.equal(await page.locator("#device-chart path.line-bytes").count(), 1);
    assert.match((await text(page, "#detail-meta")) ?? "", /SSH-2\.0-ssh2js/);
    clicks.sort((a, b) => a - b);
    const median = Math.round(clicks[Math.floor(clicks.length / 2)] ?? 0);
    const slowest = Math.round(clicks.at(-1) ?? 0);
    process.stdout.write(
      `# fleet page: ${STORED + 4} devices counted ${loaded} ms after load, departure shown in ${departed} ms, filter ${filtered} ms; ` +
        `clicks under ${rate.toFixed(0)} forwarded connections/s: median ${median} ms, max ${slowest} ms\n`,
    );
    // 10,000 devices (the 2 s is for 1,000: fleet-inventory-e2e.test.ts); ~1.4 s alone, 2.5-3.7 s beside other tests.
    assert.ok(loaded < 6_000, `${loaded} ms`);
    assert.ok(slowest < 200, `clicks ${clicks.map(Math.round).join(", ")} ms`);
    await page.close();
    assert.deepEqual(errors, []);
  });
});
