/**
 * The operator's page in a real headless browser (Debian's chromium driven
 * by playwright-core, which never downloads one): it loads with the token
 * from the #token= fragment, lists connected devices, follows connects and
 * disconnects without a reload, filters, escapes device-supplied strings, and
 * logs no console error. With 50 device sessions (ssh2 clients doing
 * tcpip-forward, 50 keys) all rows show within 2 s and a disconnect within
 * 2 s. With REVTUN_ADMIN_SCREENSHOT=1 the 50-device view is saved as
 * docs/admin.png for the README.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import ssh2 from "ssh2";
import { type AdminServer, startAdminServer } from "../../src/relay/admin/admin-server.js";
import { nextEvent, RelayFixture, withTimeout } from "../helpers/relay.js";

// The page's DOM as far as these checks reach: the functions run in the page
// (its CSP forbids string evaluation), and this project's TypeScript has no DOM lib.
declare const document: {
  querySelectorAll(selector: string): { length: number };
  querySelector(selector: string): { textContent: string | null } | null;
};

const CHROMIUM = "/usr/bin/chromium";
const TOKEN = "page-test-token";
const DOCS = fileURLToPath(new URL("../../docs/", import.meta.url));

interface Device {
  name: string;
  pub: string;
  priv: string;
  client?: ssh2.Client;
  port?: number;
}

function device(name: string): Device {
  // ssh2 1.17.0 writes an OpenSSH private key its own parser rejects
  // ("Malformed OpenSSH private key") for about 1 ed25519 key in 250 (12 of
  // 3000 measured): draw again, a bounded number of times.
  for (let i = 0; i < 10; i++) {
    const k = ssh2.utils.generateKeyPairSync("ed25519", { comment: name });
    if (!(ssh2.utils.parseKey(k.private) instanceof Error)) return { name, pub: k.public, priv: k.private };
  }
  throw new Error(`ssh2 made no parseable key for ${name} in 10 tries`);
}

/** Connects an ssh2 client that asks for a remote forward (port 0) and echoes what arrives on it. */
function connect(d: Device, port: number): Promise<number> {
  return withTimeout(
    new Promise<number>((resolve, reject) => {
      const c = new ssh2.Client();
      d.client = c;
      c.on("error", reject);
      c.on("tcp connection", (_info, accept) => {
        const ch = accept();
        ch.on("data", (b: Buffer) => ch.write(b));
        ch.on("end", () => ch.end());
      });
      c.on("ready", () =>
        c.forwardIn("127.0.0.1", 0, (err, bound) => {
          if (err) reject(err);
          else {
            d.port = bound;
            resolve(bound);
          }
        }),
      );
      // A test relay on loopback with a key made a moment ago.
      c.connect({
        host: "127.0.0.1",
        port,
        username: "device",
        privateKey: d.priv,
        hostVerifier: () => true,
      });
    }),
    10_000,
    `ssh2 client ${d.name}`,
  );
}

/** Sends `n` bytes through a device's forward and waits for the echo. */
function traffic(port: number, n: number): Promise<void> {
  return withTimeout(
    new Promise<void>((resolve, reject) => {
      let got = 0;
      const s = net.connect({ host: "127.0.0.1", port }, () => s.write(Buffer.alloc(n, 97)));
      s.on("data", (b: Buffer) => {
        got += b.length;
        if (got >= n) s.end();
      });
      s.on("close", () => resolve());
      s.on("error", reject);
    }),
    10_000,
    `traffic on ${port}`,
  );
}

