/**
 * `npm run bench -- --fleet`: N devices (ssh2 client sessions in this
 * process, one ed25519 key each, each binding the name dev<i>:22) against
 * one `bin/revtun relay` and against a fleet of three sharing a real
 * redis-server (test/helpers/redis.ts). Per setup:
 *
 *   sessions     sessions held (devices bound) after the connect phase
 *   RSS/session  relay RSS growth over the phase / sessions, summed over relays
 *   CPU/session  relay CPU (utime+stime) over the phase / new sessions
 *   restart      SIGTERM one relay, start it again: time until every device is bound again
 *   kill -9      (fleet only) kill -9 one member: time until every device is bound again
 *                (its devices fail over to the next member in their list)
 *
 * Devices reconnect on loss after 100-300 ms (jittered), to the next relay in
 * their list when one refuses. Handshakes are paced at HANDSHAKES in flight
 * and devices use 127.0.0.x source addresses, so the relays' per-source
 * MaxStartups (10) does not refuse the bench itself.
 *
 *   --fleet-devices N   devices (default 200; 1000 for the full figure)
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ssh2 from "ssh2";
import { Revtun } from "../test/helpers/cli.js";
import { rssKiB } from "../test/helpers/proc.js";
import { RedisServer } from "../test/helpers/redis.js";
import { freePort } from "../test/helpers/sshd.js";
import { cpuMs } from "./tunnels.js";

const { Client, utils } = ssh2;
const HANDSHAKES = 16;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let inFlight = 0;
const waiters: (() => void)[] = [];
async function slot(): Promise<() => void> {
  while (inFlight >= HANDSHAKES) await new Promise<void>((r) => waiters.push(r));
  inFlight++;
  return () => {
    inFlight--;
    waiters.shift()?.();
  };
}

class Device {
  bound = false;
  private client: InstanceType<typeof Client> | undefined;
  private stopped = false;
  private at = 0;
  constructor(
    readonly index: number,
    private readonly key: string,
    /** Relay ports, preferred first. */
    private readonly ports: number[],
  ) {}

  start(): Promise<void> {
    return this.connect();
  }

  stop(): void {
    this.stopped = true;
    this.client?.end();
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    const release = await slot();
    const port = this.ports[this.at % this.ports.length] as number;
    const c = new Client();
    this.client = c;
    let done = false;
    const ok = await new Promise<boolean>((resolve) => {
      const fin = (v: boolean) => {
        if (done) return;
        done = true;
        release();
        resolve(v);
      };
      c.on("error", () => fin(false));
      c.on("close", () => {
        fin(false);
        if (this.client === c) this.lost();
      });
      c.on("tcp connection", (_i, accept) => {
        const ch = accept();
        ch.pipe(ch);
      });
      c.once("ready", () =>
        c.forwardIn(`dev${this.index}`, 22, (err) => {
          if (err) c.end();
          fin(!err);
        }),
      );
      c.connect({
        host: "127.0.0.1",
        port,
        localAddress: `127.0.0.${2 + (this.index % 200)}`,
        username: "dev",
        privateKey: this.key,
        readyTimeout: 5000,
        keepaliveInterval: 0,
      });
    });
    if (ok) this.bound = true;
    else if (!this.stopped) this.at++; // the next relay in the list on the next try
  }

  private lost(): void {
    this.bound = false;
    if (this.stopped) return;
    setTimeout(() => void this.connect(), 100 + Math.random() * 200);
  }
}

interface RelayProc {
  id: string;
  port: number;
  proc: Revtun;
}

