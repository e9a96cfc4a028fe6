/**
 * The relay's admin API against an in-process Relay with real OpenSSH
 * `ssh -R` clients: the inventory, the event stream (order, heartbeat,
 * dropping a client that stops reading), the token, /metrics and /healthz.
 */
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { describe, test } from "node:test";
import { type AdminServer, isLoopback, startAdminServer } from "../../src/relay/admin/admin-server.js";
import type { SessionRecord } from "../../src/relay/admin/inventory.js";
import {
  bannerServer,
  type Key,
  listen,
  nextEvent,
  RelayFixture,
  sleep,
  withTimeout,
} from "../helpers/relay.js";

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function get(port: number, path: string, token?: string): Promise<Reply> {
  return withTimeout(
    new Promise<Reply>((resolve, reject) => {
      const req = http.get(
        { host: "127.0.0.1", port, path, headers: token ? { authorization: `Bearer ${token}` } : {} },
        (res) => {
          let body = "";
          res.setEncoding("utf8").on("data", (d: string) => {
            body += d;
          });
          res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        },
      );
      req.on("error", reject);
    }),
    5_000,
    `GET ${path}`,
  );
}

async function sessions(port: number, token?: string): Promise<SessionRecord[]> {
  const r = await get(port, "/api/sessions", token);
  assert.equal(r.status, 200, r.body);
  return (JSON.parse(r.body) as { sessions: SessionRecord[] }).sessions;
}

/** An /api/events client that collects events (and comments) as they arrive. */
class EventClient {
  events: { event: string; data: Record<string, unknown> }[] = [];
  comments: string[] = [];
  status = 0;
  private buf = "";
  req!: http.ClientRequest;
  readonly ready: Promise<void>;

  constructor(port: number, token?: string) {
    this.ready = new Promise((resolve, reject) => {
      this.req = http.get(
        {
          host: "127.0.0.1",
          port,
          path: "/api/events",
          headers: token ? { authorization: `Bearer ${token}` } : {},
        },
        (res) => {
          this.status = res.statusCode ?? 0;
          res.setEncoding("utf8").on("data", (d: string) => {
            this.buf += d;
            for (let end = this.buf.indexOf("\n\n"); end !== -1; end = this.buf.indexOf("\n\n")) {
              const block = this.buf.slice(0, end);
              this.buf = this.buf.slice(end + 2);
              if (block.startsWith(":")) this.comments.push(block.slice(1).trim());
              const ev = /^event: (.*)$/m.exec(block)?.[1];
              const data = /^data: (.*)$/m.exec(block)?.[1];
              if (ev && data) this.events.push({ event: ev, data: JSON.parse(data) });
            }
          });
          res.on("error", () => {});
          resolve();
        },
      );
      this.req.on("error", reject);
    });
  }

  async waitFor(pred: () => boolean, what: string, ms = 10_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > deadline)
        throw new Error(`timed out waiting for ${what}; got ${this.events.map((e) => e.event).join(", ")}`);
      await sleep(20);
    }
  }

  close(): void {
    this.req.destroy();
  }
}

async function withAdmin(
  fn: (f: RelayFixture, admin: AdminServer) => Promise<void>,
  opts: { token?: string; heartbeatMs?: number; maxQueueBytes?: number; maxEventClients?: number } = {},
  keys: (f: RelayFixture) => string[] = () => [],
): Promise<void> {
  const f = new RelayFixture();
  let admin: AdminServer | undefined;
  try {
    await f.start(keys(f));
    admin = await startAdminServer({ relay: f.relay, host: "127.0.0.1", port: 0, ...opts });
    await fn(f, admin);
  } finally {
    await admin?.close();
    await f.cleanup();
  }
}

/** An authorized_keys line with `comment` in place of ssh-keygen's. */
const withComment = (pub: string, comment: string) => `${pub.split(" ").slice(0, 2).join(" ")} ${comment}`;