describe("relay admin page in headless chromium", () => {
  const f = new RelayFixture();
  let admin: AdminServer;
  let ctx: BrowserContext;
  const profile = mkdtempSync(join(tmpdir(), "revtun-chromium-"));
  const devices = Array.from({ length: 50 }, (_, i) =>
    device(`pump-station-${String(i + 1).padStart(2, "0")}`),
  );
  const hostile = device(`<img src=x onerror="document.title='pwned'">`);

  before(async () => {
    // Fail, never skip: CI installs the package.
    assert.ok(
      existsSync(CHROMIUM),
      `${CHROMIUM} is missing: install the Debian package "chromium" (apt-get install chromium) to run the admin page test`,
    );
    await f.start([...devices, hostile].map((d) => d.pub));
    admin = await startAdminServer({ relay: f.relay, host: "127.0.0.1", port: 0, token: TOKEN });
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
      viewport: { width: 1280, height: 900 },
      timeout: 30_000,
    });
  });

  after(async () => {
    await ctx?.close();
    for (const d of [...devices, hostile]) d.client?.end();
    await admin?.close();
    await f.cleanup();
    rmSync(profile, { recursive: true, force: true });
  });

  /** Opens the page with the token in the fragment; collects console errors and page errors. */
  async function open(): Promise<{ page: Page; errors: string[]; loaded: number }> {
    const page = await ctx.newPage();
    const errors: string[] = [];
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(m.text());
    });
    page.on("pageerror", (e) => errors.push(e.message));
    page.on("response", (r) => {
      if (r.status() >= 400) errors.push(`${r.status()} ${r.url()}`);
    });
    const t0 = Date.now();
    await page.goto(`http://127.0.0.1:${admin.address.port}/#token=${TOKEN}`);
    return { page, errors, loaded: t0 };
  }

  const rows = (page: Page) => page.locator("#sessions tbody tr").count();
  async function waitRows(page: Page, n: number, ms: number): Promise<void> {
    await page.waitForFunction((want) => document.querySelectorAll("#sessions tbody tr").length === want, n, {
      timeout: ms,
      polling: 20,
    });
  }

  test("lists a connected device, follows a connect and a disconnect live, escapes and filters", async () => {
    const first = devices[0] as Device;
    const firstPort = await connect(first, f.port);
    const { page, errors } = await open();
    await waitRows(page, 1, 5_000);
    const row = page.locator("#sessions tbody tr").first();
    assert.equal(await row.locator("td").first().textContent(), "pump-station-01");
    assert.match((await row.textContent()) ?? "", new RegExp(`127\\.0\\.0\\.1:${firstPort}`));
    assert.equal(page.url().includes("token"), false, "the token leaves the address bar");
    assert.equal(await page.locator("#status").textContent(), "live");

    // A device connects while the page is open: it appears without a reload.
    await connect(hostile, f.port);
    await waitRows(page, 2, 2_000);
    assert.equal(
      await page.locator("#sessions tbody tr td.name").nth(1).textContent(),
      hostile.name,
      "a key comment with markup is shown as text",
    );
    assert.equal(await page.locator("#sessions tbody img").count(), 0, "no element made from device data");
    assert.notEqual(await page.title(), "pwned");

    // A connection held open: the device shows as in use, then idle again.
    const held = net.connect({ host: "127.0.0.1", port: firstPort });
    held.on("error", () => {});
    await page.waitForFunction(
      () => document.querySelector("#sessions tbody tr td.state")?.textContent === "in use",
      undefined,
      {
        timeout: 2_000,
        polling: 20,
      },
    );
    held.end();
    await page.waitForFunction(
      () => document.querySelector("#sessions tbody tr td.state")?.textContent === "idle",
      undefined,
      {
        timeout: 2_000,
        polling: 20,
      },
    );

    // Traffic shows up in the row (open and close events patch the counts).
    await traffic(firstPort, 5000);
    await page.waitForFunction(
      () => document.querySelector("#sessions tbody tr td:nth-child(9)")?.textContent === "4.9 KiB",
      undefined,
      { timeout: 2_000, polling: 20 },
    );

    await page.fill("#filter", "station");
    await waitRows(page, 1, 2_000);
    await page.fill("#filter", "");
    await waitRows(page, 2, 2_000);

    // It leaves: the row goes.
    const gone = nextEvent(f.relay, "session-closed");
    hostile.client?.end();
    await gone;
    await waitRows(page, 1, 2_000);
    assert.equal(await rows(page), 1);
    await page.close();
    assert.deepEqual(errors, []);
  });

  test("without #token= the page prompts for the token once; a refused one is said so", async () => {
    const page = await ctx.newPage();
    const asked: string[] = [];
    let answer = TOKEN;
    page.on("dialog", (d) => {
      asked.push(d.message());
      void d.accept(answer);
    });
    await page.goto(`http://127.0.0.1:${admin.address.port}/`);
    await waitRows(page, 1, 5_000);
    assert.ok(asked.length >= 1 && asked.every((m) => m === "revtun relay admin token"), asked.join("|"));
    await page.close();

    const wrong = await ctx.newPage();
    answer = "not-the-token";
    await wrong.goto(`http://127.0.0.1:${admin.address.port}/`);
    await wrong.waitForFunction(
      () => document.querySelector("#status")?.textContent?.startsWith("token required or refused") === true,
      undefined,
      {
        timeout: 5_000,
        polling: 20,
      },
    );
    assert.equal(await wrong.locator("#sessions tbody tr").count(), 0);
    await wrong.close();
  });

  test("50 devices: all listed within 2 s of loading, a disconnect shown within 2 s", async () => {
    const rest = devices.slice(1);
    // Connected a few at a time: 50 handshakes at once on a 2-core machine only queue.
    for (let i = 0; i < rest.length; i += 10) {
      await Promise.all(rest.slice(i, i + 10).map((d) => connect(d, f.port)));
    }
    assert.equal(f.relay.authenticatedSessions().length, 50);
    for (const [i, d] of devices.slice(0, 12).entries()) await traffic(d.port ?? 0, 1000 * (i + 1) ** 2);

    const { page, errors, loaded } = await open();
    await waitRows(page, 50, 2_000);
    const showAll = Date.now() - loaded;

    const leaving = devices[7] as Device;
    const gone = nextEvent(f.relay, "session-closed");
    const t1 = Date.now();
    leaving.client?.end();
    await waitRows(page, 49, 2_000);
    const showGone = Date.now() - t1;
    await gone;
    assert.equal(await page.locator("#sessions tbody td.name", { hasText: leaving.name }).count(), 0);

    // Into docs/ only when asked (REVTUN_ADMIN_SCREENSHOT=1): a test run must not dirty the tree.
    const shot = process.env.REVTUN_ADMIN_SCREENSHOT ? join(DOCS, "admin.png") : join(profile, "admin.png");
    if (process.env.REVTUN_ADMIN_SCREENSHOT) mkdirSync(DOCS, { recursive: true });
    await page.screenshot({ path: shot, fullPage: false });
    const png = readFileSync(shot);
    assert.equal(png.subarray(1, 4).toString(), "PNG");
    const weight = (["index.html", "app.js", "style.css"] as const)
      .map((x) => statSync(fileURLToPath(new URL(`../../assets/admin/${x}`, import.meta.url))).size)
      .reduce((a, b) => a + b, 0);
    // The figures the report quotes.
    process.stdout.write(
      `# admin page: 50 rows ${showAll} ms after load, disconnect shown in ${showGone} ms, page ${weight} bytes\n`,
    );
    assert.ok(showAll < 2_000, `${showAll} ms`);
    assert.ok(showGone < 2_000, `${showGone} ms`);
    await page.close();
    assert.deepEqual(errors, []);
  });
});
