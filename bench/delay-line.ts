/**
 * A WAN in userspace, because tc netem is not available on the bench
 * machines: a TCP proxy on loopback that gives every byte a one-way delay
 * each way, caps each direction at a rate, and bounds what it holds.
 *
 * Each direction is one bottleneck link shared by every connection through
 * the line (so a bulk stream and small requests on separate connections queue
 * behind each other, as they would at a router). A chunk read at `t` leaves
 * the bottleneck at `max(t, link free) + len / rate` (serialization, a token
 * bucket with no burst) and is written out `delayMs` after that. A TCP proxy
 * cannot drop, so the queue is bounded by pausing the reading sockets of that
 * direction while the link holds more than `queueBytes` plus what is in
 * flight (rate × delay): the sender then sees ordinary TCP backpressure, as
 * from a full bottleneck queue. A new connection's first bytes each way
 * arrive no earlier than one RTT after accept plus one delay, like data sent
 * right after a TCP handshake.
 *
 * What it does not model: loss and TCP congestion control (each hop is
 * loopback TCP, acknowledged locally). So what the RTT limits here is only
 * what an application window limits, e.g. an SSH channel window: window / RTT.
 *
 *   node --import tsx bench/delay-line.ts --delay MS --rate MiB/s [--queue BYTES] TARGET_PORT...
 *
 * prints one JSON line `{"ports":[...]}` (one listener per target, same
 * order) and runs until SIGTERM or stdin closes.
 */
import net from "node:net";
import { pathToFileURL } from "node:url";

export interface DelayLineOptions {
  /** Loopback ports to forward to; one listener each, all sharing the two links. */
  targets: number[];
  /** One-way delay each way, ms (RTT = 2 × delayMs). */
  delayMs: number;
  /** Bottleneck rate of each direction, bytes/s. */
  rate: number;
  /** Bottleneck queue of each direction, bytes (default two bandwidth-delay products, rate × RTT × 2). */
  queueBytes?: number;
}

const now = () => performance.now();

/** One direction's bottleneck, shared by every connection. */
class Link {
  /** When the bottleneck finishes sending what it has accepted, ms. */
  free = 0;
  /** Bytes read and not yet written out, plus the destinations' unflushed bytes. */
  held = 0;
  maxHeld = 0;
  bytes = 0;
  readonly paused = new Set<net.Socket>();

  constructor(
    readonly rate: number,
    readonly delayMs: number,
    /** held above this pauses the readers. */
    readonly limit: number,
  ) {}

  /** When a `len`-byte chunk read now arrives at the far end. */
  schedule(len: number, t: number): number {
    this.free = Math.max(t, this.free) + (len * 1000) / this.rate;
    return this.free + this.delayMs;
  }

  add(n: number): void {
    this.held += n;
    if (this.held > this.maxHeld) this.maxHeld = this.held;
  }

  release(n: number): void {
    this.held -= n;
    if (this.held <= this.limit && this.paused.size) {
      for (const s of this.paused) s.resume();
      this.paused.clear();
    }
  }
}

/** One connection's bytes in one direction, in order. */
class Pipe {
  private readonly fifo: { buf: Buffer; at: number }[] = [];
  private head = 0;
  private timer: NodeJS.Timeout | undefined;
  /** When the FIN arrives at the far end, once the source ended. */
  private endAt: number | undefined;
  /** Bytes handed to `dst` and not yet flushed by it, counted in link.held. */
  private unflushed = 0;

  constructor(
    private readonly src: net.Socket,
    private readonly dst: net.Socket,
    private readonly link: Link,
    /** Earliest arrival of this connection's bytes (the handshake). */
    private readonly readyAt: number,
  ) {
    src.on("data", (buf: Buffer) => this.read(buf));
    src.on("end", () => {
      // The FIN travels like a zero-length chunk: behind the queue, one delay later.
      this.endAt = Math.max(this.link.schedule(0, now()), this.readyAt);
      if (!this.timer) this.arm();
    });
    dst.on("drain", () => this.drained());
  }

  private read(buf: Buffer): void {
    const t = now();
    const at = Math.max(this.link.schedule(buf.length, t), this.readyAt);
    this.fifo.push({ buf, at });
    this.link.bytes += buf.length;
    this.link.add(buf.length);
    if (this.link.held > this.link.limit) {
      this.src.pause();
      this.link.paused.add(this.src);
    }
    if (!this.timer) this.arm();
  }

  private arm(): void {
    const at = this.fifo[this.head]?.at ?? this.endAt;
    if (at === undefined) return;
    this.timer = setTimeout(() => this.flush(), Math.max(0, at - now()));
  }

