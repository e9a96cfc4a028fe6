/**
 * splice(channel, socket) on real parts: ssh2 channels between an in-process
 * ssh2 Client and Server on loopback, and net.Sockets to a local TCP server.
 * Each case runs with the spliced channel on the server side (the relay's
 * case: eof() and close() are separate) and on the client side (the agent's).
 *
 *   peer channel  <-- ssh2 -->  spliced channel  <-splice->  socket  <-- TCP -->  peer socket
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { Channel } from "ssh2";
import { type SpliceResult, splice } from "../../src/shared/splice.js";
import { withTimeout } from "../helpers/net.js";
import { type Ssh2Pair, ssh2Pair } from "../helpers/ssh2-loopback.js";

const sha = (bufs: Buffer[]) => {
  const h = createHash("sha256");
  for (const b of bufs) h.update(b);
  return h.digest("hex");
};

let pair: Ssh2Pair;
let tcp: net.Server;
let tcpPort: number;
const accepted: ((s: net.Socket) => void)[] = [];
before(async () => {
  pair = await ssh2Pair();
  tcp = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
    s.on("error", () => {});
    accepted.shift()?.(s);
  });
  tcp.listen(0, "127.0.0.1");
  await once(tcp, "listening");
  tcpPort = (tcp.address() as net.AddressInfo).port;
});
after(async () => {
  await pair?.close();
  tcp?.close();
});

interface Rig {
  /** The channel that is spliced, and the test's end of it over SSH. */
  spliced: Channel;
  peerChannel: Channel;
  /** The socket that is spliced, and the test's end of it over TCP. */
  socket: net.Socket;
  peerSocket: net.Socket;
  result: Promise<SpliceResult>;
  /** Each end's 'close', listened for from the start. */
  closed: Record<"spliced" | "peerChannel" | "socket" | "peerSocket", Promise<void>>;
  destroyAll(): void;
}

async function rig(side: "server" | "client", opts: { pausePeerSocket?: boolean } = {}): Promise<Rig> {
  let spliced: Channel;
  let peerChannel: Channel;
  if (side === "server") {
    const c = await pair.serverChannel();
    spliced = c.server;
    peerChannel = c.client;
  } else {
    const c = await pair.clientChannel();
    spliced = c.client;
    peerChannel = c.server;
  }
  const peer = new Promise<net.Socket>((r) => accepted.push(r));
  const socket = net.connect({ host: "127.0.0.1", port: tcpPort, allowHalfOpen: true, noDelay: true });
  const peerSocket = await peer;
  if (opts.pausePeerSocket) peerSocket.pause();
  const closed = {
    spliced: closeOf(spliced),
    peerChannel: closeOf(peerChannel),
    socket: closeOf(socket),
    peerSocket: closeOf(peerSocket),
  };
  const result = splice(spliced, socket);
  return {
    spliced,
    peerChannel,
    socket,
    peerSocket,
    result,
    closed,
    destroyAll() {
      for (const d of [spliced, peerChannel, socket, peerSocket]) d.destroy();
    },
  };
}

/** Resolves with everything `s` delivers up to its 'end'; rejects after `ms`. */
function readAll(s: NodeJS.ReadableStream, ms = 4000): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const got: Buffer[] = [];
    const timer = setTimeout(() => reject(new Error(`no end within ${ms} ms`)), ms);
    s.on("data", (d: Buffer) => got.push(d));
    s.once("end", () => {
      clearTimeout(timer);
      resolve(got);
    });
  });
}

const closeOf = (s: NodeJS.EventEmitter) => new Promise<void>((resolve) => s.once("close", () => resolve()));

/** Half-closes the test's end of a channel: a server-side channel's end() would send CLOSE too. */
function peerEnd(ch: Channel, data: string | Buffer) {
  const c = ch as Channel & { server?: boolean; eof?: () => void };
  if (c.server && c.eof) ch.write(data, () => c.eof?.());
  else ch.end(data);
}

/**
 * Both ends of the splice released: the spliced channel and socket closed,
 * and so both peers. The peers read what is left (a stream closes after its
 * 'end' is consumed), and the TCP peer, which allows half-open, shuts its
 * side once it has read the FIN, as a client would.
 */
