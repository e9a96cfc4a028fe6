/**
 * Server-sent events (text/event-stream) to any number of clients, each with
 * a bounded queue: Node's response buffer is the queue, and a client whose
 * buffer grows past `maxQueueBytes` (it stopped reading, or reads slower than
 * the relay produces events) is dropped rather than allowed to hold relay
 * memory. It reconnects and re-fetches the inventory, which is the state.
 */
import type http from "node:http";

export interface SseOptions {
  /** A comment line this often keeps proxies and NAT from closing an idle stream. */
  heartbeatMs: number;
  /**
   * Bytes queued for one client beyond which it is dropped. Node writes a
   * response out once a tick (it corks chunked bodies until nextTick), so
   * this must also hold the largest burst of events one tick produces: a
   * relay closing releases every binding in one go.
   */
  maxQueueBytes: number;
}

export class SseHub {
  private readonly clients = new Set<http.ServerResponse>();
  private readonly heartbeat: NodeJS.Timeout;
  /** Clients dropped for falling behind, since start (tests and the log read it). */
  dropped = 0;

  constructor(private readonly options: SseOptions) {
    this.heartbeat = setInterval(() => this.broadcast(": heartbeat\n\n"), options.heartbeatMs);
    this.heartbeat.unref();
  }

  get size(): number {
    return this.clients.size;
  }

  add(req: http.IncomingMessage, res: http.ServerResponse): void {
    res.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-store",
      // nginx buffers responses unless told not to; a buffered stream is no stream.
      "x-accel-buffering": "no",
    });
    // The comment flushes the headers now and tells the client it is connected.
    res.write(": connected\n\n");
    this.clients.add(res);
    const drop = () => this.clients.delete(res);
    req.socket.setNoDelay(true);
    res.on("close", drop);
    res.on("error", drop);
  }

  send(event: string, data: unknown): void {
    if (this.clients.size === 0) return;
    this.broadcast(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  }

  private broadcast(text: string): void {
    for (const res of this.clients) {
      if (res.writableLength + text.length > this.options.maxQueueBytes) {
        this.clients.delete(res);
        this.dropped++;
        res.destroy();
        continue;
      }
      res.write(text);
    }
  }

  close(): void {
    clearInterval(this.heartbeat);
    for (const res of this.clients) res.destroy();
    this.clients.clear();
  }
}
