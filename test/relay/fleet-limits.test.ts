/**
 * A fleet is not refused by its own relays' limits: peer relays (the fleet
 * key) are held to limits of their own, not to the per-key session limit,
 * the per-session channel limit or the per-source pre-auth limit that keep
 * one device or one address from taking the relay. In-process relays, a
 * real redis-server, ssh2 clients.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type ssh2 from "ssh2";
import { parseFleetKey } from "../../src/relay/fleet/fleet-key.js";
import type { RelayLimits } from "../../src/relay/options.js";
import { Relay } from "../../src/relay/relay.js";
import { type Client, connect, device, ed, sleep } from "../helpers/fleet.js";
import { random, waitFor } from "../helpers/net.js";
import { RedisServer } from "../helpers/redis.js";
import { freePort } from "../helpers/sshd.js";

type Pair = { private: string; public: string };

/** Opens direct-tcpip to name:22 on `c` and keeps it open. */
function channel(c: Client, name: string): Promise<ssh2.ClientChannel> {
  return new Promise((resolve, reject) =>
    c.forwardOut("192.0.2.9", 4000, name, 22, (err, ch) => (err ? reject(err) : resolve(ch))),
  );
}

/** Writes `data` on `ch` and resolves with what comes back once as many bytes have. */
function echo(ch: ssh2.ClientChannel, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const got: Buffer[] = [];
    let n = 0;
    const t = setTimeout(() => reject(new Error(`no echo of ${data.length} bytes in 5 s`)), 5000);
    ch.on("data", (d: Buffer) => {
      got.push(d);
      n += d.length;
      if (n >= data.length) {
        clearTimeout(t);
        resolve(Buffer.concat(got));
      }
    });
    ch.write(data);
  });
}

/** Opens `n` idle TCP connections from `localAddress`; returns how many the relay has closed so far. */
function idleFrom(
  host: string,
  port: number,
  localAddress: string,
  n: number,
  socks: net.Socket[],
): () => number {
  let closed = 0;
  for (let i = 0; i < n; i++) {
    const s = net.connect({ host, port, localAddress });
    s.on("error", () => {});
    s.on("close", () => closed++);
    s.resume();
    socks.push(s);
  }
  return () => closed;
}

