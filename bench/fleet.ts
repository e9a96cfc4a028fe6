/**
 * `npm run bench -- --fleet`: N devices (ssh2 client sessions in this
 * process, one ed25519 key each, each binding the name dev<i>:22; see
 * fleet-parties.ts) against one `bin/revtun relay` and against a fleet of
 * three sharing a real redis-server (test/helpers/redis.ts). Per setup:
 *
 *   sessions     sessions held (devices bound) after the connect phase
 *   RSS/session  relay RSS growth over the phase / sessions, summed over relays
 *   CPU/session  relay CPU (utime+stime) over the phase / new sessions
 *   restart      SIGTERM one relay, start it again: time until every device is bound again
 *   kill -9      (fleet only) kill -9 one member: time until every device is bound again
 *                (its devices fail over to the next member in their list)
 *
 * Then the multi-homed scenario (fleet-multihomed.ts): every device on two
 * of three relays, every name opened through every relay by an operator
 * (fleet-operator.ts), a member's kill -9, Redis stopped twice, and the
 * registry checked against the live sessions (fleet-audit.ts). Prints the
 * tables and writes fleet-results.json; exits non-zero, naming each, when
 * a count that must be zero is not (a failed open, a stale registry entry,
 * routing not back within 10 s of Redis).
 *
 *   --fleet-devices N   devices (default 200; 1000 for the full figure)
 *   --fleet-only a,b    some of: sessions multihomed (default both)
 *   --out DIR           where fleet-results.json goes (default bench/)
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Revtun } from "../test/helpers/cli.js";
import { rssKiB } from "../test/helpers/proc.js";
import { RedisServer } from "../test/helpers/redis.js";
import { freePort } from "../test/helpers/sshd.js";
import { type MultiHomedFigures, multiHomed, multiHomedTable, type RelayProc } from "./fleet-multihomed.js";
import { Device, goodKey, sleep, waitUntil } from "./fleet-parties.js";
import { machineInfo } from "./report.js";
import { cpuMs } from "./tunnels.js";

const HERE = dirname(fileURLToPath(import.meta.url));
const PARTS = ["sessions", "multihomed"] as const;
const log = (s: string) => process.stderr.write(`${s}\n`);

interface FleetOptions {
  n: number;
  only: (typeof PARTS)[number][];
  out: string;
}

export function parseFleetOptions(argv: string[]): FleetOptions {
  const o: FleetOptions = { n: 200, only: [...PARTS], out: HERE };
  const value = (flag: string) => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const n = value("--fleet-devices");
  if (n !== undefined) {
    o.n = Number(n);
    if (!Number.isInteger(o.n) || o.n < 1 || o.n > 5000)
      throw new Error(`--fleet-devices ${n}: expected 1-5000`);
  }
  const only = value("--fleet-only");
  if (only !== undefined) {
    const bad = only.split(",").find((p) => !(PARTS as readonly string[]).includes(p));
    if (bad !== undefined || only === "")
      throw new Error(`--fleet-only ${only}: expected some of ${PARTS.join(",")}`);
    o.only = only.split(",") as FleetOptions["only"];
  }
  const out = value("--out");
  if (out !== undefined) o.out = resolve(out);
  return o;
}

/**
 * Two links a device and an operator session a relay, on top of Node's own:
 * 2N + 200 descriptors in this process (the relays inherit the same limit).
 */
function checkDescriptors(n: number): void {
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync("/proc/self/limits", "utf8"));
  const soft = m?.[1] === "unlimited" ? Number.POSITIVE_INFINITY : Number(m?.[1] ?? Number.NaN);
  const need = 2 * n + 200;
  if (soft < need)
    throw new Error(
      `--fleet-devices ${n} needs ${need} open files in this process; the limit is ${soft} (raise it: ulimit -n ${need})`,
    );
}

export async function fleet(argv: string[]): Promise<void> {
  const o = parseFleetOptions(argv);
  const n = o.n;
  checkDescriptors(n);
  const began = performance.now();
  const dir = mkdtempSync(join(tmpdir(), "revtun-bench-fleet-"));
  const redis = await RedisServer.start();
  const procs: RelayProc[] = [];
  const devices: Device[] = [];
  try {
    const keys = Array.from({ length: n }, () => goodKey());
    const operator = goodKey();
    const keysFile = join(dir, "authorized_keys");
    const lines = keys.map(
      (k, j) => `restrict,port-forwarding,permitlisten="dev${j}:22" ${k.public} dev${j}\n`,
    );
    lines.push(`restrict,permitopen="dev*:22" ${operator.public} operator\n`);
    writeFileSync(keysFile, lines.join(""));
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
    for (const setup of o.only.includes("sessions") ? (["one relay", "fleet of 3"] as const) : []) {
      log(`fleet bench: ${setup}, ${n} devices`);
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
    if (rows.length > 0) {
      const cols = Object.keys(rows[0] ?? {});
      console.log(cols.join(" | "));
      for (const r of rows) console.log(cols.map((c) => r[c]).join(" | "));
    }
    let scenario: { result: MultiHomedFigures; problems: string[] } | undefined;
    if (o.only.includes("multihomed")) {
      log(`fleet bench: multi-homed, ${n} devices on two relays each of three`);
      scenario = await multiHomed({
        n,
        keys,
        operatorKey: operator.private,
        redis,
        startRelay: (id, port) => startRelay(id, port, true),
        procs,
        devices,
      });
      console.log(`\n${multiHomedTable(scenario.result)}`);
    }
    const result = {
      date: new Date().toISOString(),
      machine: machineInfo(),
      config: { devices: n, parts: o.only, elapsedSeconds: Math.round((performance.now() - began) / 1000) },
      sessions: rows,
      ...(scenario ? { multihomed: scenario.result, problems: scenario.problems } : {}),
    };
    mkdirSync(o.out, { recursive: true });
    const file = join(o.out, "fleet-results.json");
    writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
    log(`wrote ${file}`);
    if (scenario && scenario.problems.length > 0)
      throw new Error(
        `the fleet scenario counted ${scenario.problems.length} thing(s) that must be zero:\n  ${scenario.problems.join("\n  ")}`,
      );
  } finally {
    for (const d of devices) d.stop();
    await Promise.all(procs.map((p) => p.proc.stop("SIGKILL", 5000)));
    await redis.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