describe("relay admin API", () => {
  test("/api/sessions lists each device with its key, peer, since, bindings, open connections and bytes", async () => {
    const f = new RelayFixture();
    let admin: AdminServer | undefined;
    try {
      const a = f.key();
      const b = f.key();
      const t0 = Date.now();
      await f.start([withComment(a.pub, "device-a"), withComment(b.pub, "device-b <lab>")]);
      admin = await startAdminServer({ relay: f.relay, host: "127.0.0.1", port: 0 });
      const port = admin.address.port;
      const target = bannerServer("hello");
      const targetPort = await listen(f.track(target.server));
      assert.deepEqual(await sessions(port), []);

      const sa = f.ssh(a, ["-N", "-R", `0:127.0.0.1:${targetPort}`]);
      const ma = await sa.waitStderr(/Allocated port (\d+)/, 10_000);
      const sb = f.ssh(b, ["-N", "-R", `127.0.0.1:0:127.0.0.1:${targetPort}`]);
      await sb.waitStderr(/Allocated port (\d+)/, 10_000);
      const fwdA = Number(ma[1]);

      let list = await sessions(port);
      assert.equal(list.length, 2);
      const ra = list.find((s) => s.keyComment === "device-a");
      const rb = list.find((s) => s.keyComment === "device-b <lab>");
      assert.ok(ra && rb, JSON.stringify(list));
      assert.match(ra.fingerprint, /^SHA256:/);
      assert.notEqual(ra.fingerprint, rb.fingerprint);
      assert.ok(ra.username.length > 0);
      assert.match(ra.peer, /^127\.0\.0\.1:\d+$/);
      assert.ok(Date.parse(ra.since) >= t0 - 1000 && Date.parse(ra.since) <= Date.now(), ra.since);
      assert.match(ra.since, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      assert.deepEqual(
        ra.bindings.map((x) => x.address),
        [`localhost:${fwdA}`],
      );
      assert.ok(ra.bindings[0]?.listening.includes(`127.0.0.1:${fwdA}`), JSON.stringify(ra.bindings));
      assert.match(rb.bindings[0]?.address ?? "", /^127\.0\.0\.1:\d+$/);
      assert.deepEqual([ra.connections, ra.bytesIn, ra.bytesOut], [0, 0, 0]);

      // One connection held open: counted live, bytes included before it closes.
      const sock = net.connect({ host: "127.0.0.1", port: fwdA });
      let echoed = "";
      sock.setEncoding("utf8").on("data", (d: string) => {
        echoed += d;
      });
      sock.write("x".repeat(1000));
      const deadline = Date.now() + 5_000;
      while (echoed.length < 6 + 1000 && Date.now() < deadline) await sleep(20);
      list = await sessions(port);
      const live = list.find((s) => s.sessionId === ra.sessionId);
      assert.equal(live?.connections, 1);
      assert.equal(live?.bytesIn, 1000, "bytes toward the device, connection still open");
      assert.equal(live?.bytesOut, 1006, "banner + echo from the device");
      const closed = nextEvent(f.relay, "forwarded-closed");
      sock.end();
      await closed;
      list = await sessions(port);
      const after = list.find((s) => s.sessionId === ra.sessionId);
      assert.deepEqual(
        [after?.connections, after?.connectionsTotal, after?.bytesIn, after?.bytesOut],
        [0, 1, 1000, 1006],
        "closed connections keep counting",
      );
      assert.deepEqual(list.find((s) => s.sessionId === rb.sessionId)?.bytesIn, 0);

      const gone = nextEvent(f.relay, "session-closed");
      await sb.kill();
      await gone;
      assert.deepEqual(
        (await sessions(port)).map((s) => s.keyComment),
        ["device-a"],
      );
    } finally {
      await admin?.close();
      await f.cleanup();
    }
  });

  test("/api/events streams session, binding and connection changes in order, with heartbeats", async () => {
    let k: Key | undefined;
    await withAdmin(
      async (fx, admin) => {
        const ev = new EventClient(admin.address.port);
        await ev.ready;
        assert.equal(ev.status, 200);
        const target = bannerServer("hi");
        const targetPort = await listen(fx.track(target.server));
        assert.ok(k);
        const ssh = fx.ssh(k, ["-N", "-R", `0:127.0.0.1:${targetPort}`]);
        const port = Number((await ssh.waitStderr(/Allocated port (\d+)/, 10_000))[1]);
        const sock = net.connect({ host: "127.0.0.1", port });
        sock.on("data", () => sock.end());
        await ev.waitFor(() => ev.events.some((e) => e.event === "forwarded-closed"), "forwarded-closed");
        await ssh.kill();
        await ev.waitFor(() => ev.events.some((e) => e.event === "session-closed"), "session-closed");
        // The relay's own events in order; the inventory's batched `devices` events interleave (devices-api.ts).
        const relayEvents = ev.events.filter((e) => e.event !== "devices");
        assert.deepEqual(
          relayEvents.map((e) => e.event),
          [
            "session-opened",
            "forward-bound",
            "forwarded-open",
            "forwarded-closed",
            "forward-released",
            "session-closed",
          ],
        );
        const closedConn = relayEvents[3]?.data;
        assert.equal(closedConn?.bytesOut, 3, "the banner, from the device");
        assert.equal(relayEvents[0]?.data.keyComment, "revtun-test");
        await ev.waitFor(
          () =>
            ev.events.some(
              (e) =>
                e.event === "devices" && (e.data.counts as { offline?: number } | undefined)?.offline === 1,
            ),
          "a devices event with the device offline",
        );
        await ev.waitFor(() => ev.comments.includes("heartbeat"), "a heartbeat comment", 2_000);
        assert.ok(ev.comments.includes("connected"));
        ev.close();
        sock.destroy();
      },
      { heartbeatMs: 50 },
      (fx) => {
        k = fx.key();
        return [k.pub];
      },
    );
  });

  test("an event client that stops reading is dropped once its queue passes the bound; others stay", () =>
    withAdmin(
      async (f, admin) => {
        const port = admin.address.port;
        const reader = new EventClient(port);
        await reader.ready;
        // A raw client that sends the request and never reads a byte.
        const stalled = net.connect({ host: "127.0.0.1", port });
        stalled.on("error", () => {});
        stalled.write("GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n");
        stalled.pause();
        const closed = new Promise<void>((r) => stalled.once("close", () => r()));
        const deadline = Date.now() + 10_000;
        while (admin.eventClients().connected < 2 && Date.now() < deadline) await sleep(10);
        assert.equal(admin.eventClients().connected, 2);
        const fake = {
          sessionId: 1,
          fingerprint: "SHA256:x",
          peer: "127.0.0.1:1",
          address: "localhost",
          requestedPort: 0,
          port: 1,
          listening: ["127.0.0.1:1".repeat(20)],
        };
        // Far more than the kernel's socket buffers hold, in bounded steps.
        let sent = 0;
        while (admin.eventClients().dropped === 0 && sent < 200_000 && Date.now() < deadline) {
          // Node flushes a response once a tick: a tick's burst must fit the bound.
          for (let i = 0; i < 50; i++) f.relay.emit("forward-bound", fake);
          sent += 50;
          await new Promise((r) => setImmediate(r));
        }
        assert.equal(admin.eventClients().dropped, 1, `dropped after ${sent} events`);
        // Reading again, it finds what the kernel held and then the end of the stream.
        stalled.resume();
        await withTimeout(closed, 5_000, "the stalled client's socket to close");
        assert.equal(admin.eventClients().connected, 1, "the reading client is still connected");
        await reader.waitFor(() => reader.events.length >= sent, `${sent} events at the reader`);
        reader.close();
      },
      { maxQueueBytes: 64 * 1024 },
    ));

  test("event clients beyond the limit get 503", () =>
    withAdmin(
      async (_f, admin) => {
        const port = admin.address.port;
        const a = new EventClient(port);
        const b = new EventClient(port);
        await Promise.all([a.ready, b.ready]);
        const c = new EventClient(port);
        await c.ready;
        assert.deepEqual([a.status, b.status, c.status], [200, 200, 503]);
        for (const x of [a, b, c]) x.close();
      },
      { maxEventClients: 2 },
    ));

  test("with a token, every path but / and /healthz answers 401 without it or with a wrong one", () =>
    withAdmin(
      async (_f, admin) => {
        const port = admin.address.port;
        for (const path of ["/api/sessions", "/api/events", "/metrics", "/nope"]) {
          assert.equal((await get(port, path)).status, 401, path);
          assert.equal((await get(port, path, "wrong-token")).status, 401, path);
          assert.equal((await get(port, path, "s3cret-token-x")).status, 401, path);
        }
        const r = await get(port, "/api/sessions");
        assert.match(r.headers["www-authenticate"] ?? "", /^Bearer/);
        assert.equal((await get(port, "/api/sessions", "s3cret-token")).status, 200);
        assert.equal((await get(port, "/metrics", "s3cret-token")).status, 200);
        const ev = new EventClient(port, "s3cret-token");
        await ev.ready;
        assert.equal(ev.status, 200);
        ev.close();
        assert.equal((await get(port, "/healthz")).status, 200);
        const page = await get(port, "/");
        assert.equal(page.status, 200);
        assert.match(page.body, /<script src="app.js"><\/script>/);
        assert.match(String(page.headers["content-security-policy"]), /script-src 'self'/);
      },
      { token: "s3cret-token" },
    ));

  test("requireToken without a token refuses to start, naming the address", async () => {
    const f = new RelayFixture();
    try {
      await f.start([]);
      await assert.rejects(
        startAdminServer({ relay: f.relay, host: "127.0.0.1", port: 0, requireToken: true }),
        /admin endpoint on 127\.0\.0\.1:0 is beyond loopback and needs a token/,
      );
    } finally {
      await f.cleanup();
    }
  });

  test("/metrics and /healthz as the metrics endpoint serves them; static assets with their types", () =>
    withAdmin(async (_f, admin) => {
      const port = admin.address.port;
      const m = await get(port, "/metrics");
      assert.equal(m.status, 200);
      assert.match(m.body, /revtun_relay_sessions 0/);
      const h = await get(port, "/healthz");
      assert.deepEqual(JSON.parse(h.body), { ok: true, sessions: 0, forwards: 0 });
      assert.match((await get(port, "/app.js")).headers["content-type"] ?? "", /^text\/javascript/);
      assert.match((await get(port, "/style.css")).headers["content-type"] ?? "", /^text\/css/);
      assert.equal((await get(port, "/../package.json")).status, 404);
    }));

  test("loopback is 127.0.0.0/8 and ::1, nothing else", () => {
    for (const h of [
      "127.0.0.1",
      "127.0.0.2",
      "127.255.0.9",
      "::1",
      "[::1]",
      "localhost",
      "::ffff:127.0.0.1",
    ])
      assert.ok(isLoopback(h), h);
    for (const h of ["0.0.0.0", "::", "10.0.0.1", "192.168.1.1", "128.0.0.1", "example.com", ""])
      assert.ok(!isLoopback(h), h);
  });
});