  private flush(): void {
    this.timer = undefined;
    if (this.dst.destroyed) return;
    const t = now() + 0.5; // setTimeout's millisecond granularity
    let n = 0;
    for (let c = this.fifo[this.head]; c && c.at <= t; c = this.fifo[this.head]) {
      this.head++;
      n += c.buf.length;
      this.dst.write(c.buf);
    }
    if (this.head > 1024 && this.head * 2 > this.fifo.length) {
      this.fifo.splice(0, this.head);
      this.head = 0;
    }
    if (n) {
      const before = this.unflushed;
      this.unflushed = this.dst.writableLength;
      this.link.release(n + before - this.unflushed);
    }
    if (this.head < this.fifo.length) this.arm();
    else if (this.endAt !== undefined && !this.dst.writableEnded) {
      if (this.endAt <= t) this.dst.end();
      else this.arm();
    }
  }

  private drained(): void {
    const before = this.unflushed;
    this.unflushed = this.dst.writableLength;
    this.link.release(before - this.unflushed);
  }

  /** Gives back what this pipe still holds; the sockets are being destroyed. */
  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    let n = this.unflushed;
    for (let i = this.head; i < this.fifo.length; i++) n += this.fifo[i]?.buf.length ?? 0;
    this.fifo.length = 0;
    this.head = 0;
    this.unflushed = 0;
    this.link.paused.delete(this.src);
    this.link.release(n);
  }
}

export class DelayLine {
  /** [toward the targets, back from them]. */
  readonly links: [Link, Link];
  readonly ports: number[] = [];
  private readonly servers: net.Server[] = [];
  private readonly sockets = new Set<net.Socket>();

  private constructor(private readonly o: DelayLineOptions) {
    if (!(o.delayMs >= 0) || !(o.rate > 0))
      throw new Error(`delay line: bad delay ${o.delayMs} or rate ${o.rate}`);
    const bdp = (o.rate * 2 * o.delayMs) / 1000;
    const queue = o.queueBytes ?? Math.max(2 * bdp, 256 * 1024);
    // What is in flight (rate × one-way delay) is not queue; bound both together.
    const limit = queue + (o.rate * o.delayMs) / 1000;
    this.links = [new Link(o.rate, o.delayMs, limit), new Link(o.rate, o.delayMs, limit)];
  }

  static async start(o: DelayLineOptions): Promise<DelayLine> {
    const d = new DelayLine(o);
    for (const target of o.targets) {
      const server = net.createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true }, (s) =>
        d.accept(s, target),
      );
      d.servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen({ host: "127.0.0.1", port: 0, backlog: 1024 }, () => resolve());
      });
      d.ports.push((server.address() as net.AddressInfo).port);
    }
    return d;
  }

  private accept(client: net.Socket, target: number): void {
    const server = net.connect({ host: "127.0.0.1", port: target, allowHalfOpen: true, noDelay: true });
    const readyAt = now() + 3 * this.o.delayMs;
    const up = new Pipe(client, server, this.links[0], readyAt);
    const down = new Pipe(server, client, this.links[1], readyAt);
    this.sockets.add(client).add(server);
    let closed = 0;
    const destroy = () => {
      up.close();
      down.close();
      client.destroy();
      server.destroy();
    };
    // A failure on either side takes the pair down at once; a clean close of
    // one side waits for the other, which its pipe ends once it has
    // delivered what it still holds.
    for (const s of [client, server]) {
      s.on("error", destroy);
      s.on("close", (hadError: boolean) => {
        this.sockets.delete(s);
        if (hadError || ++closed === 2) destroy();
      });
    }
    client.resume();
  }

  stats(): { bytes: [number, number]; maxHeld: [number, number]; sockets: number } {
    return {
      bytes: [this.links[0].bytes, this.links[1].bytes],
      maxHeld: [this.links[0].maxHeld, this.links[1].maxHeld],
      sockets: this.sockets.size,
    };
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await Promise.all(this.servers.map((s) => new Promise((r) => s.close(r))));
  }
}

async function cli(argv: string[]): Promise<void> {
  let delayMs = Number.NaN;
  let rate = Number.NaN;
  let queueBytes: number | undefined;
  const targets: number[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? "";
    const num = () => {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v) || v < 0) throw new Error(`${a} needs a number >= 0, got ${argv[i]}`);
      return v;
    };
    if (a === "--delay") delayMs = num();
    else if (a === "--rate") rate = num() * 1024 * 1024;
    else if (a === "--queue") queueBytes = num();
    else if (/^\d+$/.test(a)) targets.push(Number(a));
    else throw new Error(`delay-line: unknown argument ${a}`);
  }
  if (!targets.length || !Number.isFinite(delayMs) || !(rate > 0))
    throw new Error("usage: delay-line.ts --delay MS --rate MiB/s [--queue BYTES] TARGET_PORT...");
  const line = await DelayLine.start({ targets, delayMs, rate, ...(queueBytes ? { queueBytes } : {}) });
  process.stdout.write(`${JSON.stringify({ ports: line.ports })}\n`);
  const stop = () => void line.close().then(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.stdin.on("end", stop).resume();
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  cli(process.argv.slice(2)).catch((e: Error) => {
    process.stderr.write(`${e.message}\n`);
    process.exit(2);
  });
}