describe("fleet peers have limits of their own", () => {
  let redis: RedisServer;
  let dir: string;
  let dev: Pair;
  let op: Pair;
  let fleet: Pair;
  let keysFile: string;
  let prefixN = 0;
  const relays: Relay[] = [];
  const clients: Client[] = [];

  before(async () => {
    redis = await RedisServer.start();
    dir = mkdtempSync(join(tmpdir(), "revtun-fleet-limits-"));
    dev = ed();
    op = ed();
    fleet = ed();
    keysFile = join(dir, "authorized_keys");
    writeFileSync(
      keysFile,
      `restrict,port-forwarding,permitlisten="device42:22",permitlisten="device43:22" ${dev.public} device\n` +
        `restrict,permitopen="device*:22" ${op.public} operator\n`,
    );
    writeFileSync(join(dir, "fleet_key"), fleet.private, { mode: 0o600 });
  });
  after(async () => {
    for (const c of clients) c.end();
    await Promise.all(relays.map((r) => r.close()));
    await redis.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Relays of one fleet of their own (a fresh key prefix), each on `host`. */
  async function fleetOf(hosts: string[], limits: Partial<RelayLimits> = {}): Promise<Relay[]> {
    const prefix = `lim${prefixN++}:`;
    const out: Relay[] = [];
    for (const [i, host] of hosts.entries()) {
      const port = await freePort();
      const r = new Relay({
        listen: { host, port },
        hostKey: ed().private,
        authorizedKeysFile: keysFile,
        watchAuthorizedKeys: false,
        authFailureDelayMs: 0,
        limits,
        fleet: {
          redis: { host: "127.0.0.1", port: redis.port, db: 0 },
          fleetKey: parseFleetKey(readFileSync(join(dir, "fleet_key"), "utf8")),
          relayId: `r${i}`,
          advertise: `${host}:${port}`,
          prefix,
        },
      });
      relays.push(r);
      await r.start();
      out.push(r);
    }
    return out;
  }
  const portOf = (r: Relay) => r.address?.port as number;

  test("20 sessions of the fleet key are accepted (maxPeerSessions); an ordinary key is still capped at 16", async () => {
    const [a] = await fleetOf(["127.0.0.1"], { maxPeerSessions: 20 });
    assert.ok(a);
    const refusals: string[] = [];
    a.on("auth-refused", (x) => refusals.push(x.reason));
    for (let i = 0; i < 20; i++) clients.push(await connect(portOf(a), fleet.private));
    assert.equal(a.authenticatedSessions().length, 20);
    await assert.rejects(connect(portOf(a), fleet.private), /authentication methods failed/);
    assert.deepEqual(refusals, ["too many fleet peer sessions (limit 20)"]);
    for (let i = 0; i < 16; i++) clients.push(await connect(portOf(a), op.private));
    await assert.rejects(connect(portOf(a), op.private), /authentication methods failed/);
    assert.deepEqual(refusals.slice(1), ["too many sessions for this key (limit 16)"]);
    assert.equal(a.authenticatedSessions().length, 36);
    for (const c of clients.splice(0)) c.end();
    await a.close();
  });

  test("a peer's one session carries more channels than maxChannelsPerSession (its own maxChannelsPerPeerSession)", async () => {
    // Each session may have 4 open; the peer session from B to A carries 6.
    const [a, b] = await fleetOf(["127.0.0.1", "127.0.0.1"], { maxChannelsPerSession: 4 });
    assert.ok(a && b);
    clients.push(await device(portOf(a), dev.private, "device42"));
    clients.push(await device(portOf(a), dev.private, "device43"));
    const op1 = await connect(portOf(b), op.private);
    const op2 = await connect(portOf(b), op.private);
    clients.push(op1, op2);
    const open: ssh2.ClientChannel[] = [];
    for (let i = 0; i < 3; i++) open.push(await channel(op1, "device42"), await channel(op2, "device43"));
    assert.equal(open.length, 6);
    for (const ch of open) {
      const data = random(5000);
      assert.ok((await echo(ch, data)).equals(data));
    }
    // The device side is still bounded per session: a 5th channel to device42 is refused.
    const more: ssh2.ClientChannel[] = [];
    more.push(await channel(op2, "device42"));
    await assert.rejects(
      channel(op2, "device42"),
      /open channel limit \(4\)|session \d+ is at its open channel limit/,
    );
    for (const ch of [...open, ...more]) ch.close();
    for (const c of clients.splice(0)) c.end();
    await Promise.all([a.close(), b.close()]);
  });

  test("a fleet member's address is not held to 10 unauthenticated connections per source; another address is", async () => {
    // B listens and advertises on 127.0.0.3: A learns that address from the registry.
    const [a, b] = await fleetOf(["127.0.0.1", "127.0.0.3"]);
    assert.ok(a && b);
    await sleep(1200);
    const socks: net.Socket[] = [];
    try {
      const other = idleFrom("127.0.0.1", portOf(a), "127.0.0.2", 15, socks);
      await waitFor(() => other() >= 5, "5 of 15 from 127.0.0.2 refused", 5000);
      const member = idleFrom("127.0.0.1", portOf(a), "127.0.0.3", 15, socks);
      await sleep(300);
      assert.equal(other(), 5, "127.0.0.2: 10 kept, 5 refused");
      assert.equal(member(), 0, "127.0.0.3 (relay B's address): all 15 kept");
    } finally {
      for (const s of socks) s.destroy();
    }
    await Promise.all([a.close(), b.close()]);
  });
});
