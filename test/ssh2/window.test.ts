/**
 * Receive windows (src/ssh2/window.ts) between an ssh2 Client and the relay:
 * a peer overrunning its window is cut off (issue 12 item 4), and managed
 * windows grow across a delayed path, hold a stalled consumer to the window
 * and keep bytes exact (issue 13).
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import ssh2, { type Client, type ClientChannel } from "ssh2";
import { openTunnel, parseRemoteForward } from "../../src/index.js";
import { RevtunError } from "../../src/shared/errors.js";
import { splice } from "../../src/shared/splice.js";
import { connectionHooks } from "../../src/ssh2/hooks.js";
import {
  applyWindowPolicy,
  channelWindow,
  DEFAULT_WINDOW_POLICY,
  reservedWindowBytes,
  SSH2_WINDOW,
  setWindowPolicy,
} from "../../src/ssh2/window.js";
import { DelayProxy } from "../helpers/delay-proxy.js";
import { echoServer, exchange } from "../helpers/net.js";
import { type Key, nextEvent, RelayFixture, sleep, withTimeout } from "../helpers/relay.js";
import { Sshd } from "../helpers/sshd.js";

const MiB = 1024 * 1024;
const sha = (b: Buffer | Buffer[]) => {
  const h = createHash("sha256");
  for (const x of Array.isArray(b) ? b : [b]) h.update(x);
  return h.digest("hex");
};

/** The peer's id for a channel (ssh2 types `outgoing` as unknown). */
const remoteId = (ch: object) => (ch as { outgoing: { id: number } }).outgoing.id;

interface Internals {
  _protocol: { channelData(id: number, data: Buffer): void };
  _sock: net.Socket;
}

