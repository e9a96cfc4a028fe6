/**
 * A TCP proxy that stands between the agent and sshd and misbehaves on
 * demand: reset every connection, or freeze them (a blackhole: nothing passes,
 * nothing closes), or throttle the server's bytes to the client.
 */
import net from "node:net";

interface Pair {
  client: net.Socket;
  server: net.Socket;
}

export class FaultProxy {
  private readonly pairs = new Set<Pair>();
  private server!: net.Server;
  port = 0;
  private frozen = false;
  /** Bytes per second from server to client, or 0 for no limit. */
  private rate = 0;

  private constructor(private readonly targetPort: number) {}

  static async start(targetPort: number, port = 0): Promise<FaultProxy> {
    const p = new FaultProxy(targetPort);
    await p.listen(port);
    return p;
  }

  private listen(port: number): Promise<void> {
    this.server = net.createServer({ noDelay: true }, (client) => this.accept(client));
    return new Promise((resolve) =>
      this.server.listen(port, "127.0.0.1", () => {
        this.port = (this.server.address() as net.AddressInfo).port;
        resolve();
      }),
    );
  }

  get connections(): number {
    return this.pairs.size;
  }

  private accept(client: net.Socket): void {
    const server = net.connect({ host: "127.0.0.1", port: this.targetPort, noDelay: true });
    const pair = { client, server };
    this.pairs.add(pair);
    const drop = () => {
      this.pairs.delete(pair);
      client.destroy();
      server.destroy();
    };
    client.on("error", drop).on("close", drop);
    server.on("error", drop).on("close", drop);
    client.on("data", (d: Buffer) => {
      if (!this.frozen) server.write(d);
    });
    this.pipeDown(server, client);
    if (this.frozen) {
      client.pause();
      server.pause();
    }
  }

  /** server → client, throttled when a rate is set, with backpressure. */
  private pipeDown(server: net.Socket, client: net.Socket): void {
    const queue: Buffer[] = [];
    let queued = 0;
    let timer: NodeJS.Timeout | undefined;
    const tick = () => {
      timer = undefined;
      if (this.frozen) return;
      let budget = this.rate > 0 ? Math.ceil(this.rate / 50) : Number.POSITIVE_INFINITY;
      while (budget > 0 && queue.length) {
        const head = queue[0] as Buffer;
        const n = Math.min(budget, head.length);
        client.write(head.subarray(0, n));
        if (n === head.length) queue.shift();
        else queue[0] = head.subarray(n);
        queued -= n;
        budget -= n;
      }
      if (queued < 1 << 20) server.resume();
      if (queue.length) timer = setTimeout(tick, 20);
    };
    server.on("data", (d: Buffer) => {
      if (this.frozen) return;
      if (this.rate === 0 && queue.length === 0) {
        client.write(d);
        return;
      }
      queue.push(d);
      queued += d.length;
      if (queued >= 1 << 20) server.pause();
      timer ??= setTimeout(tick, 20);
    });
    server.on("close", () => clearTimeout(timer));
  }

  /** Sends RST on every open connection, both sides. */
  reset(): void {
    for (const { client, server } of this.pairs) {
      client.resetAndDestroy();
      server.resetAndDestroy();
    }
    this.pairs.clear();
  }

  /** Nothing passes and nothing closes, on open and new connections alike. */
  freeze(): void {
    this.frozen = true;
    for (const { client, server } of this.pairs) {
      client.pause();
      server.pause();
    }
  }

  /** Ends a blackhole: the frozen connections are dropped, as after a long outage. */
  thaw(): void {
    this.frozen = false;
    this.reset();
  }

  throttle(bytesPerSecond: number): void {
    this.rate = bytesPerSecond;
  }

  close(): Promise<void> {
    this.reset();
    return new Promise((r) => this.server.close(() => r()));
  }
}
