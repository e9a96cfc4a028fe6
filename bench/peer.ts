/**
 * The bench's two helper processes, so that neither the local service nor the
 * remote client shares an event loop with the measuring process or with each
 * other. Spawned by bench/run.ts with an IPC channel:
 *
 *   node --import tsx bench/peer.ts service BYTES   the local side, behind the tunnel:
 *     http      minimal HTTP server (no keep-alive for HTTP/1.0 clients such as ab)
 *     download  sends BYTES random bytes on every connection, then half-closes
 *     upload    reads to EOF, replies with the sha256 (hex) of what it read
 *     hold      writes one byte ("!") per connection and holds it open
 *   node --import tsx bench/peer.ts client BYTES    the remote side (connects to the tunnel's ports)
 *
 * Requests and replies are `{ id, type, ... }` messages.
 */
import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import net from "node:net";

export interface PeerRequest {
  id: number;
  type: "download" | "upload" | "hold" | "release" | "holdCount" | "releaseHeld";
  port?: number;
  count?: number;
}

export interface ServiceReady {
  type: "ready";
  ports: { http: number; download: number; upload: number; hold: number };
  downloadHash: string;
}

export interface ClientReady {
  type: "ready";
  uploadHash: string;
}

export interface PeerReply {
  id: number;
  type: "reply";
  ok: boolean;
  error?: string;
  ms?: number;
  bytes?: number;
  hash?: string;
  count?: number;
}

const role = process.argv[2];
const size = Number(process.argv[3] ?? 0);
const send = (m: object) => process.send?.(m);

function sha256(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}

/** Random payload built in 1 MiB blocks (one large randomBytes call is slow to start). */
function payload(n: number): Buffer {
  const buf = Buffer.allocUnsafe(n);
  const block = 1 << 20;
  for (let off = 0; off < n; off += block) randomBytes(Math.min(block, n - off)).copy(buf, off);
  return buf;
}

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) =>
    server.listen({ host: "127.0.0.1", port: 0, backlog: 4096 }, () =>
      resolve((server.address() as net.AddressInfo).port),
    ),
  );
}

async function service(): Promise<void> {
  const data = payload(size);
  const downloadHash = sha256(data);
  const body = "hello from the local service\n";

  const httpServer = http.createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/plain", "content-length": Buffer.byteLength(body) });
    res.end(body);
  });
  httpServer.keepAliveTimeout = 5_000;

  const download = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
    s.on("error", () => s.destroy());
    s.resume(); // the client sends nothing; drain anyway
    s.on("end", () => s.destroy());
    s.end(data);
  });

  const upload = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
    s.on("error", () => s.destroy());
    const h = createHash("sha256");
    let bytes = 0;
    s.on("data", (d: Buffer) => {
      bytes += d.length;
      h.update(d);
    });
    s.on("end", () => s.end(`${h.digest("hex")} ${bytes}\n`));
    s.on("finish", () => s.destroy());
  });

  const held = new Set<net.Socket>();
  const hold = net.createServer({ noDelay: true }, (s) => {
    held.add(s);
    s.on("error", () => s.destroy());
    s.on("close", () => held.delete(s));
    s.write("!");
  });

  const ports = {
    http: await listen(httpServer),
    download: await listen(download),
    upload: await listen(upload),
    hold: await listen(hold),
  };
  process.on("message", (m: PeerRequest) => {
    if (m.type === "holdCount") send({ id: m.id, type: "reply", ok: true, count: held.size });
    else if (m.type === "releaseHeld") {
      for (const s of held) s.destroy();
      send({ id: m.id, type: "reply", ok: true, count: held.size });
    }
  });
  send({ type: "ready", ports, downloadHash } satisfies ServiceReady);
}

async function client(): Promise<void> {
  const data = payload(size);
  const uploadHash = sha256(data);
  const heldSockets = new Set<net.Socket>();

  const downloadRun = (port: number) =>
    new Promise<Omit<PeerReply, "id" | "type">>((resolve) => {
      const t0 = process.hrtime.bigint();
      const h = createHash("sha256");
      let bytes = 0;
      const s = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true, noDelay: true });
      s.on("data", (d: Buffer) => {
        bytes += d.length;
        h.update(d);
      });
      s.on("end", () => {
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        s.end();
        resolve({ ok: true, ms, bytes, hash: h.digest("hex") });
      });
      s.on("error", (e) => resolve({ ok: false, error: e.message }));
    });

  const uploadRun = (port: number) =>
    new Promise<Omit<PeerReply, "id" | "type">>((resolve) => {
      const t0 = process.hrtime.bigint();
      let reply = "";
      const s = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true, noDelay: true });
      s.setEncoding("utf8");
      s.on("data", (d: string) => {
        reply += d;
      });
      s.on("end", () => {
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        s.destroy();
        const [hash, bytes] = reply.trim().split(" ");
        resolve({ ok: true, ms, bytes: Number(bytes), hash: hash ?? "" });
      });
      s.on("error", (e) => resolve({ ok: false, error: e.message }));
      s.end(data);
    });

  /** Opens `count` connections, at most 64 in flight, each confirmed end to end by the service's "!". */
  const holdRun = (port: number, count: number) =>
    new Promise<Omit<PeerReply, "id" | "type">>((resolve) => {
      const t0 = process.hrtime.bigint();
      let started = 0;
      let confirmed = 0;
      let failed: string | undefined;
      const next = () => {
        if (failed) return;
        if (confirmed === count) {
          resolve({ ok: true, ms: Number(process.hrtime.bigint() - t0) / 1e6, count });
          return;
        }
        if (started >= count) return;
        started++;
        const s = net.connect({ host: "127.0.0.1", port });
        heldSockets.add(s);
        const timer = setTimeout(
          () => s.destroy(new Error("no byte from the held connection in 20 s")),
          20_000,
        );
        s.once("data", () => {
          clearTimeout(timer);
          confirmed++;
          next();
        });
        s.on("error", (e) => {
          clearTimeout(timer);
          if (!failed) {
            failed = e.message;
            resolve({ ok: false, error: `after ${confirmed} connections: ${e.message}` });
          }
        });
        s.on("close", () => heldSockets.delete(s));
      };
      for (let i = 0; i < Math.min(64, count); i++) next();
    });

  process.on("message", async (m: PeerRequest) => {
    let r: Omit<PeerReply, "id" | "type">;
    try {
      if (m.type === "download") r = await downloadRun(m.port ?? 0);
      else if (m.type === "upload") r = await uploadRun(m.port ?? 0);
      else if (m.type === "hold") r = await holdRun(m.port ?? 0, m.count ?? 0);
      else if (m.type === "release") {
        for (const s of heldSockets) s.destroy();
        r = { ok: true };
      } else r = { ok: false, error: `unknown request ${m.type}` };
    } catch (e) {
      r = { ok: false, error: (e as Error).message };
    }
    send({ id: m.id, type: "reply", ...r });
  });
  send({ type: "ready", uploadHash } satisfies ClientReady);
}

if (role === "service") void service();
else if (role === "client") void client();
else {
  process.stderr.write("usage: peer.ts service|client BYTES\n");
  process.exit(2);
}
process.on("disconnect", () => process.exit(0));
