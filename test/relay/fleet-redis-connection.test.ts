/**
 * The fleet's Redis as managed services run it (src/relay/fleet/redis-connection.ts):
 *  - rediss:// with the server's certificate verified against a CA file, as
 *    an ACL user with a password: two relays share device records and route
 *    an operator; a relay given another CA refuses the server's certificate
 *    (fleet degraded, the reason names the certificate) and writes nothing;
 *  - Redis Sentinel (primary, replica, redis-sentinel): killing the primary
 *    loses no device record (offline ones included) and the name is
 *    reachable through the other relay again within 10 s.
 * Debian's redis-server and redis-sentinel, certificates made with openssl.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Redis } from "ioredis";
import { parseFleetKey } from "../../src/relay/fleet/fleet-key.js";
import { parseFleetUrl, type RedisTarget } from "../../src/relay/fleet/fleet-options.js";
import { FleetRegistry } from "../../src/relay/fleet/registry.js";
import type { RelayOptions } from "../../src/relay/index.js";
import { type Client, device, ed, reachWithin, sleep } from "../helpers/fleet.js";
import { makeTlsFiles, RedisSentinel, RedisServer, type TlsFiles } from "../helpers/redis.js";
import { RelayFixture } from "../helpers/relay.js";

const fleetKey = parseFleetKey(ed().private);

function fleet(redis: RedisTarget, relayId: string): Partial<RelayOptions> {
  return {
    fleet: {
      redis,
      fleetKey,
      relayId,
      advertise: "127.0.0.1:0",
      peerListen: { host: "127.0.0.1", port: 0 },
    },
  };
}

async function until(what: string, ms: number, ok: () => boolean | Promise<boolean>): Promise<number> {
  const t0 = Date.now();
  while (!(await ok())) {
    if (Date.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(50);
  }
  return Date.now() - t0;
}

describe("fleet Redis over TLS with an ACL user", () => {
  const dir = mkdtempSync(join(tmpdir(), "revtun-redis-tls-"));
  let tls: TlsFiles;
  let other: TlsFiles;
  let redis: RedisServer;
  const fixtures = [new RelayFixture(), new RelayFixture(), new RelayFixture()];
  const clients: Client[] = [];
  before(async () => {
    tls = makeTlsFiles(dir, "fleet");
    other = makeTlsFiles(dir, "other");
    redis = await RedisServer.start({ tls });
    const admin = new Redis({
      host: "127.0.0.1",
      port: redis.port,
      tls: { ca: readFileSync(tls.ca) },
      lazyConnect: true,
    });
    await admin.connect();
    await admin.call("ACL", "SETUSER", "revtun", "on", ">relay-secret", "~revtun:*", "&revtun:*", "+@all");
    await admin.call("ACL", "SETUSER", "default", "off");
    admin.disconnect();
  });
  after(async () => {
    for (const c of clients) c.end();
    for (const f of fixtures) await f.cleanup();
    await redis.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("rediss:// verified, as user revtun: records shared and routing; another CA is refused", async () => {
    const [a, b, c] = fixtures as [RelayFixture, RelayFixture, RelayFixture];
    const dev = ed();
    const op = ed();
    const lines = [
      `restrict,port-forwarding,permitlisten="device42:22" ${dev.public} pump`,
      `restrict,permitopen="device*:22" ${op.public} operator`,
    ];
    const target: RedisTarget = {
      ...parseFleetUrl(`rediss://revtun@127.0.0.1:${redis.port}`),
      password: "relay-secret",
      tls: { ca: readFileSync(tls.ca) },
    };
    await a.start(lines, fleet(target, "relay-a"));
    await b.start(lines, fleet(target, "relay-b"));
    clients.push(await device(a.port, dev.private));
    await until(
      "relay-b lists the device",
      3_000,
      () => b.relay.devices.list({ state: "online" }).total === 1,
    );
    await reachWithin(b.port, op.private, 3_000);

    // The same Redis, a CA that did not sign its certificate: refused, never trusted.
    const wrongCa: RedisTarget = { ...target, tls: { ca: readFileSync(other.ca) } };
    const registry = new FleetRegistry({
      redis: wrongCa,
      self: { relayId: "relay-c", address: "127.0.0.1:1", hostKeyFingerprint: "SHA256:x" },
    });
    const reasons: string[] = [];
    registry.on("degraded", (x) => reasons.push(x.reason));
    await registry.start();
    await registry.close({ withdraw: false });
    assert.equal(registry.healthy, false);
    assert.match(reasons.join("|"), /self[- ]signed certificate|unable to verify|certificate/i);
    await c.start(lines, fleet(wrongCa, "relay-c"));
    await sleep(1_000);
    assert.equal(c.relay.devices.list().total, 0, "nothing read through an unverified connection");
    const rc = new Redis({
      host: "127.0.0.1",
      port: redis.port,
      tls: { ca: readFileSync(tls.ca) },
      username: "revtun",
      password: "relay-secret",
      lazyConnect: true,
    });
    await rc.connect();
    try {
      assert.equal(await rc.exists("revtun:relay:relay-c"), 0, "relay-c wrote nothing");
      assert.equal(await rc.exists("revtun:relay:relay-a"), 1);
    } finally {
      rc.disconnect();
    }
  });
});

describe("fleet Redis through Sentinel", () => {
  let primary: RedisServer;
  let replica: RedisServer;
  let sentinel: RedisSentinel;
  const a = new RelayFixture();
  const b = new RelayFixture();
  const clients: Client[] = [];
  before(async () => {
    primary = await RedisServer.start();
    replica = await RedisServer.start({ args: ["--replicaof", "127.0.0.1", "0"] });
    // The replica's port is only known once started: point it at the primary now.
    const r = new Redis({ host: "127.0.0.1", port: replica.port, lazyConnect: true });
    await r.connect();
    await r.call("REPLICAOF", "127.0.0.1", String(primary.port));
    r.disconnect();
    sentinel = await RedisSentinel.start(primary.port);
  });
  after(async () => {
    for (const c of clients) c.end();
    await a.cleanup();
    await b.cleanup();
    await sentinel.close();
    await replica.close();
    await primary.close();
  });

  test("killing the primary loses no device record; routing back within 10 s", async () => {
    const devs = [ed(), ed()];
    const op = ed();
    const lines = [
      ...devs.map((d, i) => `restrict,port-forwarding,permitlisten="device4${i}:22" ${d.public} d${i}`),
      `restrict,permitopen="device*:22" ${op.public} operator`,
    ];
    const target = parseFleetUrl(`redis+sentinel://127.0.0.1:${sentinel.port}/fleet-primary`);
    await a.start(lines, fleet(target, "relay-a"));
    await b.start(lines, fleet(target, "relay-b"));
    // device40 stays on relay-a; device41 comes and goes (an offline record).
    const d40 = await device(a.port, (devs[0] as { private: string }).private, "device40");
    clients.push(d40);
    const d41 = await device(a.port, (devs[1] as { private: string }).private, "device41");
    d41.end();
    await until("both records on relay-b", 3_000, () => b.relay.devices.list().total === 2);
    await reachWithin(b.port, op.private, 3_000, "device40");
    const rp = new Redis({ host: "127.0.0.1", port: primary.port, lazyConnect: true });
    await rp.connect();
    const before = Object.keys(await rp.hgetall("revtun:{}:devices")).sort();
    rp.disconnect();
    assert.equal(before.length, 2);

    const t0 = Date.now();
    await primary.stop("SIGKILL");
    // Sentinel promotes the replica (down after 1 s); the relays follow it.
    const rr = new Redis({ host: "127.0.0.1", port: replica.port, lazyConnect: true });
    await rr.connect();
    try {
      await until(
        "the replica is promoted",
        10_000,
        async () => (await rr.call("ROLE").then((x) => (x as string[])[0])) === "master",
      );
      const back = await reachWithin(b.port, op.private, 10_000 - (Date.now() - t0), "device40");
      const routed = Date.now() - t0;
      await until(
        "every record on the new primary",
        10_000,
        async () => Object.keys(await rr.hgetall("revtun:{}:devices")).length === 2,
      );
      assert.deepEqual(Object.keys(await rr.hgetall("revtun:{}:devices")).sort(), before);
      const off = () =>
        b.relay.devices
          .list({ state: "offline" })
          .devices.map((d) => d.names[0])
          .join();
      await until(`relay-b's view settles (${off()})`, 3_000, () => off() === "device41");
      process.stdout.write(
        `# sentinel failover: routing back ${routed} ms after kill -9 of the primary (last try ${Math.round(back)} ms)\n`,
      );
      assert.ok(routed < 10_000, `${routed} ms`);
    } finally {
      rr.disconnect();
    }
  });
});