describe("receive windows", () => {
  const f = new RelayFixture();
  let key: Key;
  const clients: Client[] = [];
  const sockets: net.Socket[] = [];

  before(async () => {
    key = f.key();
    await f.start([key.pub]);
  });
  after(async () => {
    for (const c of clients) c.destroy();
    for (const s of sockets) s.destroy();
    setWindowPolicy(DEFAULT_WINDOW_POLICY);
    await f.cleanup();
  });

  /** An ssh2 client logged in to the relay (through `port`), with the window policy applied. */
  async function login(port = f.port, policy = true): Promise<Client> {
    const c = new ssh2.Client();
    clients.push(c);
    if (policy) applyWindowPolicy(c);
    await new Promise<void>((resolve, reject) => {
      c.once("ready", () => resolve());
      c.once("error", reject);
      c.connect({ host: "127.0.0.1", port, username: "u", privateKey: readFileSync(key.file) });
    });
    c.on("error", () => {});
    return c;
  }

  /** Ends `c` and waits (at most 2.5 s) for every window reservation to be given back. */
  async function closeAndCheckReservations(c: Client): Promise<void> {
    const gone = new Promise<void>((r) => c.once("close", () => r()));
    c.end();
    await withTimeout(gone, 5_000, "client close");
    for (let i = 0; i < 50 && reservedWindowBytes() > 0; i++) await sleep(50);
    assert.equal(reservedWindowBytes(), 0);
  }

  /** Binds a relay port for `c`; resolves with it and the next forwarded channel. */
  async function forwarded(c: Client): Promise<{ user: net.Socket; channel: ClientChannel }> {
    const port = await new Promise<number>((resolve, reject) =>
      c.forwardIn("127.0.0.1", 0, (err, p) => (err ? reject(err) : resolve(p))),
    );
    const channel = new Promise<ClientChannel>((resolve) =>
      c.once("tcp connection", (_i, accept) => resolve(accept())),
    );
    const user = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true });
    sockets.push(user);
    user.on("error", () => {});
    return { user, channel: await withTimeout(channel, 5_000, "forwarded channel") };
  }

  test("a client that sends beyond its window is disconnected with the reason, and the relay stays small", async (t) => {
    const c = await login();
    const { user, channel } = await forwarded(c);
    user.pause(); // a stalled target: the relay may buffer only what it granted
    const closed = nextEvent(f.relay, "session-closed", () => true, 15_000);
    const clientClosed = new Promise<void>((r) => c.once("close", () => r()));
    let gone = false;
    c.once("close", () => (gone = true));
    const rss0 = process.memoryUsage().rss;
    // Bypass the channel's window bookkeeping: 30,000-byte packets, as in
    // issue 12, up to 96 MiB or 15 s.
    const { _protocol: proto, _sock: sock } = c as unknown as Internals;
    const chunk = Buffer.alloc(30_000, 0x5a);
    const deadline = Date.now() + 15_000;
    let sent = 0;
    while (!gone && sent < 96 * MiB && Date.now() < deadline) {
      for (let i = 0; i < 32 && !gone; i++) {
        proto.channelData(remoteId(channel), chunk);
        sent += chunk.length;
      }
      if (sock.writableLength > 4 * MiB)
        await Promise.race([new Promise((r) => sock.once("drain", r)), sleep(100)]);
      else await new Promise((r) => setImmediate(r));
    }
    const [info] = await closed.catch((err: Error) => {
      t.diagnostic(
        `not closed: sent ${(sent / MiB).toFixed(1)} MiB, RSS +${((process.memoryUsage().rss - rss0) / MiB).toFixed(1)} MiB`,
      );
      throw err;
    });
    assert.match(info.reason, /peer sent \d+ bytes beyond the window of channel \d+/);
    await withTimeout(clientClosed, 5_000, "client close");
    const grown = (process.memoryUsage().rss - rss0) / MiB;
    t.diagnostic(`cut off after ${(sent / MiB).toFixed(1)} MiB sent, RSS +${grown.toFixed(1)} MiB`);
    assert.ok(sent < 32 * MiB, `kept sending for ${sent / MiB} MiB before being cut off`);
    assert.ok(grown < 48, `RSS grew by ${grown.toFixed(1)} MiB`);
  });

  test("a server that overruns the window a client granted is cut off with a PROTOCOL error (the agent side)", async () => {
    // The agent's side of the same check: a Client with the default action,
    // fed by an ssh2 server that ignores the window it was granted.
    const hostKey = readFileSync(key.file);
    const live = (o: Client | ssh2.Connection) =>
      connectionHooks(o).find((h) => h.name === "receive-window")?.live;
    let serverLive: boolean | undefined;
    const server = new ssh2.Server({ hostKeys: [hostKey] }, (conn) => {
      serverLive = live(conn);
      conn.on("error", () => {});
      conn.on("authentication", (ctx) => ctx.accept());
      conn.on("ready", () => {
        conn.on("request", (accept, _reject, name) => {
          if (name !== "tcpip-forward") return;
          accept?.(4242);
          conn.forwardOut("127.0.0.1", 4242, "127.0.0.1", 1, (err, ch) => {
            if (err) return;
            const proto = (conn as unknown as Internals)._protocol;
            const chunk = Buffer.alloc(30_000, 1);
            for (let i = 0; i < 200; i++) proto.channelData(remoteId(ch), chunk); // 6 MB > 2 MiB
          });
        });
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      const c = new ssh2.Client();
      clients.push(c);
      applyWindowPolicy(c);
      const failed = new Promise<Error>((r) => c.on("error", r));
      const closed = new Promise<void>((r) => c.once("close", () => r()));
      c.on("tcp connection", (_i, accept) => accept().pause());
      c.on("ready", () => c.forwardIn("127.0.0.1", 4242, () => {}));
      c.connect({
        host: "127.0.0.1",
        port: (server.address() as net.AddressInfo).port,
        username: "u",
        password: "x",
      });
      const err = await withTimeout(failed, 5_000, "window error");
      assert.equal(live(c), true, "receive-window hook not live on a Client");
      assert.equal(serverLive, true, "receive-window hook not live on a server Connection");
      assert.ok(err instanceof RevtunError && err.code === "PROTOCOL", String(err));
      assert.match(err.message, /peer sent \d+ bytes beyond the window of channel 0/);
      await withTimeout(closed, 5_000, "client close");
    } finally {
      server.close();
    }
  });

  /** Relay → client download of `size` bytes; returns the hash, the largest window and MiB/s. */
  async function download(c: Client, size: number) {
    const { user, channel } = await forwarded(c);
    const payload = randomBytes(size);
    user.end(payload);
    const chunks: Buffer[] = [];
    let maxWindow = 0;
    const started = Date.now();
    channel.on("data", (d: Buffer) => {
      chunks.push(d);
      maxWindow = Math.max(maxWindow, channelWindow(channel)?.window ?? 0);
    });
    await withTimeout(new Promise((r) => channel.once("end", r)), 20_000, "download end");
    const ms = Date.now() - started;
    channel.end();
    return {
      same: sha(chunks) === sha(payload),
      got: Buffer.concat(chunks).length,
      maxWindow,
      mibs: size / MiB / (ms / 1000),
      user,
      channel,
    };
  }

  test("across a 40 ms round trip the window grows past 2 MiB, stays under the cap, and 32 MiB arrive byte-exact both ways", async (t) => {
    const proxy = await DelayProxy.start(f.port, 20);
    try {
      const c = await login(proxy.port);
      const down = await download(c, 32 * MiB);
      assert.equal(down.got, 32 * MiB);
      assert.ok(down.same, "download hash");
      t.diagnostic(`download: window up to ${down.maxWindow} bytes, ${down.mibs.toFixed(1)} MiB/s`);
      assert.ok(down.maxWindow > SSH2_WINDOW, `window stayed at ${down.maxWindow}`);
      assert.ok(down.maxWindow <= DEFAULT_WINDOW_POLICY.maxWindow, `window ${down.maxWindow} above the cap`);

      // Upload on a fresh connection: the relay's channel is the managed receiver.
      const { user, channel } = await forwarded(c);
      const payload = randomBytes(32 * MiB);
      const got: Buffer[] = [];
      let maxReserved = 0;
      user.on("data", (d: Buffer) => {
        got.push(d);
        maxReserved = Math.max(maxReserved, reservedWindowBytes());
      });
      const ended = new Promise((r) => user.once("end", r));
      channel.end(payload);
      await withTimeout(ended, 20_000, "upload end");
      assert.equal(sha(got), sha(payload));
      assert.ok(maxReserved > 0, "the relay's window never grew");
      assert.ok(reservedWindowBytes() <= DEFAULT_WINDOW_POLICY.processBudget);
      // Closing the connection gives every reservation back.
      await closeAndCheckReservations(c);
    } finally {
      await proxy.close();
    }
  });

  test("a stalled target behind the splice holds no more than the window; it then drains byte-exact", async () => {
    // The agent's data path: channel -> splice -> local socket, to a target
    // that stops reading. The kernel's socket buffers take what they take;
    // what this process holds is the channel's readable buffer and the
    // socket's write buffer, and that must stay within the window.
    let target: net.Socket | undefined;
    const got: Buffer[] = [];
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      target = s;
      s.pause();
      s.on("data", (d: Buffer) => got.push(d));
      s.once("end", () => s.end());
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const proxy = await DelayProxy.start(f.port, 5);
    try {
      const c = await login(proxy.port);
      const { user, channel } = await forwarded(c);
      const local = net.connect({ host: "127.0.0.1", port: (server.address() as net.AddressInfo).port });
      const spliced = splice(channel, local);
      const payload = randomBytes(64 * MiB);
      user.end(payload);
      let held = -1;
      let maxHeld = 0;
      let maxWindow = 0;
      // Sample until what is held stops changing (the sender is out of credit).
      for (let i = 0; i < 50; i++) {
        await sleep(100);
        const now = channel.readableLength + local.writableLength;
        maxHeld = Math.max(maxHeld, now);
        maxWindow = channelWindow(channel)?.peak ?? 0;
        if (now === held && now > 0) break;
        held = now;
      }
      assert.ok(
        maxWindow >= SSH2_WINDOW && maxWindow <= DEFAULT_WINDOW_POLICY.maxWindow,
        `window ${maxWindow}`,
      );
      assert.ok(maxHeld > 0, "nothing was held: the target did not stall");
      assert.ok(maxHeld <= maxWindow + 64 * 1024, `${maxHeld} bytes held with a ${maxWindow}-byte window`);
      target?.resume();
      const r = await withTimeout(spliced, 20_000, "splice end");
      assert.equal(r.error, undefined);
      await withTimeout(
        new Promise<void>((res) => (target?.readableEnded ? res() : target?.once("end", () => res()))),
        5_000,
        "target end",
      );
      assert.equal(sha(got), sha(payload));
    } finally {
      target?.destroy();
      server.close();
      await proxy.close();
    }
  });

  test("toward OpenSSH 8.8 or later the agent's window stops at 15 MiB (100 ms round trip)", async (t) => {
    const sshd = await Sshd.start();
    const proxy = await DelayProxy.start(sshd.port, 50);
    const echo = await echoServer();
    const knownHosts = join(sshd.dir, "known_hosts_proxy");
    writeFileSync(knownHosts, `[127.0.0.1]:${proxy.port} ${sshd.hostKeyPub()}\n`);
    const tunnel = await openTunnel({
      ...sshd.tunnelLogin(),
      port: proxy.port,
      knownHostsFiles: [knownHosts],
      forwards: [parseRemoteForward(`127.0.0.1:0:127.0.0.1:${echo.port}`)],
    });
    let maxReserved = 0;
    const sampler = setInterval(() => {
      maxReserved = Math.max(maxReserved, reservedWindowBytes());
    }, 5);
    try {
      const port = await withTimeout(
        new Promise<number>((resolve) => tunnel.on("forward-bound", (e) => resolve(e.port ?? 0))),
        10_000,
        "forward-bound",
      );
      const payload = randomBytes(48 * MiB);
      const back = await exchange(port, payload, "127.0.0.1", 30_000);
      assert.equal(sha(back), sha(payload));
      t.diagnostic(`largest reservation ${maxReserved} bytes above 2 MiB`);
      assert.ok(maxReserved > 0, "the window never grew");
      assert.ok(
        maxReserved <= DEFAULT_WINDOW_POLICY.maxWindowOpenSSH - SSH2_WINDOW,
        `reserved ${maxReserved}`,
      );
    } finally {
      clearInterval(sampler);
      await tunnel.close(0);
      await echo.close();
      await proxy.close();
      await sshd.close();
    }
  });

  test("a session that grew a window opens its next channel there, within half the budget, and bytes stay exact", async () => {
    const proxy = await DelayProxy.start(f.port, 20);
    try {
      const c = await login(proxy.port);
      // Long enough for round trips measured at full window (what a session learns from), not only the first.
      const first = await download(c, 48 * MiB);
      assert.ok(first.same, "first download hash");
      assert.ok(first.maxWindow > SSH2_WINDOW, `first window stayed at ${first.maxWindow}`);

      // Seeded at the confirmation, before a byte of the second channel arrives.
      const second = await forwarded(c);
      const seeded = channelWindow(second.channel);
      assert.ok(seeded !== undefined && seeded.window > SSH2_WINDOW, `not seeded: ${JSON.stringify(seeded)}`);
      assert.ok(
        seeded.window - SSH2_WINDOW <= DEFAULT_WINDOW_POLICY.sessionBudget / 2,
        `seed ${seeded.window} beyond half the session budget`,
      );
      const payload = randomBytes(8 * MiB);
      const chunks: Buffer[] = [];
      second.channel.on("data", (d: Buffer) => chunks.push(d));
      second.user.end(payload);
      await withTimeout(new Promise((r) => second.channel.once("end", r)), 20_000, "second download end");
      assert.equal(sha(chunks), sha(payload));
      second.channel.end();

      // With a small session budget a seed takes at most half of it.
      const prev = setWindowPolicy({ sessionBudget: 4 * MiB });
      try {
        const third = await forwarded(c);
        const w = channelWindow(third.channel);
        assert.ok(
          w === undefined || w.window <= SSH2_WINDOW + 2 * MiB,
          `seed ${w?.window} beyond 2 MiB of a 4 MiB budget`,
        );
        third.channel.end();
        third.user.end();
      } finally {
        setWindowPolicy(prev);
      }

      // The policy off seeds nothing.
      const off = setWindowPolicy({ enabled: false });
      try {
        const fourth = await forwarded(c);
        assert.equal(channelWindow(fourth.channel), undefined, "seeded with the policy off");
        fourth.channel.end();
        fourth.user.end();
      } finally {
        setWindowPolicy(off);
      }
    } finally {
      await proxy.close();
    }
  });

  test("a relay that grew a window on a device's session offers it in its next channel open; refused opens give it back", async () => {
    const proxy = await DelayProxy.start(f.port, 20);
    try {
      const c = await login(proxy.port);
      const send = async (size: number) => {
        const { user, channel } = await forwarded(c);
        const offered = (channel as unknown as { outgoing: { window: number } }).outgoing.window;
        const payload = randomBytes(size);
        const got: Buffer[] = [];
        user.on("data", (d: Buffer) => got.push(d));
        const ended = new Promise((r) => user.once("end", r));
        channel.end(payload);
        await withTimeout(ended, 20_000, "device upload end");
        assert.equal(sha(got), sha(payload));
        user.end();
        return offered;
      };
      // The device uploads: the relay's channel is the receiver and grows.
      assert.equal(await send(24 * MiB), SSH2_WINDOW, "a cold session's first channel opens at 2 MiB");
      const seeded = await send(4 * MiB);
      assert.ok(seeded > SSH2_WINDOW, `the next open offered ${seeded}`);
      assert.ok(
        seeded - SSH2_WINDOW <= DEFAULT_WINDOW_POLICY.sessionBudget / 2,
        `seed ${seeded} beyond half the budget`,
      );
      // A refused open (no listener on the device side) holds no reservation.
      c.removeAllListeners("tcp connection");
      const before = reservedWindowBytes();
      c.on("tcp connection", (_i, _accept, reject) => reject());
      const port = await new Promise<number>((resolve, reject) =>
        c.forwardIn("127.0.0.1", 0, (err, p) => (err ? reject(err) : resolve(p))),
      );
      const refused = net.connect({ host: "127.0.0.1", port });
      sockets.push(refused);
      refused.on("error", () => {});
      await withTimeout(new Promise((r) => refused.once("close", r)), 5_000, "refused connection close");
      assert.ok(
        reservedWindowBytes() <= before,
        `reserved ${reservedWindowBytes()} > ${before} after a refused open`,
      );
      await closeAndCheckReservations(c);
    } finally {
      await proxy.close();
    }
  });

  test("a window larger than the path needs halves back toward twice what it carries, bytes exact", async () => {
    const proxy = await DelayProxy.start(f.port, 20);
    try {
      const c = await login(proxy.port);
      const fast = await download(c, 48 * MiB);
      assert.ok(fast.same, "first download hash");
      // The path narrows to 16 MiB/s: 0.64 MiB a 40 ms round trip. The next
      // channel opens at what the fast one learned, more than the path needs.
      proxy.bytesPerSecond = 16 * MiB;
      const { user, channel } = await forwarded(c);
      const seeded = channelWindow(channel)?.window ?? 0;
      assert.ok(seeded > 4 * MiB, `seeded at ${seeded}, not above 4 MiB: nothing to shrink`);
      const payload = randomBytes(12 * MiB);
      const chunks: Buffer[] = [];
      let last = seeded;
      channel.on("data", (d: Buffer) => {
        chunks.push(d);
        last = channelWindow(channel)?.window ?? last;
      });
      user.end(payload);
      await withTimeout(new Promise((r) => channel.once("end", r)), 20_000, "narrow download end");
      assert.equal(sha(chunks), sha(payload));
      assert.ok(
        last <= 4 * MiB,
        `window still ${last} after 0.75 s on a 0.64 MiB-per-round-trip path (seeded ${seeded})`,
      );
      channel.end();
    } finally {
      await proxy.close();
    }
  });

  test("the session budget bounds how far windows grow", async () => {
    const prev = setWindowPolicy({ sessionBudget: MiB });
    const proxy = await DelayProxy.start(f.port, 20);
    try {
      const c = await login(proxy.port);
      const down = await download(c, 8 * MiB);
      assert.ok(down.same);
      assert.ok(down.maxWindow > SSH2_WINDOW, `window stayed at ${down.maxWindow}`);
      assert.ok(down.maxWindow <= SSH2_WINDOW + MiB, `window ${down.maxWindow} beyond the 1 MiB budget`);
    } finally {
      setWindowPolicy(prev);
      await proxy.close();
    }
  });

  test("policy off: ssh2's fixed 2 MiB window applies (the benchmark's A/B switch)", async () => {
    const prev = setWindowPolicy({ enabled: false });
    const proxy = await DelayProxy.start(f.port, 20);
    try {
      const c = await login(proxy.port);
      const off = await download(c, 8 * MiB);
      assert.ok(off.same);
      assert.equal(off.maxWindow, 0, "channel managed with the policy off");
    } finally {
      setWindowPolicy(prev);
      await proxy.close();
    }
    assert.throws(() => setWindowPolicy({ maxWindow: 1000 }), /bad maxWindow 1000/);
  });
});
