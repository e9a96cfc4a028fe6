import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Redis } from "ioredis";
import { FleetRegistry, type Holder } from "../../src/relay/fleet/registry.js";
import { waitFor } from "../helpers/net.js";
import { RedisServer } from "../helpers/redis.js";

const REGISTRY = pathToFileURL(
  fileURLToPath(new URL("../../src/relay/fleet/registry.ts", import.meta.url)),
).href;

function relay(redis: RedisServer, id: string, prefix: string): FleetRegistry {
  return new FleetRegistry({
    redis: { host: "127.0.0.1", port: redis.port, db: 0 },
    self: { relayId: id, address: `127.0.0.1:${id.length + 2000}`, hostKeyFingerprint: `SHA256:${id}` },
    prefix,
  });
}

const ids = (hs: Holder[]) => hs.map((h) => h.relayId);
let n = 0;
/** A fresh key prefix per test: one redis-server, no cross-test leftovers. */
const fresh = () => `t${++n}:`;

describe("fleet registry against a real redis-server", () => {
  let redis: RedisServer;
  before(async () => {
    redis = await RedisServer.start();
  });
  after(async () => {
    await redis.close();
  });

  test("a name announced on one relay is found from another with the holder's address and key", async () => {
    const p = fresh();
    const a = relay(redis, "relay-a", p);
    const b = relay(redis, "relay-b", p);
    try {
      await Promise.all([a.start(), b.start()]);
      assert.equal(
        await a.announce("device42:22", { sessionId: "s1", deviceFingerprint: "SHA256:dev" }),
        true,
      );
      const hs = await b.holders("device42:22");
      assert.deepEqual(
        hs.map(({ since, ...h }) => h),
        [
          {
            relayId: "relay-a",
            address: "127.0.0.1:2007",
            hostKeyFingerprint: "SHA256:relay-a",
            sessionId: "s1",
            deviceFingerprint: "SHA256:dev",
          },
        ],
      );
      assert.deepEqual(await b.holders("other:22"), []);
      assert.deepEqual(await a.holders("device42:22", { excludeSelf: true }), []);
      // Invalid keys are never written nor looked up.
      assert.equal(await a.announce("Not A Key", { sessionId: "s1" }), false);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  test("newest announce first: a device that moves from A to B is found on B first", async () => {
    const p = fresh();
    const a = relay(redis, "relay-a", p);
    const b = relay(redis, "relay-b", p);
    const c = relay(redis, "relay-c", p);
    try {
      await Promise.all([a.start(), b.start(), c.start()]);
      await a.announce("dev:22", { sessionId: "a1" });
      await new Promise((r) => setTimeout(r, 5));
      await b.announce("dev:22", { sessionId: "b1" });
      assert.deepEqual(ids(await c.holders("dev:22")), ["relay-b", "relay-a"]);
      await a.withdraw("dev:22", { sessionId: "a1" });
      assert.deepEqual(ids(await c.holders("dev:22")), ["relay-b"]);
    } finally {
      await Promise.all([a.close(), b.close(), c.close()]);
    }
  });

  test("withdraw by an old session keeps the newer session's hold; the last withdraw removes the name", async () => {
    const p = fresh();
    const a = relay(redis, "relay-a", p);
    const b = relay(redis, "relay-b", p);
    try {
      await Promise.all([a.start(), b.start()]);
      await a.announce("dev:22", { sessionId: "old" });
      await a.announce("dev:22", { sessionId: "new" });
      assert.equal((await b.holders("dev:22"))[0]?.sessionId, "new");
      await a.withdraw("dev:22", { sessionId: "new" });
      // The old session still serves it: it becomes the announced one.
      assert.equal((await b.holders("dev:22"))[0]?.sessionId, "old");
      assert.equal(await a.withdraw("dev:22", { sessionId: "nobody" }), false);
      await a.withdraw("dev:22", { sessionId: "old" });
      assert.deepEqual(await b.holders("dev:22"), []);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  test("the holders index outlives its TTL while the holder lives (renewals refresh it in batches)", async () => {
    const p = fresh();
    const mk = (id: string) =>
      new FleetRegistry({
        redis: { host: "127.0.0.1", port: redis.port, db: 0 },
        self: { relayId: id, address: "127.0.0.1:1", hostKeyFingerprint: "SHA256:x" },
        prefix: p,
        // 40 names, 2 s index TTL, 1 s renewals: one tick's batch must cover them all.
        timings: { indexTtlMs: 2000 },
      });
    const a = mk("relay-a");
    const b = mk("relay-b");
    try {
      await Promise.all([a.start(), b.start()]);
      for (let i = 0; i < 40; i++) await a.announce(`d${i}:22`, { sessionId: `s${i}` });
      await new Promise((r) => setTimeout(r, 4500));
      const found = await Promise.all(Array.from({ length: 40 }, (_, i) => b.holders(`d${i}:22`)));
      assert.equal(found.filter((h) => h.length === 1).length, 40);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  test("a clean close removes the relay's names at once", async () => {
    const p = fresh();
    const a = relay(redis, "relay-a", p);
    const b = relay(redis, "relay-b", p);
    try {
      await Promise.all([a.start(), b.start()]);
      await a.announce("dev:22", { sessionId: "a1" });
      await a.close();
      assert.deepEqual(await b.holders("dev:22"), []);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  test("kill -9 of a relay process: its names leave holders() within the 3 s lease, and relayGone fires", async () => {
    const p = fresh();
    const dir = mkdtempSync(join(tmpdir(), "revtun-fleet-"));
    const script = join(dir, "relay.mjs");
    writeFileSync(
      script,
      `import { FleetRegistry } from ${JSON.stringify(REGISTRY)};
const r = new FleetRegistry({ redis: { host: "127.0.0.1", port: ${redis.port}, db: 0 },
  self: { relayId: "doomed", address: "127.0.0.1:1", hostKeyFingerprint: "SHA256:x" }, prefix: ${JSON.stringify(p)} });
await r.start();
await r.announce("dev:22", { sessionId: "d1" });
process.stdout.write("announced\\n");
setInterval(() => {}, 1000);
`,
    );
    const child = spawn(process.execPath, ["--import", "tsx", script], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    const b = relay(redis, "relay-b", p);
    const gone: string[] = [];
    b.on("relayGone", (id) => gone.push(id));
    try {
      await b.start();
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error("child did not announce")), 15_000);
        child.stdout?.on("data", (d: Buffer) => {
          if (d.toString().includes("announced")) {
            clearTimeout(t);
            resolve();
          }
        });
      });
      assert.deepEqual(ids(await b.holders("dev:22")), ["doomed"]);
      // Let b see the doomed relay in a renewal, so it can report it gone.
      await waitFor(
        () => gone.length === 0 && (b as unknown as { liveRelays: Set<string> }).liveRelays.has("doomed"),
        "b sees doomed",
        3000,
      );
      const killed = performance.now();
      child.kill("SIGKILL");
      await waitFor(async () => (await b.holders("dev:22")).length === 0, "lease to lapse", 5000, 20);
      const elapsed = performance.now() - killed;
      console.log(`# killed relay's names left holders() after ${Math.round(elapsed)} ms`);
      assert.ok(elapsed <= 3100, `${elapsed} ms`);
      await waitFor(() => gone.includes("doomed"), "relayGone", 3000);
    } finally {
      child.kill("SIGKILL");
      await b.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("fleet registry when Redis goes away", () => {
  test("Redis emptied under a live connection (FLUSHALL): the next renewal rebuilds this relay's names", async () => {
    const redis = await RedisServer.start();
    const a = relay(redis, "relay-a", "z:");
    const b = relay(redis, "relay-b", "z:");
    const admin = new Redis({ host: "127.0.0.1", port: redis.port, lazyConnect: true });
    try {
      await Promise.all([a.start(), b.start(), admin.connect()]);
      await a.announce("dev:22", { sessionId: "a1" });
      await admin.flushall();
      assert.deepEqual(await b.holders("dev:22"), []);
      const t0 = performance.now();
      await waitFor(async () => (await b.holders("dev:22")).length === 1, "rebuilt", 5000, 20);
      const ms = performance.now() - t0;
      console.log(`# names rebuilt ${Math.round(ms)} ms after FLUSHALL`);
      assert.ok(ms < 1500, `${ms} ms`);
    } finally {
      admin.disconnect();
      await Promise.all([a.close(), b.close()]);
      await redis.close();
    }
  });

  test("keeps answering, reports degraded, re-announces after Redis returns empty, keeps nothing stale", async () => {
    const redis = await RedisServer.start();
    const a = relay(redis, "relay-a", "x:");
    const b = relay(redis, "relay-b", "x:");
    const events: string[] = [];
    a.on("degraded", () => events.push("degraded"));
    a.on("restored", ({ reannounced }) => events.push(`restored ${reannounced}`));
    try {
      await Promise.all([a.start(), b.start()]);
      await a.announce("keep:22", { sessionId: "a1" });
      await a.announce("drop:22", { sessionId: "a2" });
      await b.announce("bname:22", { sessionId: "b1" });
      await redis.stop();
      await waitFor(() => events.includes("degraded"), "degraded", 3000);
      // Down: answers at once from its own names, never throws.
      const t0 = performance.now();
      assert.deepEqual(ids(await a.holders("keep:22")), ["relay-a"]);
      assert.deepEqual(await a.holders("bname:22"), []);
      assert.equal(await a.announce("new:22", { sessionId: "a3" }), false);
      assert.equal(await a.withdraw("drop:22", { sessionId: "a2" }), false);
      assert.ok(performance.now() - t0 < 200, "answers while Redis is down do not wait");
      // Down long enough for the reconnect pause to reach its 1 s cap, as in a real outage.
      await new Promise((r) => setTimeout(r, 2500));
      await redis.start();
      const back = performance.now();
      await waitFor(
        async () =>
          ids(await b.holders("keep:22")).includes("relay-a") &&
          ids(await b.holders("new:22")).includes("relay-a") &&
          ids(await a.holders("bname:22")).includes("relay-b"),
        "routing back",
        10_000,
        20,
      );
      console.log(
        `# routing back ${Math.round(performance.now() - back)} ms after redis-server was listening`,
      );
      assert.ok(performance.now() - back < 3000);
      assert.deepEqual(await b.holders("drop:22"), [], "withdrawn while down stays withdrawn");
      assert.ok(events.includes("restored 2"), events.join(","));
    } finally {
      await Promise.all([a.close(), b.close()]);
      await redis.close();
    }
  });

  test("a Redis that stalls (SIGSTOP) without closing the connection: degraded, then back after SIGCONT", async () => {
    const redis = await RedisServer.start();
    const a = relay(redis, "relay-a", "s:");
    const b = relay(redis, "relay-b", "s:");
    const events: string[] = [];
    a.on("degraded", () => events.push("degraded"));
    a.on("restored", () => events.push("restored"));
    const pid = redis.pid as number;
    try {
      await Promise.all([a.start(), b.start()]);
      events.length = 0;
      process.kill(pid, "SIGSTOP");
      await waitFor(() => events.includes("degraded"), "degraded", 3000);
      // Announced during the stall: only local until Redis answers again.
      assert.equal(await a.announce("stalled:22", { sessionId: "a1" }), false);
      // Long enough for the lease to lapse, as a real stall would.
      await new Promise((r) => setTimeout(r, 3200));
      process.kill(pid, "SIGCONT");
      const t0 = performance.now();
      await waitFor(async () => (await b.holders("stalled:22")).length === 1, "back after SIGCONT", 5000, 20);
      console.log(`# names back ${Math.round(performance.now() - t0)} ms after Redis resumed`);
      assert.deepEqual(events, ["degraded", "restored"]);
    } finally {
      try {
        process.kill(pid, "SIGCONT");
      } catch {}
      await Promise.all([a.close(), b.close()]);
      await redis.close();
    }
  });

  test("a relay started while Redis is down serves locally and joins when Redis comes up", async () => {
    const redis = await RedisServer.start();
    await redis.stop();
    const a = relay(redis, "relay-a", "y:");
    try {
      const t0 = performance.now();
      await a.start();
      assert.ok(performance.now() - t0 < 3000, "start does not hang on a dead Redis");
      assert.equal(a.healthy, false);
      await a.announce("dev:22", { sessionId: "a1" });
      assert.deepEqual(ids(await a.holders("dev:22")), ["relay-a"]);
      await redis.start();
      await waitFor(() => a.healthy, "healthy", 10_000);
      const b = relay(redis, "relay-b", "y:");
      await b.start();
      assert.deepEqual(ids(await b.holders("dev:22")), ["relay-a"]);
      await b.close();
    } finally {
      await a.close();
      await redis.close();
    }
  });
});
