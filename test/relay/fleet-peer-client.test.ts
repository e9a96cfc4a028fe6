import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import net from "node:net";
import type { Duplex } from "node:stream";
import { after, before, describe, test } from "node:test";
import { type PeerChannelRequest, PeerPool } from "../../src/relay/fleet/peer-client.js";
import { RevtunError } from "../../src/shared/errors.js";
import { echoServer, type Listening, random, waitFor } from "../helpers/net.js";
import { childPids, freePort, Sshd } from "../helpers/sshd.js";

/** Writes `payload`, half-closes, and collects what comes back until the channel ends. */
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

describe("fleet peer client against a real OpenSSH sshd", () => {
  let sshd: Sshd;
  let echo: Listening<net.Server>;
  let req: PeerChannelRequest;
  before(async () => {
    sshd = await Sshd.start();
    echo = await echoServer();
    req = {
      relayId: "relay-b",
      address: `127.0.0.1:${sshd.port}`,
      hostKeyFingerprint: sshd.fingerprint(),
      fleetKey: readFileSync(sshd.userKey),
      // sshd permits direct-tcpip to the local echo server: it plays the tunnel name.
      name: "127.0.0.1",
      port: echo.port,
      originAddress: "192.0.2.7",
      originPort: 40000,
      timeoutMs: 5000,
    };
  });
  after(async () => {
    await echo.close();
    await sshd.close();
  });

  test("carries bytes both ways, many channels on one SSH connection, closed when idle", async () => {
    const pool = new PeerPool({ username: sshd.user, idleMs: 300 });
    try {
      const payloads = [random(100_000), random(10), random(50_000)];
      const chans = await Promise.all(payloads.map(() => pool.open(req)));
      const back = await Promise.all(chans.map((ch, i) => roundTrip(ch, payloads[i] as Buffer)));
      for (const [i, b] of back.entries()) assert.ok(b.equals(payloads[i] as Buffer), `channel ${i}`);
      assert.equal(childPids(sshd.pid).length, 1, "one SSH connection for three channels");
      assert.deepEqual(pool.connected(), ["relay-b"]);
      for (const ch of chans) ch.destroy();
      await waitFor(
        () => pool.connected().length === 0 && childPids(sshd.pid).length === 0,
        "idle close",
        5000,
      );
    } finally {
      pool.close();
    }
  });

  test("a host key other than the registry's is refused, naming the peer, the name and both keys", async () => {
    const pool = new PeerPool({ username: sshd.user });
    try {
      const logStart = sshd.log.length;
      const wrong = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
      await assert.rejects(pool.open({ ...req, hostKeyFingerprint: wrong }), (err: unknown) => {
        assert.ok(err instanceof RevtunError);
        assert.equal(err.code, "CONNECT");
        assert.equal(err.reason, "hostkey_mismatch");
        assert.match(
          err.message,
          /^fleet peer relay-b \(127\.0\.0\.1:\d+\): cannot open 127\.0\.0\.1:\d+: host key/,
        );
        assert.ok(err.message.includes(sshd.fingerprint()) && err.message.includes(wrong), err.message);
        return true;
      });
      assert.deepEqual(pool.connected(), []);
      // Authentication never started: sshd saw no publickey attempt.
      assert.doesNotMatch(sshd.log.slice(logStart), /publickey/);
      await waitFor(() => childPids(sshd.pid).length === 0, "no session left", 5000);
    } finally {
      pool.close();
    }
  });

  test("a refused channel and a dead peer are CONNECT errors; the connection survives a refused channel", async () => {
    const pool = new PeerPool({ username: sshd.user });
    try {
      const closed = await freePort();
      await assert.rejects(pool.open({ ...req, port: closed }), (err: unknown) => {
        assert.ok(err instanceof RevtunError && err.code === "CONNECT" && err.reason === "refused");
        assert.match(err.message, new RegExp(`cannot open 127\\.0\\.0\\.1:${closed}: the peer refused`));
        return true;
      });
      const payload = random(1000);
      assert.ok((await roundTrip(await pool.open(req), payload)).equals(payload));
      assert.equal(childPids(sshd.pid).length, 1);
      const dead = await freePort();
      const t0 = performance.now();
      await assert.rejects(
        pool.open({ ...req, relayId: "relay-dead", address: `127.0.0.1:${dead}` }),
        (err: unknown) =>
          err instanceof RevtunError &&
          err.code === "CONNECT" &&
          err.reason === "refused" &&
          err.message.startsWith(`fleet peer relay-dead (127.0.0.1:${dead}): cannot open 127.0.0.1:`),
      );
      assert.ok(performance.now() - t0 < 1000, "a dead relay fails at once, so the next holder is tried");
      assert.deepEqual(pool.connected(), ["relay-b"]);
    } finally {
      pool.close();
    }
  });

  test("a peer that accepts TCP and never speaks SSH fails within the timeout and its socket is closed", async () => {
    const sockets: net.Socket[] = [];
    const closedAt: number[] = [];
    const hole = net.createServer((s) => {
      sockets.push(s);
      // Reads (and ignores) the client's banner, so the client's FIN is seen.
      s.resume();
      s.on("error", () => {});
      s.on("close", () => closedAt.push(performance.now()));
    });
    await new Promise<void>((r) => hole.listen(0, "127.0.0.1", r));
    const port = (hole.address() as net.AddressInfo).port;
    const pool = new PeerPool({ username: sshd.user });
    try {
      const t0 = performance.now();
      await assert.rejects(
        pool.open({ ...req, relayId: "relay-hole", address: `127.0.0.1:${port}`, timeoutMs: 500 }),
        (e: unknown) =>
          e instanceof RevtunError &&
          e.code === "CONNECT" &&
          e.reason === "timeout" &&
          /^fleet peer relay-hole \(127\.0\.0\.1:\d+\): cannot open 127\.0\.0\.1:\d+: no SSH handshake within 500 ms$/.test(
            e.message,
          ),
      );
      const ms = performance.now() - t0;
      assert.ok(ms >= 450 && ms < 1000, `${ms} ms`);
      await waitFor(() => closedAt.length === 1, "black hole socket closed", 3000);
      assert.ok((closedAt[0] as number) - t0 < 1500);
      assert.deepEqual(pool.connected(), []);
    } finally {
      pool.close();
      for (const s of sockets) s.destroy();
      await new Promise((r) => hole.close(r));
    }
  });

  test("drop (the peer's lease disappeared) closes the connection and its channels", async () => {
    const pool = new PeerPool({ username: sshd.user });
    try {
      const ch = await pool.open(req);
      // Flowing, as the relay's splice keeps it: a paused stream would hold its 'close' until read.
      ch.resume();
      const closed = new Promise((r) => ch.once("close", r));
      pool.drop("relay-b");
      await closed;
      assert.deepEqual(pool.connected(), []);
      await waitFor(() => childPids(sshd.pid).length === 0, "session gone", 5000);
    } finally {
      pool.close();
    }
  });
});
