/**
 * Several fleets on one Redis (`--fleet-name NAME`: keys under
 * `revtun:NAME:`): a name a device holds in fleet alpha is reachable
 * through every relay of alpha and through no relay of beta, nor of the
 * unnamed fleet (`revtun:`), even with the same fleet key and relay ids.
 * bin/revtun relays, a real redis-server, ssh2 device and operators.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Redis } from "ioredis";
import { Revtun } from "../helpers/cli.js";
import { type Client, device, ed, fleetRelayArgs, reach, reachWithin } from "../helpers/fleet.js";
import { random } from "../helpers/net.js";
import { RedisServer } from "../helpers/redis.js";
import { freePort } from "../helpers/sshd.js";

describe("--fleet-name: several fleets on one Redis", () => {
  let redis: RedisServer;
  let dir: string;
  const procs: Revtun[] = [];
  const clients: Client[] = [];
  before(async () => {
    redis = await RedisServer.start();
    dir = mkdtempSync(join(tmpdir(), "revtun-fleet-name-"));
  });
  after(async () => {
    for (const c of clients) c.end();
    await Promise.all(procs.map((p) => p.stop("SIGKILL")));
    await redis.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("alpha's device is reachable through alpha's relays only", async () => {
    const dev = ed();
    const op = ed();
    const keysFile = join(dir, "authorized_keys");
    writeFileSync(
      keysFile,
      `restrict,port-forwarding,permitlisten="device42:22" ${dev.public} device\n` +
        `restrict,permitopen="device*:22" ${op.public} operator\n`,
    );
    const fleetFile = join(dir, "fleet_key");
    writeFileSync(fleetFile, ed().private, { mode: 0o600 });
    /** A relay process in fleet `name` (undefined: no --fleet-name), with relay id `id`. */
    const relay = async (id: string, name: string | undefined): Promise<number> => {
      const port = await freePort();
      const hostKey = join(dir, `host_${id}_${name ?? "none"}`);
      const p = new Revtun(
        fleetRelayArgs({
          port,
          hostKey,
          authorizedKeys: keysFile,
          redisUrl: redis.url,
          fleetKey: fleetFile,
          relayId: id,
          extra: name !== undefined ? ["--fleet-name", name] : [],
        }),
      );
      procs.push(p);
      await p.waitFor(/relay listening/);
      return port;
    };
    // The same relay id in each fleet: ids are unique per fleet, not per Redis.
    const alpha1 = await relay("r1", "alpha");
    const alpha2 = await relay("r2", "alpha");
    const beta1 = await relay("r1", "beta");
    const plain = await relay("r1", undefined);
    clients.push(await device(alpha1, dev.private));
    await reachWithin(alpha2, op.private, 2000);
    for (const port of [beta1, plain]) {
      await assert.rejects(reach(port, op.private, random(10)), /no relay of the fleet holds device42:22/);
    }
    const data = random(50_000);
    assert.ok((await reach(alpha2, op.private, data)).equals(data));

    const rc = new Redis({ host: "127.0.0.1", port: redis.port, lazyConnect: true });
    await rc.connect();
    try {
      assert.deepEqual(await rc.hkeys("revtun:alpha:names:r1"), ["device42:22"]);
      assert.equal(await rc.exists("revtun:beta:names:r1"), 0);
      assert.equal(await rc.exists("revtun:names:r1"), 0);
      for (const k of [
        "revtun:alpha:relay:r1",
        "revtun:alpha:relay:r2",
        "revtun:beta:relay:r1",
        "revtun:relay:r1",
      ])
        assert.equal(await rc.exists(k), 1, k);
    } finally {
      rc.disconnect();
    }
  });
});