async function waitUntil(cond: () => boolean, ms: number, what: string): Promise<number> {
  const t0 = performance.now();
  while (!cond()) {
    if (performance.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(20);
  }
  return performance.now() - t0;
}

/**
 * ssh2 1.17's generateKeyPairSync("ed25519") now and then writes a private
 * key its own parser calls malformed (1 in ~70 here); draw again.
 */
function goodKey(): { private: string; public: string } {
  for (let i = 0; i < 10; i++) {
    const k = utils.generateKeyPairSync("ed25519");
    if (!(utils.parseKey(k.private) instanceof Error)) return k;
  }
  throw new Error("ssh2 generated 10 unreadable ed25519 keys in a row");
}

export async function fleet(argv: string[]): Promise<void> {
  const i = argv.indexOf("--fleet-devices");
  const n = i >= 0 ? Number(argv[i + 1]) : 200;
  if (!Number.isInteger(n) || n < 1 || n > 5000)
    throw new Error(`--fleet-devices ${argv[i + 1]}: expected 1-5000`);
  const dir = mkdtempSync(join(tmpdir(), "revtun-bench-fleet-"));
  const redis = await RedisServer.start();
  const procs: RelayProc[] = [];
  const devices: Device[] = [];
  try {
    const keys = Array.from({ length: n }, () => goodKey());
    const keysFile = join(dir, "authorized_keys");
    writeFileSync(
      keysFile,
      keys.map((k, j) => `restrict,port-forwarding,permitlisten="dev${j}:22" ${k.public} dev${j}\n`).join(""),
    );
    const fleetFile = join(dir, "fleet_key");
    writeFileSync(fleetFile, goodKey().private, { mode: 0o600 });
    const startRelay = async (id: string, port: number, inFleet: boolean): Promise<RelayProc> => {
      const proc = new Revtun([
        "relay",
        "--listen",
        `127.0.0.1:${port}`,
        "--host-key",
        join(dir, `host_${id}`),
        "--authorized-keys",
        keysFile,
        ...(inFleet ? ["--fleet", redis.url, "--fleet-key", fleetFile, "--relay-id", id] : []),
      ]);
      await proc.waitFor(/relay listening/, 20_000);
      return { id, port, proc };
    };
    const rows: Record<string, string>[] = [];
    for (const setup of ["one relay", "fleet of 3"] as const) {
      const inFleet = setup !== "one relay";
      const ids = inFleet ? ["a", "b", "c"] : ["solo"];
      const relays: RelayProc[] = [];
      for (const id of ids) relays.push(await startRelay(id, await freePort(), inFleet));
      procs.push(...relays);
      const pid = (r: RelayProc) => r.proc.proc.pid as number;
      const rss0 = relays.reduce((s, r) => s + rssKiB(pid(r)), 0);
      const cpu0 = relays.reduce((s, r) => s + cpuMs(pid(r)), 0);
      const mine: Device[] = keys.map((k, j) => {
        const ports = relays.map((r) => r.port);
        // Spread over the members; the list wraps so each has a next member to fail over to.
        const first = j % ports.length;
        return new Device(j, k.private, [...ports.slice(first), ...ports.slice(0, first)]);
      });
      devices.push(...mine);
      const t0 = performance.now();
      await Promise.all(mine.map((d) => d.start()));
      await waitUntil(() => mine.every((d) => d.bound), 120_000, "connect");
      const connectMs = performance.now() - t0;
      await sleep(500);
      const rss1 = relays.reduce((s, r) => s + rssKiB(pid(r)), 0);
      const cpu1 = relays.reduce((s, r) => s + cpuMs(pid(r)), 0);
      const held = mine.filter((d) => d.bound).length;
      // Restart: the first relay stops cleanly and comes back on its port.
      const victim = relays[0] as RelayProc;
      const tr = performance.now();
      await victim.proc.stop("SIGTERM");
      const again = await startRelay(victim.id, victim.port, inFleet);
      procs.push(again);
      relays[0] = again;
      await waitUntil(() => mine.every((d) => d.bound), 120_000, "back after restart");
      const restartMs = performance.now() - tr;
      let killMs = Number.NaN;
      if (inFleet) {
        const dead = relays[1] as RelayProc;
        const tk = performance.now();
        process.kill(pid(dead), "SIGKILL");
        await dead.proc.exited;
        await sleep(50);
        await waitUntil(() => mine.every((d) => d.bound), 120_000, "back after kill -9");
        killMs = performance.now() - tk;
      }
      rows.push({
        setup,
        devices: String(n),
        sessions: String(held),
        "connect s": (connectMs / 1000).toFixed(1),
        "RSS KiB/session": ((rss1 - rss0) / held).toFixed(1),
        "CPU ms/session": ((cpu1 - cpu0) / held).toFixed(2),
        "restart s": (restartMs / 1000).toFixed(2),
        "kill -9 s": Number.isNaN(killMs) ? "-" : (killMs / 1000).toFixed(2),
      });
      for (const d of mine) d.stop();
      await Promise.all(relays.map((r) => r.proc.stop("SIGTERM")));
    }
    const cols = Object.keys(rows[0] ?? {});
    console.log(cols.join(" | "));
    for (const r of rows) console.log(cols.map((c) => r[c]).join(" | "));
  } finally {
    for (const d of devices) d.stop();
    await Promise.all(procs.map((p) => p.proc.stop("SIGKILL", 5000)));
    await redis.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