async function allClosed(r: Rig) {
  const pending = new Set(Object.keys(r.closed));
  for (const [name, p] of Object.entries(r.closed)) void p.then(() => pending.delete(name));
  r.peerChannel.resume();
  r.peerSocket.resume();
  if (r.peerSocket.readableEnded) r.peerSocket.end();
  else r.peerSocket.once("end", () => r.peerSocket.end());
  await withTimeout(Promise.all(Object.values(r.closed)), 3000, "every end closed").catch((err: Error) => {
    throw new Error(`${err.message}; still open: ${[...pending].join(", ")}`);
  });
}

/** Writes `total` bytes in `chunk`-sized pieces, honouring backpressure; `accepted` counts write() calls made. */
function writer(dst: NodeJS.WritableStream, total: number, chunk = 64 * 1024) {
  const sent = createHash("sha256");
  const state = { accepted: 0, done: false, hash: "" };
  const finished = (async () => {
    while (state.accepted < total) {
      const b = randomBytes(Math.min(chunk, total - state.accepted));
      sent.update(b);
      state.accepted += b.length;
      if (!dst.write(b)) await once(dst as unknown as NodeJS.EventEmitter, "drain");
    }
    state.hash = sent.digest("hex");
    state.done = true;
    dst.end();
  })();
  return { state, finished };
}

