/**
 * Device records in the fleet's Redis (src/relay/fleet/inventory-store.ts):
 * two relays of one fleet on a real redis-server. A device on relay A is
 * listed by relay B, online, within 2 s, and offline within 2 s of leaving;
 * an operator through B is told it is offline and where it was last seen;
 * a record written to Redis without the fleet key is never listed.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Redis } from "ioredis";
import { parseFleetKey } from "../../src/relay/fleet/fleet-key.js";
import { parseFleetUrl } from "../../src/relay/fleet/fleet-options.js";
import type { RelayOptions } from "../../src/relay/index.js";
import { type Client, connect, device, ed, sleep } from "../helpers/fleet.js";
import { RedisServer } from "../helpers/redis.js";
import { RelayFixture } from "../helpers/relay.js";

async function refusal(port: number, key: string, name: string): Promise<string> {
  const c = await connect(port, key);
  c.on("error", () => {});
  try {
    return await new Promise<string>((resolve) =>
      c.forwardOut("192.0.2.9", 4000, name, 22, (err, ch) => {
        if (err) resolve(err.message.replace(/^\(SSH\) Channel open failure: /, ""));
        else {
          ch.close();
          resolve("opened");
        }
      }),
    );
  } finally {
    c.end();
  }
}

async function until(what: string, ms: number, ok: () => boolean): Promise<number> {
  const t0 = Date.now();
  while (!ok()) {
    if (Date.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(20);
  }
  return Date.now() - t0;
}

describe("fleet inventory store: every relay lists every device", () => {
  let redis: RedisServer;
  const a = new RelayFixture();
  const b = new RelayFixture();
  const clients: Client[] = [];
  const fleetKey = parseFleetKey(ed().private);
  before(async () => {
    redis = await RedisServer.start();
  });
  after(async () => {
    for (const c of clients) c.end();
    await a.cleanup();
    await b.cleanup();
    await redis.close();
  });

  test("online and offline across relays within 2 s; forged records are skipped", async () => {
    const dev = ed();
    const op = ed();
    const lines = [
      `restrict,port-forwarding,permitlisten="device42:22" ${dev.public} pump-42`,
      `restrict,permitopen="device*:22" ${op.public} operator`,
    ];
    const fleet = (relayId: string): Partial<RelayOptions> => ({
      fleet: {
        redis: parseFleetUrl(redis.url),
        fleetKey,
        relayId,
        advertise: "127.0.0.1:0",
        peerListen: { host: "127.0.0.1", port: 0 },
      },
    });
    await a.start(lines, fleet("relay-a"));
    await b.start(lines, fleet("relay-b"));

    const c = await device(a.port, dev.private);
    clients.push(c);
    const seenOnline = await until("B lists the device online", 2_000, () =>
      b.relay.devices.list({ state: "online" }).devices.some((d) => d.names.includes("device42")),
    );
    const r = b.relay.devices.list().devices[0];
    assert.equal(r?.relayId, "relay-a");
    assert.deepEqual(r?.bindings, ["device42:22"]);
    assert.equal(await refusal(b.port, op.private, "device42"), "opened");

    c.end();
    const seenOffline = await until("B lists the device offline", 2_000, () =>
      b.relay.devices.list({ state: "offline" }).devices.some((d) => d.names.includes("device42")),
    );
    assert.match(
      await refusal(b.port, op.private, "device42"),
      /^device42 is offline \(last seen \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ on relay-a\)$/,
    );
    assert.match(await refusal(b.port, op.private, "device99"), /no relay of the fleet holds device99:22/);

    // A writer with Redis access but not the fleet key: a record of its own, and A's record rewritten.
    const rc = new Redis({ host: "127.0.0.1", port: redis.port, lazyConnect: true });
    await rc.connect();
    try {
      const fake = { ...r, id: "SHA256:forged", names: ["device43"], online: true, relayId: "relay-b" };
      await rc.hset("revtun:{}:devices", "SHA256:forged", `v1.AAAA.${JSON.stringify(fake)}`);
      const own = await rc.hget("revtun:{}:devices", r?.id ?? "");
      assert.ok(own?.startsWith("v1."));
      const [, mac] = /^v1\.([^.]*)\./.exec(own ?? "") ?? [];
      await rc.hset(
        "revtun:{}:devices",
        r?.id ?? "",
        `v1.${mac}.${JSON.stringify({ ...r, relayId: "relay-evil", online: true })}`,
      );
      await rc.publish("revtun:{}:device-events", `relay-x\nSHA256:forged\n${r?.id}`);
    } finally {
      rc.disconnect();
    }
    await sleep(500);
    const listed = b.relay.devices.list().devices;
    assert.deepEqual(
      listed.map((d) => d.id),
      [],
      "the forged record is not listed, and the tampered one is dropped, not believed",
    );
    process.stdout.write(
      `# inventory across relays: online in ${seenOnline} ms, offline in ${seenOffline} ms\n`,
    );
  });
});
