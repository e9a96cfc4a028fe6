/** Local services and clients for tests: echo, HTTP, byte-exact exchanges. */
import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import net from "node:net";

export const sha256 = (b: Buffer | Buffer[]) => {
  const h = createHash("sha256");
  for (const x of Array.isArray(b) ? b : [b]) h.update(x);
  return h.digest("hex");
};

export interface Listening<T> {
  server: T;
  port: number;
  close(): Promise<void>;
}

function listen<T extends net.Server>(server: T, host = "127.0.0.1"): Promise<Listening<T>> {
  const sockets = new Set<net.Socket>();
  server.on("connection", (s: net.Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  return new Promise((resolve) => {
    server.listen(0, host, () => {
      resolve({
        server,
        port: (server.address() as net.AddressInfo).port,
        close: () =>
          new Promise<void>((r) => {
            for (const s of sockets) s.destroy();
            server.close(() => r());
          }),
      });
    });
  });
}

/** Echoes every byte back; ends its side when the client ends (half-close). */
export function echoServer(host = "127.0.0.1"): Promise<Listening<net.Server>> {
  return listen(
    net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
      s.on("error", () => s.destroy());
      s.pipe(s);
    }),
    host,
  );
}

/**
 * Sends `download` bytes and half-closes at once, while still reading: records
 * the sha256 of what it received once the client ends.
 */
export function downloadServer(download: Buffer): Promise<Listening<net.Server> & { received: string[] }> {
  const received: string[] = [];
  return listen(
    net.createServer({ allowHalfOpen: true }, (s) => {
      s.on("error", () => s.destroy());
      const chunks: Buffer[] = [];
      s.on("data", (d: Buffer) => chunks.push(d));
      s.on("end", () => {
        received.push(sha256(chunks));
        s.destroy();
      });
      s.end(download);
    }),
  ).then((l) => Object.assign(l, { received }));
}

export function httpServer(body = "hello from the local service\n"): Promise<Listening<http.Server>> {
  return listen(
    http.createServer((req, res) => {
      res.writeHead(200, { "content-type": "text/plain" });
      res.end(req.url === "/" ? body : `${req.method} ${req.url}\n`);
    }),
  );
}

/** Connects, writes `payload`, half-closes, and returns everything read until the peer ends. */
export function exchange(
  port: number,
  payload: Buffer,
  host = "127.0.0.1",
  timeoutMs = 60_000,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port, allowHalfOpen: true });
    const chunks: Buffer[] = [];
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`exchange with ${host}:${port} timed out`));
    }, timeoutMs);
    s.on("data", (d: Buffer) => chunks.push(d));
    s.on("end", () => {
      clearTimeout(t);
      s.destroy();
      resolve(Buffer.concat(chunks));
    });
    s.on("error", (e) => {
      clearTimeout(t);
      reject(e);
    });
    s.end(payload);
  });
}

/** Reads a download to its end, then uploads `upload` and half-closes. */
export function downloadThenUpload(port: number, upload: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true });
    const chunks: Buffer[] = [];
    s.on("data", (d: Buffer) => chunks.push(d));
    s.on("end", () => {
      s.end(upload, () => resolve(Buffer.concat(chunks)));
    });
    s.on("error", reject);
  });
}

export async function httpGet(
  port: number,
  path = "/",
  host = "127.0.0.1",
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path, agent: false, timeout: 10_000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        body += d;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("timeout", () => req.destroy(new Error("http timeout")));
    req.on("error", reject);
  });
}

export const random = (n: number) => randomBytes(n);

export async function waitFor<T>(
  fn: () => T | Promise<T>,
  what: string,
  timeoutMs = 10_000,
  everyMs = 50,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** `p`, or a rejection naming `what` once `ms` have passed. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}