for (const side of ["server", "client"] as const) {
  describe(`splice with a ${side}-side channel`, () => {
    test("socket ends first: channel gets EOF, the other direction keeps flowing, then both close", {
      timeout: 5000,
    }, async () => {
      const r = await rig(side);
      try {
        const upstream = readAll(r.peerChannel);
        r.peerSocket.write("request");
        r.peerSocket.end();
        assert.equal(Buffer.concat(await upstream).toString(), "request", "EOF after the request bytes");
        // Half-closed: the reply still flows channel → socket after the EOF.
        const downstream = readAll(r.peerSocket);
        r.peerChannel.write("reply part 1, ");
        await sleep(50);
        r.peerChannel.end("part 2");
        assert.equal(Buffer.concat(await downstream).toString(), "reply part 1, part 2");
        const res = await withTimeout(r.result, 3000, "splice result");
        assert.equal(res.error, undefined);
        assert.deepEqual([res.bytesIn, res.bytesOut, res.connected], [7, 20, true]);
        await allClosed(r);
      } finally {
        r.destroyAll();
      }
    });

    test("channel ends first: socket gets FIN, the other direction keeps flowing, then both close", {
      timeout: 5000,
    }, async () => {
      const r = await rig(side);
      try {
        const downstream = readAll(r.peerSocket);
        peerEnd(r.peerChannel, "request");
        assert.equal(Buffer.concat(await downstream).toString(), "request", "FIN after the request bytes");
        const upstream = readAll(r.peerChannel);
        r.peerSocket.write("reply part 1, ");
        await sleep(50);
        r.peerSocket.end("part 2");
        assert.equal(Buffer.concat(await upstream).toString(), "reply part 1, part 2");
        // EOF both ways: a server-side peer sends CLOSE now, as sshd does.
        if (side === "client") (r.peerChannel as Channel & { close(): void }).close();
        const res = await withTimeout(r.result, 3000, "splice result");
        assert.equal(res.error, undefined);
        assert.deepEqual([res.bytesIn, res.bytesOut], [20, 7]);
        await allClosed(r);
      } finally {
        r.destroyAll();
      }
    });

    // While the reader does not read, the writer must stop, and what the
    // splice has taken in must stay within the SSH window (2 MiB, ssh2
    // MAX_WINDOW) plus the channel's own stream buffer (highWaterMark 2 MiB)
    // and the socket's: 4-5.3 MiB measured, bound 8 MiB; a splice without
    // flow control would take all of TOTAL. What the writer got rid of also sits in the
    // kernel's loopback buffers, which autotune up to tcp_rmem/tcp_wmem max
    // (32 MiB + 4 MiB here), so that figure only has to be short of TOTAL.
    // Measured (server side / client side): channel → socket, the spliced
    // socket took 4.1 / 4.1 MiB, writer 10 / 10 MiB; socket → channel, the
    // spliced socket read 4.1 / 5.1 MiB, writer 8.3 / 9.7 MiB.
    const MiB = 1024 * 1024;
    const TOTAL = 24 * MiB;
    const WINDOW_BOUND = 8 * MiB;

    /**
     * Writes TOTAL bytes into `into` while `reader` (paused) does not read:
     * the writer must stop, and the splice hold still under WINDOW_BOUND
     * (`held`); then `reader` resumes and must get every byte in order.
     */
    async function stallThenDrain(
      into: NodeJS.WritableStream,
      reader: NodeJS.ReadableStream,
      held: () => number,
      words: { stopped: string; took: string },
    ): Promise<void> {
      const w = writer(into, TOTAL);
      await sleep(400);
      const a = w.state.accepted;
      const h = held();
      await sleep(200);
      assert.equal(w.state.accepted, a, `writer stopped (accepted ${a} bytes)`);
      assert.ok(a < TOTAL, `writer accepted ${a} of ${TOTAL} while the reader is paused`);
      assert.equal(held(), h, words.stopped);
      assert.ok(h < WINDOW_BOUND, `the splice ${words.took} ${h} bytes, bound ${WINDOW_BOUND}`);
      const got = readAll(reader, 4000);
      reader.resume();
      const bufs = await got;
      await w.finished;
      assert.equal(Buffer.concat(bufs).length, TOTAL);
      assert.equal(sha(bufs), w.state.hash, "every byte, in order");
    }

    test("backpressure channel → socket: a socket reader that does not read stops the channel writer", {
      timeout: 5000,
    }, async () => {
      const r = await rig(side, { pausePeerSocket: true });
      try {
        await stallThenDrain(r.peerChannel, r.peerSocket, () => r.socket.bytesWritten, {
          stopped: "the splice stopped writing to the socket",
          took: "took",
        });
        r.peerSocket.end();
        const res = await withTimeout(r.result, 3000, "splice result");
        assert.equal(res.error, undefined);
        assert.equal(res.bytesOut, TOTAL);
      } finally {
        r.destroyAll();
      }
    });

    test("backpressure socket → channel: a channel reader that does not read stops the socket writer", {
      timeout: 5000,
    }, async () => {
      const r = await rig(side);
      try {
        r.peerChannel.pause();
        await stallThenDrain(r.peerSocket, r.peerChannel, () => r.socket.bytesRead, {
          stopped: "the splice stopped reading the socket",
          took: "read",
        });
        // Both directions done: a server-side peer sends CLOSE, as sshd does.
        if (side === "client") (r.peerChannel as Channel & { close(): void }).close();
        else r.peerChannel.end();
        const res = await withTimeout(r.result, 3000, "splice result");
        assert.equal(res.error, undefined);
        assert.equal(res.bytesIn, TOTAL);
      } finally {
        r.destroyAll();
      }
    });

    test("the socket is destroyed with an error: result.error, both ends released", {
      timeout: 5000,
    }, async () => {
      const r = await rig(side);
      try {
        const boom = new Error("boom");
        r.socket.destroy(boom);
        const res = await withTimeout(r.result, 3000, "splice result");
        assert.equal(res.error, boom);
        await allClosed(r);
      } finally {
        r.destroyAll();
      }
    });

    test("the TCP peer resets: result.error is ECONNRESET, both ends released", {
      timeout: 5000,
    }, async () => {
      const r = await rig(side);
      try {
        r.peerChannel.write("x");
        await once(r.peerSocket, "data");
        r.peerSocket.resetAndDestroy();
        const res = await withTimeout(r.result, 3000, "splice result");
        assert.equal((res.error as NodeJS.ErrnoException | undefined)?.code, "ECONNRESET");
        await allClosed(r);
      } finally {
        r.destroyAll();
      }
    });

    // ssh2's Channel#destroy() is end() then close() and drops its argument
    // (ssh2 lib/Channel.js), and a dead transport closes its channels without
    // an 'error'; so a destroyed channel ends the splice without one.
    test("the spliced channel is destroyed mid-transfer: the splice ends, both ends released", {
      timeout: 5000,
    }, async () => {
      const r = await rig(side);
      try {
        r.peerSocket.write("in flight");
        await once(r.peerChannel, "data");
        r.spliced.destroy();
        const res = await withTimeout(r.result, 3000, "splice result");
        assert.equal(res.error, undefined);
        await allClosed(r);
      } finally {
        r.destroyAll();
      }
    });

    test("the peer destroys its channel mid-transfer: the socket gets what was sent, then is released", {
      timeout: 5000,
    }, async () => {
      const r = await rig(side);
      try {
        const downstream = readAll(r.peerSocket);
        r.peerChannel.write("last words");
        r.peerChannel.destroy();
        assert.equal(Buffer.concat(await downstream).toString(), "last words");
        const res = await withTimeout(r.result, 3000, "splice result");
        assert.equal(res.error, undefined);
        await allClosed(r);
      } finally {
        r.destroyAll();
      }
    });

    // What a stream error on the channel would do (Node's stream machinery,
    // e.g. a write after end): emitted on the real channel.
    test("an 'error' on the channel: result.error, both ends released", { timeout: 5000 }, async () => {
      const r = await rig(side);
      try {
        const boom = new Error("channel boom");
        r.spliced.emit("error", boom);
        const res = await withTimeout(r.result, 3000, "splice result");
        assert.equal(res.error, boom);
        await allClosed(r);
      } finally {
        r.destroyAll();
      }
    });

    test("EOF after queued data: every byte of a 4 MiB upload arrives before the EOF", async () => {
      // More than the 2 MiB window, with the channel reader paused at first:
      // the spliced channel holds data waiting for window space when the
      // socket's FIN arrives, and the EOF must wait behind it.
      const r = await rig(side);
      try {
        r.peerChannel.pause();
        const data = randomBytes(4 * 1024 * 1024);
        r.peerSocket.end(data);
        await sleep(200);
        const got = readAll(r.peerChannel, 4000);
        r.peerChannel.resume();
        const bufs = await got;
        assert.equal(Buffer.concat(bufs).length, data.length);
        assert.equal(sha(bufs), sha([data]), "every byte before EOF, in order");
        r.peerChannel.end();
        const res = await withTimeout(r.result, 3000, "splice result");
        assert.equal(res.error, undefined);
        assert.equal(res.bytesIn, data.length);
      } finally {
        r.destroyAll();
      }
    });
  });
}

