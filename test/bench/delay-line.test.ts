import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import { DelayLine } from "../../bench/delay-line.js";
import { echoServer, type Listening, random, sha256 } from "../helpers/net.js";

const MiB = 1 << 20;
const now = () => performance.now();

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: "127.0.0.1", port, noDelay: true, allowHalfOpen: true }, () => resolve(s));
    s.once("error", reject);
  });
}

/** Resolves with the next `n` bytes `s` reads. */
function readN(s: net.Socket, n: number, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const timer = setTimeout(
      () => done(new Error(`only ${got} of ${n} bytes in ${timeoutMs} ms`)),
      timeoutMs,
    );
    const onData = (d: Buffer) => {
      chunks.push(d);
      got += d.length;
      if (got >= n) done();
    };
    const done = (e?: Error) => {
      clearTimeout(timer);
      s.off("data", onData);
      if (e) reject(e);
      else resolve(Buffer.concat(chunks));
    };
    s.on("data", onData);
  });
}

describe("bench delay line", () => {
  let echo: Listening<net.Server>;
  before(async () => {
    echo = await echoServer();
  });
  after(() => echo.close());

  it("a round trip, and a half-close, take two one-way delays (after a handshake's worth on the first bytes)", async () => {
    const line = await DelayLine.start({ targets: [echo.port], delayMs: 40, rate: 50 * MiB });
    const s = await connect(line.ports[0] ?? 0);
    try {
      let t = now();
      s.write("x");
      await readN(s, 1, 2_000);
      const first = now() - t;
      // As after a TCP handshake: the request arrives at 1.5 RTT, the reply at 2 RTT.
      assert.ok(first >= 159 && first < 260, `first round trip ${first.toFixed(1)} ms, want ~160`);
      for (let i = 0; i < 5; i++) {
        t = now();
        s.write("y");
        await readN(s, 1, 2_000);
        const rtt = now() - t;
        assert.ok(rtt >= 79 && rtt < 130, `round trip ${i} ${rtt.toFixed(1)} ms, want ~80`);
      }
      // A half-close travels like bytes do: the echo's FIN comes back one RTT later.
      t = now();
      const ended = new Promise<void>((resolve) => s.once("end", () => resolve()));
      s.end();
      await ended;
      const fin = now() - t;
      assert.ok(fin >= 79 && fin < 130, `FIN round trip ${fin.toFixed(1)} ms, want ~80`);
    } finally {
      s.destroy();
      await line.close();
    }
  });

  it("caps each direction at its rate, bounds what it holds, and passes every byte unchanged", async () => {
    const rate = 32 * MiB;
    const queueBytes = MiB;
    const line = await DelayLine.start({ targets: [echo.port], delayMs: 10, rate, queueBytes });
    const data = random(8 * MiB);
    const s = await connect(line.ports[0] ?? 0);
    try {
      const t = now();
      const back = readN(s, data.length, 10_000);
      s.write(data);
      const got = await back;
      const ms = now() - t;
      assert.equal(got.length, data.length);
      assert.equal(sha256(got), sha256(data));
      // 8 MiB at 32 MiB/s is 250 ms each way (the two directions overlap), plus the handshake's
      // 1.5 RTT (30 ms) and one RTT (20 ms) for the echo: 300 ms at exactly the rate. (Subtracting
      // 60 ms here read 33.3 MiB/s for a perfect line, and 33.9 failed once in CI.)
      const mibPerS = data.length / MiB / ((ms - 50) / 1000);
      assert.ok(
        mibPerS <= 32 * 1.05 && mibPerS >= 32 * 0.75,
        `${mibPerS.toFixed(1)} MiB/s through a 32 MiB/s line`,
      );
      const { maxHeld, bytes } = line.stats();
      assert.deepEqual(bytes, [data.length, data.length]);
      // The queue plus what is in flight (rate × 10 ms), plus one socket read (64 KiB) past the bound.
      const limit = queueBytes + rate * 0.01 + 64 * 1024;
      for (const h of maxHeld) assert.ok(h <= limit, `held ${h} bytes, bound ${limit}`);
    } finally {
      s.destroy();
      await line.close();
    }
  });
});
