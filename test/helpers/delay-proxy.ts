/**
 * A TCP proxy on loopback that delays every chunk by a fixed time each way:
 * a long fat pipe in a test, where the sender's window is the only limit
 * (no bandwidth cap, no backpressure: tests keep their transfers small).
 * Chunks keep their order because equal Node timers fire in insertion order.
 */
import net from "node:net";

export class DelayProxy {
  private constructor(
    private readonly server: net.Server,
    private readonly sockets: Set<net.Socket>,
    readonly port: number,
  ) {}

  static async start(targetPort: number, delayMs: number): Promise<DelayProxy> {
    const sockets = new Set<net.Socket>();
    const server = net.createServer((a) => {
      const b = net.connect({ host: "127.0.0.1", port: targetPort });
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
      const pipe = (from: net.Socket, to: net.Socket) => {
        from.on("data", (d: Buffer) => setTimeout(() => to.destroyed || to.write(d), delayMs));
        from.once("end", () => setTimeout(() => to.destroyed || to.end(), delayMs));
      };
      pipe(a, b);
      pipe(b, a);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as net.AddressInfo).port;
    return new DelayProxy(server, sockets, port);
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((r) => this.server.close(() => r()));
  }
}