describe("splice of two server-side channels (the relay's named tunnels)", () => {
  for (const first of ["a", "b"] as const) {
    test(`${first} ends first: EOF passes through, the other direction keeps flowing, then all four close`, {
      timeout: 5000,
    }, async () => {
      const a = await pair.serverChannel();
      const b = await pair.serverChannel();
      const closed = [a.server, a.client, b.server, b.client].map(closeOf);
      const result = splice(a.server, b.server);
      try {
        const [early, late] = first === "a" ? [a, b] : [b, a];
        const toLate = readAll(late.client);
        early.client.end("half-closed first");
        assert.equal(Buffer.concat(await toLate).toString(), "half-closed first", "EOF after the bytes");
        const toEarly = readAll(early.client);
        late.client.write("still ");
        await sleep(50);
        late.client.end("flowing");
        assert.equal(Buffer.concat(await toEarly).toString(), "still flowing");
        const res = await withTimeout(result, 3000, "splice result");
        assert.equal(res.error, undefined);
        const aToB = first === "a" ? 17 : 13;
        assert.deepEqual([res.bytesOut, res.bytesIn], [aToB, 30 - aToB]);
        await withTimeout(Promise.all(closed), 3000, "every channel closed");
      } finally {
        for (const c of [a.server, a.client, b.server, b.client]) c.destroy();
      }
    });
  }

  test("one peer's CLOSE without EOF: the other side gets what was sent, then EOF and CLOSE", {
    timeout: 5000,
  }, async () => {
    const a = await pair.serverChannel();
    const b = await pair.serverChannel();
    const closed = [a.server, a.client, b.server, b.client].map(closeOf);
    const result = splice(a.server, b.server);
    try {
      const toA = readAll(a.client);
      b.client.resume(); // a stream closes once its 'end' is consumed
      b.client.write("last words", () => b.client.close());
      assert.equal(Buffer.concat(await toA).toString(), "last words");
      const res = await withTimeout(result, 3000, "splice result");
      assert.equal(res.bytesIn, 10);
      await withTimeout(Promise.all(closed), 3000, "every channel closed");
    } finally {
      for (const c of [a.server, a.client, b.server, b.client]) c.destroy();
    }
  });
});
