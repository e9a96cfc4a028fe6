import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import type net from "node:net";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import { after, before, describe, test } from "node:test";
import { parseFleetKey } from "../../src/relay/fleet/fleet-key.js";
import { PeerPool } from "../../src/relay/fleet/peer-client.js";
import { FleetRegistry } from "../../src/relay/fleet/registry.js";
import { openViaFleet } from "../../src/relay/fleet/route.js";
import { RevtunError } from "../../src/shared/errors.js";
import { echoServer, type Listening, random } from "../helpers/net.js";
import { RedisServer } from "../helpers/redis.js";
import { Sshd } from "../helpers/sshd.js";

function roundTrip(ch: Duplex, payload: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const t = setTimeout(() => reject(new Error("round trip timed out")), 10_000);
    ch.on("data", (d: Buffer) => chunks.push(d));
    ch.on("end", () => {
      clearTimeout(t);
      resolve(Buffer.concat(chunks));
    });
    ch.on("error", reject);
    ch.end(payload);
  });
}

/**
 * Two "relays" are two real sshds (their direct-tcpip to the local echo
 * server stands in for a named tunnel), both admitting one fleet key; the
 * registries are this process's, as each relay's would be.
 */
describe("routing to a name through the fleet", () => {
  let redis: RedisServer;
  let a: Sshd;
  let b: Sshd;
  let echo: Listening<net.Server>;
  let fleetKey: string;
  before(async () => {
    [redis, a, b, echo] = await Promise.all([RedisServer.start(), Sshd.start(), Sshd.start(), echoServer()]);
    fleetKey = readFileSync(a.userKey, "utf8");
    writeFileSync(join(b.dir, "authorized_keys"), `${readFileSync(`${a.userKey}.pub`, "utf8")}`);
  });
  after(async () => {
    await Promise.all([redis.close(), a.close(), b.close(), echo.close()]);
  });

  const registry = (id: string, s?: Sshd) =>
    new FleetRegistry({
      redis: { host: "127.0.0.1", port: redis.port, db: 0 },
      self: {
        relayId: id,
        address: `127.0.0.1:${s?.port ?? 1}`,
        hostKeyFingerprint: s?.fingerprint() ?? "SHA256:none",
      },
    });

  test("newest holder first; after kill -9 of that relay the next holder serves at once", async () => {
    assert.equal(parseFleetKey(fleetKey).publicKey.startsWith("ssh-ed25519 "), true);
    const ra = registry("relay-a", a);
    const rb = registry("relay-b", b);
    const rc = registry("relay-c");
    const pool = new PeerPool({ username: a.user });
    const opts = { registry: rc, pool, fleetKey, attemptTimeoutMs: 3000 };
    const target = { name: "127.0.0.1", port: echo.port, originAddress: "192.0.2.1", originPort: 5000 };
    try {
      await Promise.all([ra.start(), rb.start(), rc.start()]);
      const key = `127.0.0.1:${echo.port}`;
      await rb.announce(key, { sessionId: "b1" });
      await new Promise((r) => setTimeout(r, 5));
      await ra.announce(key, { sessionId: "a1" });

      const first = await openViaFleet(opts, target);
      assert.equal(first.holder.relayId, "relay-a");
      const payload = random(20_000);
      assert.ok((await roundTrip(first.channel, payload)).equals(payload));

      // relay-a dies hard; its lease in Redis is still live (ra keeps renewing, as for up to 3 s after kill -9).
      // Sessions first: they are sshd's children, found through the listener's pid.
      a.killSessions();
      process.kill(a.pid as number, "SIGKILL");
      const t0 = performance.now();
      const second = await openViaFleet(opts, target);
      const ms = performance.now() - t0;
      console.log(`# next holder served ${Math.round(ms)} ms after the newest holder was killed`);
      assert.equal(second.holder.relayId, "relay-b");
      assert.deepEqual(
        second.failed.map((f) => [f.holder.relayId, f.error.code]),
        [["relay-a", "CONNECT"]],
      );
      assert.ok(ms < 1000, `${ms} ms`);
      assert.ok((await roundTrip(second.channel, payload)).equals(payload));

      await assert.rejects(
        openViaFleet(opts, { ...target, name: "nobody" }),
        (e: unknown) =>
          e instanceof RevtunError &&
          e.code === "CONNECT" &&
          e.message === `no relay of the fleet holds nobody:${echo.port}`,
      );
      await rb.withdraw(key, { sessionId: "b1" });
      await assert.rejects(openViaFleet(opts, target), (e: unknown) => {
        assert.ok(e instanceof RevtunError && e.code === "CONNECT");
        assert.match(
          e.message,
          new RegExp(`^127\\.0\\.0\\.1:${echo.port}: every relay holding it failed: fleet peer relay-a `),
        );
        return true;
      });
    } finally {
      pool.close();
      await Promise.all([ra.close(), rb.close(), rc.close()]);
    }
  });
});
