/**
 * TunnelSet.apply reload semantics with real Tunnels against a real OpenSSH
 * sshd: an unchanged definition keeps its Tunnel and its open connections, a
 * changed one is rebuilt, a removed one closed, an added one started; a
 * build() that throws leaves the set as it was.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import { TunnelSet } from "../../src/agent/tunnel-set.js";
import { parseRemoteForward, Tunnel } from "../../src/index.js";
import { echoServer, type Listening, random, sha256, withTimeout } from "../helpers/net.js";
import { Sshd } from "../helpers/sshd.js";

let sshd: Sshd;
let echo: Listening<net.Server>;
before(async () => {
  sshd = await Sshd.start();
  echo = await echoServer();
});
after(async () => {
  await echo?.close();
  await sshd?.close();
});

interface Def {
  name: string;
  fingerprint: string;
}

/** A connection held open through a tunnel: send a chunk, get it echoed back. */
async function openEcho(port: number) {
  const sock = net.connect({ host: "127.0.0.1", port });
  sock.on("error", () => {});
  await new Promise<void>((resolve, reject) => sock.once("connect", resolve).once("error", reject));
  let got = Buffer.alloc(0);
  sock.on("data", (d: Buffer) => {
    got = Buffer.concat([got, d]);
  });
  return {
    sock,
    async roundTrip(n = 64 * 1024): Promise<boolean> {
      const p = random(n);
      got = Buffer.alloc(0);
      sock.write(p);
      const deadline = Date.now() + 3_000;
      while (got.length < n && Date.now() < deadline && !sock.destroyed)
        await new Promise((r) => setTimeout(r, 10));
      return sha256(got) === sha256(p);
    },
  };
}

describe("TunnelSet.apply", () => {
  test("keeps unchanged, rebuilds changed, closes removed, starts added; a failed build changes nothing", {
    timeout: 20_000,
  }, async () => {
    let builds = 0;
    let failOn: string | undefined;
    const set = new TunnelSet<Def>(async (def) => {
      builds++;
      if (def.name === failOn) throw new Error(`cannot build ${def.name}`);
      return new Tunnel({
        ...sshd.tunnelLogin(),
        forwards: [parseRemoteForward(`127.0.0.1:0:127.0.0.1:${echo.port}`)],
      });
    });
    // The port each tunnel got, in order of binding; listeners go on at 'added', before start().
    const ports = new Map<Tunnel, number>();
    const boundWaiters = new Map<Tunnel, () => void>();
    set.on("added", ({ tunnel }) => {
      tunnel.on("forward-bound", (e) => {
        ports.set(tunnel, e.port ?? 0);
        boundWaiters.get(tunnel)?.();
      });
    });
    const bound = (t: Tunnel) =>
      withTimeout(
        new Promise<number>((resolve) => {
          const p = ports.get(t);
          if (p !== undefined) resolve(p);
          else boundWaiters.set(t, () => resolve(ports.get(t) ?? 0));
        }),
        5_000,
        "forward bound",
      );
    const byName = () => new Map(set.tunnels());
    const open: { sock: net.Socket }[] = [];
    try {
      const first = await set.apply(
        {
          tunnels: [
            { name: "a", fingerprint: "a1" },
            { name: "b", fingerprint: "b1" },
            { name: "c", fingerprint: "c1" },
          ],
        },
        200,
      );
      assert.deepEqual(first, { added: ["a", "b", "c"], changed: [], removed: [], unchanged: [] });
      const before = byName();
      const [a, b, c] = ["a", "b", "c"].map((n) => before.get(n) as Tunnel);
      assert.ok(a && b && c);
      const aPort = await bound(a);
      await bound(b);
      await bound(c);
      // A connection through a, opened before the reload.
      const conn = await openEcho(aPort);
      open.push(conn);
      assert.equal(await conn.roundTrip(), true, "bytes flow through a before the reload");
      assert.equal(a.status().openConnections, 1);

      const second = await set.apply(
        {
          tunnels: [
            { name: "a", fingerprint: "a1" },
            { name: "b", fingerprint: "b2" },
            { name: "d", fingerprint: "d1" },
          ],
        },
        200,
      );
      assert.deepEqual(second, { added: ["d"], changed: ["b"], removed: ["c"], unchanged: ["a"] });
      const afterReload = byName();
      assert.deepEqual([...afterReload.keys()].sort(), ["a", "b", "d"]);
      assert.equal(afterReload.get("a"), a, "unchanged: the same Tunnel object");
      assert.equal(a.status().state, "up");
      assert.equal(
        await conn.roundTrip(),
        true,
        "bytes still flow over the connection opened before the reload",
      );
      assert.equal(a.status().openConnections, 1, "the same connection, not a new one");

      const newB = afterReload.get("b") as Tunnel;
      assert.notEqual(newB, b, "changed: a new Tunnel");
      assert.equal(b.status().state, "stopped", "the old b is closed");
      assert.equal(c.status().state, "stopped", "c is closed");
      assert.equal(await withTimeout(b.done, 1_000, "old b done"), undefined);
      assert.equal(await withTimeout(c.done, 1_000, "c done"), undefined);
      const d = afterReload.get("d") as Tunnel;
      const newBPort = await bound(newB);
      const dPort = await bound(d);
      for (const [name, port] of [
        ["new b", newBPort],
        ["d", dPort],
      ] as const) {
        const x = await openEcho(port);
        open.push(x);
        assert.equal(await x.roundTrip(1000), true, `bytes flow through ${name}`);
        x.sock.destroy();
      }

      // A build that throws: nothing is closed, replaced or added.
      failOn = "e";
      const buildsBefore = builds;
      await assert.rejects(
        set.apply(
          {
            tunnels: [
              { name: "a", fingerprint: "a1" },
              { name: "b", fingerprint: "b3" },
              { name: "e", fingerprint: "e1" },
            ],
          },
          200,
        ),
        /cannot build e/,
      );
      assert.equal(builds - buildsBefore, 2, "b3 and e were built (the new b is never started)");
      const unchanged = byName();
      assert.deepEqual([...unchanged.entries()], [...afterReload.entries()], "the set as it was");
      for (const t of [a, newB, d]) assert.equal(t.status().state, "up");
      assert.equal(await conn.roundTrip(), true, "a's connection still flows after the failed apply");
    } finally {
      for (const o of open) o.sock.destroy();
      await set.close(0);
    }
    assert.equal(set.size, 0);
  });
});
