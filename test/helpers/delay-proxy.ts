/**
 * A TCP proxy on loopback that delays every chunk by a fixed time each way:
 * a long fat pipe in a test. By default the sender's window is the only
 * limit; `bytesPerSecond` caps each direction (chunks leave one after
 * another at that rate, then take the delay), for a path that is narrower
 * than the window. No backpressure: tests keep their transfers small.
 */
import net from "node:net";

/** One direction: chunks in order, each written when its time has come. */
class Lane {
  private readonly queue: { due: number; chunk: Buffer | null }[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** When the line is free for the next chunk (performance.now() ms). */
  private free = 0;

  constructor(
    private readonly to: net.Socket,
    private readonly proxy: { delayMs: number; bytesPerSecond: number },
  ) {}

  /** A chunk, or null for the end. */
  push(chunk: Buffer | null): void {
    const now = performance.now();
    const rate = this.proxy.bytesPerSecond;
    const send = chunk && rate > 0 ? (chunk.length / rate) * 1000 : 0;
    this.free = Math.max(now, this.free) + send;
    this.queue.push({ due: this.free + this.proxy.delayMs, chunk });
    this.schedule();
  }

  private schedule(): void {
    const head = this.queue[0];
    if (this.timer || !head) return;
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        const now = performance.now();
        for (let h = this.queue[0]; h && h.due <= now + 0.5; h = this.queue[0]) {
          this.queue.shift();
          if (this.to.destroyed) continue;
          if (h.chunk) this.to.write(h.chunk);
          else this.to.end();
        }
        this.schedule();
      },
      Math.max(0, head.due - performance.now()),
    );
  }

  stop(): void {
    clearTimeout(this.timer);
    this.queue.length = 0;
  }
}

export class DelayProxy {
  /** Each direction's rate cap in bytes per second for chunks from now on; 0 for none. */
  bytesPerSecond = 0;

  private constructor(
    private readonly server: net.Server,
    private readonly sockets: Set<net.Socket>,
    private readonly lanes: Set<Lane>,
    readonly port: number,
    readonly delayMs: number,
  ) {}

  static async start(targetPort: number, delayMs: number): Promise<DelayProxy> {
    const sockets = new Set<net.Socket>();
    const lanes = new Set<Lane>();
    let proxy: DelayProxy | undefined;
    const server = net.createServer((a) => {
      const b = net.connect({ host: "127.0.0.1", port: targetPort });
      const config = proxy as DelayProxy;
      const pipe = (from: net.Socket, to: net.Socket) => {
        const lane = new Lane(to, config);
        lanes.add(lane);
        from.on("data", (d: Buffer) => lane.push(d));
        from.once("end", () => lane.push(null));
        from.once("close", () => {
          lane.stop();
          lanes.delete(lane);
        });
      };
      for (const s of [a, b]) {
        sockets.add(s);
        s.setNoDelay(true);
        s.on("error", () => {});
        s.once("close", () => {
          sockets.delete(s);
          a.destroy();
          b.destroy();
        });
      }
      pipe(a, b);
      pipe(b, a);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as net.AddressInfo).port;
    proxy = new DelayProxy(server, sockets, lanes, port, delayMs);
    return proxy;
  }

  close(): Promise<void> {
    for (const l of this.lanes) l.stop();
    for (const s of this.sockets) s.destroy();
    return new Promise((r) => this.server.close(() => r()));
  }
}
