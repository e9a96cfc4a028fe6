/**
 * `npm run bench`: revtun against OpenSSH `ssh -N -R`, same flags, same sshd,
 * alternating ssh / revtun for N pairs, everything on loopback.
 *
 *   node --import tsx bench/run.ts [--pairs N] [--quick] [--only a,b] [--out DIR]
 *                                  [--revtun-bin PATH] [--relay] [--floor]
 *
 * Workloads: bulk download / upload (byte-exact, sha256 on both ends), HTTP
 * with a new connection per request (ab, c=1 and c=50), memory per idle
 * forwarded connection, spawn to first forwarded byte, sshd restart to serving
 * again. Prints a table and writes results.json and results.svg (bench/ by
 * default). Figures are reported, never asserted.
 *
 *   --pairs N          ssh/revtun pairs per workload (default 5; 2 with --quick)
 *   --quick            32 MiB bulk, fewer requests and held connections
 *   --only a,b         a subset of: download upload http-c1 http-c50 memory startup restart
 *   --out DIR          where results.json / results.svg go (default bench/)
 *   --revtun-bin PATH  measure another checkout's bin/revtun
 *   --relay            a second table: OpenSSH ssh against sshd and against `revtun relay`
 *   --floor            a third table: ssh against bench/ssh2-floor.mjs, a bare ssh2
 *                      forwarder (bulk and HTTP only): what Node + ssh2 cost by themselves
 *   --wan [MS,...]     instead: the tunnels over a simulated WAN (bench/wan.ts, its own flags)
 *   --fleet            instead: N devices on one relay and on a fleet of three, and on two relays
 *                      each of three with operators through every relay (bench/fleet.ts, its own flags)
 *   --inventory [N]    instead: issue 22's done-when with N devices (default 1,000; bench/inventory.ts)
 *
 * The local service and the remote client run in their own processes
 * (bench/peer.ts), ab in its own; this process only orchestrates and reads
 * /proc. ssh's restart figure needs a supervisor: bench/tunnels.ts SshLoop.
 */

import { execFileSync, spawn } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import http from "node:http";
import os, { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { rssKiB } from "../test/helpers/proc.js";
import { freePort, keygen, Sshd, sshBanner } from "../test/helpers/sshd.js";
import type { ClientReady, ServiceReady } from "./peer.js";
import { PeerProcess } from "./peer-process.js";
import { type Labels, type Run, type Summary, summarize, svg, table, type Workload } from "./report.js";
import {
  CIPHER,
  cpuMs,
  DEFAULT_REVTUN_BIN,
  RelayProcess,
  type Server,
  SshLoop,
  TOOLS,
  type Tool,
  Tunnel,
  type TunnelOptions,
} from "./tunnels.js";

const HERE = dirname(fileURLToPath(import.meta.url));
const MiB = 1 << 20;
const WORKLOADS = ["download", "upload", "http-c1", "http-c50", "memory", "startup", "restart"] as const;
type WorkloadId = (typeof WORKLOADS)[number];

interface Options {
  pairs: number;
  quick: boolean;
  only: Set<WorkloadId>;
  out: string;
  revtunBin: string;
  relay: boolean;
  floor: boolean;
  bulkBytes: number;
  httpC1: number;
  httpC50: number;
  holdCount: number;
}

function parseOptions(argv: string[]): Options {
  let pairs: number | undefined;
  let quick = false;
  let only: Set<WorkloadId> = new Set(WORKLOADS);
  let out = HERE;
  let revtunBin = DEFAULT_REVTUN_BIN;
  let relay = false;
  let floor = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? "";
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === "--pairs") pairs = Number(value());
    else if (a === "--quick") quick = true;
    else if (a === "--relay") relay = true;
    else if (a === "--floor") floor = true;
    else if (a === "--out") out = resolve(value());
    else if (a === "--revtun-bin") revtunBin = resolve(value());
    else if (a === "--only") {
      const ids = value().split(",");
      for (const id of ids)
        if (!WORKLOADS.includes(id as WorkloadId))
          throw new Error(`unknown workload ${id}; one of ${WORKLOADS.join(", ")}`);
      only = new Set(ids as WorkloadId[]);
    } else if (a === "--help" || a === "-h") {
      process.stdout.write(
        `usage: npm run bench -- [--pairs N] [--quick] [--only ${WORKLOADS.join(",")}] [--out DIR] [--revtun-bin PATH] [--relay] [--floor]\n       npm run bench -- --wan [MS,...] (see bench/wan.ts)\n`,
      );
      process.exit(0);
    } else throw new Error(`unknown option ${a}`);
  }
  if (pairs !== undefined && (!Number.isInteger(pairs) || pairs < 1)) throw new Error("--pairs needs N >= 1");
  return {
    pairs: pairs ?? (quick ? 2 : 5),
    quick,
    only,
    out,
    revtunBin,
    relay,
    floor,
    bulkBytes: (quick ? 32 : 256) * MiB,
    httpC1: quick ? 500 : 3_000,
    httpC50: quick ? 2_000 : 15_000,
    holdCount: quick ? 200 : 1_000,
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const now = () => Number(process.hrtime.bigint()) / 1e6;
const log = (s: string) => process.stderr.write(`${s}\n`);

/** Everything started, so that any exit stops it by pid. */
const live = new Set<{ stop(): Promise<void> | void }>();

function start(tool: Tool, server: Server, opts: TunnelOptions): Tunnel {
  const t = new Tunnel(tool, server, opts);
  live.add(t);
  return t;
}

async function stop(t: { stop(): Promise<void> }): Promise<void> {
  await t.stop();
  live.delete(t);
}

/** One HTTP GET on a new connection; true on a 200 within `timeoutMs`. */
function probe(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ host: "127.0.0.1", port, path: "/", agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode === 200));
      res.on("error", () => resolve(false));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", () => resolve(false));
  });
}

async function pollUntilServing(port: number, everyMs: number, timeoutMs: number): Promise<number> {
  const deadline = now() + timeoutMs;
  for (;;) {
    const t = now();
    if (await probe(port, 250)) return now();
    if (now() > deadline) throw new Error(`port ${port} not serving after ${timeoutMs} ms`);
    await sleep(Math.max(0, everyMs - (now() - t)));
  }
}

interface AbResult {
  rps: number;
  complete: number;
  failed: number;
  non2xx: number;
  meanMs: number;
  wallMs: number;
}

function onPath(cmd: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** ab in its own process: new connection per request (no -k). */
function ab(port: number, n: number, c: number): Promise<AbResult> {
  return new Promise((resolve, reject) => {
    const t0 = now();
    const p = spawn("ab", ["-q", "-n", String(n), "-c", String(c), "-s", "10", `http://127.0.0.1:${port}/`], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    p.stdout.setEncoding("utf8").on("data", (d: string) => {
      out += d;
    });
    p.stderr.setEncoding("utf8").on("data", (d: string) => {
      out += d;
    });
    p.on("exit", (code) => {
      const num = (re: RegExp) => Number(out.match(re)?.[1] ?? Number.NaN);
      const r: AbResult = {
        rps: num(/Requests per second:\s+([\d.]+)/),
        complete: num(/Complete requests:\s+(\d+)/),
        failed: num(/Failed requests:\s+(\d+)/),
        non2xx: Number(out.match(/Non-2xx responses:\s+(\d+)/)?.[1] ?? 0),
        meanMs: num(/Time per request:\s+([\d.]+) \[ms\] \(mean\)/),
        wallMs: now() - t0,
      };
      if (code !== 0 || r.failed !== 0 || r.complete !== n || r.non2xx !== 0 || !Number.isFinite(r.rps))
        reject(new Error(`ab -n ${n} -c ${c} failed (exit ${code}):\n${out}`));
      else resolve(r);
    });
  });
}

function machineInfo(revtunBin: string): Record<string, unknown> {
  const safe = (f: () => string) => {
    try {
      return f().trim();
    } catch {
      return "unknown";
    }
  };
  const repo = resolve(dirname(revtunBin), "..");
  const pkg = (p: string) =>
    safe(() => JSON.parse(readFileSync(join(repo, "node_modules", p, "package.json"), "utf8")).version);
  return {
    hostname: os.hostname(),
    kernel: `${os.type()} ${os.release()}`,
    cpu: os.cpus()[0]?.model ?? "unknown",
    cores: os.cpus().length,
    memoryMiB: Math.round(os.totalmem() / MiB),
    loadavgAtStart: os.loadavg(),
    node: process.version,
    ssh: safe(() => String(execFileSync("sh", ["-c", "ssh -V 2>&1"]))),
    ssh2: pkg("ssh2"),
    ab: safe(() => String(execFileSync("sh", ["-c", "ab -V | head -1"]))),
    revtunBin,
    revtunCommit: safe(() =>
      execFileSync("git", ["-C", repo, "rev-parse", "--short", "HEAD"], { encoding: "utf8" }),
    ),
    cipher: CIPHER,
    note: "loopback only; the machine may be shared with other processes (see loadavg)",
  };
}

/**
 * One of the two things a table compares: how to start its tunnel, and which
 * processes are the tunnel (client) and the server side for CPU and memory.
 */
interface Side {
  label: string;
  start(opts: TunnelOptions): Tunnel;
  /** Server-side pids serving tunnel `t` (sshd's session processes, or the relay). */
  serverPids(t: Tunnel, before: Set<number>): number[];
}

interface Context {
  o: Options;
  sshd: Sshd;
  svc: ServiceReady;
  cli: ClientReady;
  service: PeerProcess;
  client: PeerProcess;
}

const fwd = (port: number, remote = 0) => `127.0.0.1:${remote}:127.0.0.1:${port}`;

/** Bulk and HTTP workloads: one long-lived tunnel per side, both up, used in turn (A B A B ...). */
async function throughputRuns(
  ctx: Context,
  sides: [Side, Side],
  ids: WorkloadId[],
  runs: Record<string, Run[]>,
): Promise<void> {
  const { o, sshd, svc, cli, client } = ctx;
  const ws = (["download", "upload", "http-c1", "http-c50"] as const).filter((w) => ids.includes(w));
  if (!ws.length) return;
  const up = new Map<string, { t: Tunnel; ports: Map<string, number>; serverPids: number[] }>();
  for (const side of sides) {
    const before = new Set(descendants(sshd.pid ?? 0));
    const t = side.start({ forwards: [fwd(svc.ports.http), fwd(svc.ports.download), fwd(svc.ports.upload)] });
    const ports = await t.allocated(3);
    up.set(side.label, { t, ports, serverPids: side.serverPids(t, before) });
    await ab(remote(ports, svc.ports.http), 200, 10); // warm-up
  }
  for (const w of ws) {
    for (let pair = 1; pair <= o.pairs; pair++) {
      for (const side of sides) {
        const { t, ports, serverPids } = up.get(side.label) as NonNullable<ReturnType<typeof up.get>>;
        if (!t.alive) throw new Error(`${side.label} tunnel died: ${t.stderr}`);
        const pid = t.pid;
        const c0 = cpuMs(pid);
        const s0 = sumCpuMs(serverPids);
        const load = os.loadavg()[0] ?? 0;
        const t0 = now();
        let value: number;
        let raw: Run["raw"];
        if (w === "download" || w === "upload") {
          const port = remote(ports, w === "download" ? svc.ports.download : svc.ports.upload);
          const rep = await client.request({ type: w, port });
          const expected = w === "download" ? svc.downloadHash : cli.uploadHash;
          if (!rep.ok) throw new Error(`${w} through ${side.label} failed: ${rep.error}`);
          if (rep.hash !== expected || rep.bytes !== o.bulkBytes)
            throw new Error(
              `BYTE MISMATCH: ${w} through ${side.label}: got ${rep.bytes} bytes sha256 ${rep.hash}, sent ${o.bulkBytes} bytes sha256 ${expected}`,
            );
          const ms = rep.ms ?? now() - t0;
          value = o.bulkBytes / MiB / (ms / 1000);
          raw = { ms, bytes: rep.bytes ?? 0, sha256: rep.hash ?? "" };
        } else {
          const c = w === "http-c1" ? 1 : 50;
          const n = c === 1 ? o.httpC1 : o.httpC50;
          const res = await ab(remote(ports, svc.ports.http), n, c);
          value = res.rps;
          raw = { requests: n, concurrency: c, failed: res.failed, meanMs: res.meanMs };
        }
        const wall = now() - t0;
        const cpu = cpuMs(pid) - c0;
        const serverCpu = sumCpuMs(serverPids) - s0;
        const r: Run = {
          pair,
          tool: side.label,
          value,
          cpuPct: (cpu / wall) * 100,
          sshdCpuPct: (serverCpu / wall) * 100,
          raw: { ...raw, wallMs: wall, tunnelCpuMs: cpu, serverCpuMs: serverCpu, loadavg1: load },
        };
        const list = runs[w] ?? [];
        runs[w] = list;
        list.push(r);
        log(
          `  ${w} pair ${pair} ${side.label}: ${value.toFixed(1)} (tunnel CPU ${r.cpuPct?.toFixed(0)}%, server ${r.sshdCpuPct?.toFixed(0)}%)`,
        );
      }
    }
  }
  for (const { t } of up.values()) await stop(t);
}

/**
 * Memory per idle forwarded connection: a fresh tunnel per run, `count`
 * connections held open end to end. `where` picks the process(es) measured.
 */
async function memoryRuns(
  ctx: Context,
  sides: [Side, Side],
  count: number,
  where: "tunnel" | "server",
  runs: Run[],
  pairs: number[] = Array.from({ length: ctx.o.pairs }, (_, i) => i + 1),
): Promise<void> {
  const { sshd, svc, service, client } = ctx;
  for (const pair of pairs) {
    for (const side of sides) {
      const before0 = new Set(descendants(sshd.pid ?? 0));
      const t = side.start({ forwards: [fwd(svc.ports.hold)] });
      const port = remote(await t.allocated(1), svc.ports.hold);
      const pids = where === "tunnel" ? [t.pid] : side.serverPids(t, before0);
      const rss = () => pids.reduce((a, p) => a + rssKiB(p), 0);
      // One connection first, so lazily loaded code is in the baseline.
      let rep = await client.request({ type: "hold", port, count: 1 });
      if (!rep.ok) throw new Error(`hold through ${side.label} failed: ${rep.error}`);
      await client.request({ type: "release" });
      await service.request({ type: "releaseHeld" });
      await sleep(300);
      const before = rss();
      rep = await client.request({ type: "hold", port, count });
      if (!rep.ok) throw new Error(`holding ${count} connections through ${side.label} failed: ${rep.error}`);
      const held = (await service.request({ type: "holdCount" })).count ?? 0;
      if (held < count) throw new Error(`only ${held} of ${count} held connections reached the service`);
      await sleep(500);
      const after = rss();
      await client.request({ type: "release" });
      await service.request({ type: "releaseHeld" });
      await stop(t);
      const value = (after - before) / count;
      runs.push({
        pair,
        tool: side.label,
        value,
        raw: { rssBeforeKiB: before, rssAfterKiB: after, connections: count, openMs: rep.ms ?? 0, where },
      });
      log(
        `  memory pair ${pair} ${side.label}: ${value.toFixed(1)} KiB/conn (${where} RSS ${before} -> ${after} KiB)`,
      );
      await sleep(300);
    }
  }
}

function summaries(
  labels: Labels,
  runs: Record<string, Run[]>,
  titles: Record<string, Omit<Workload, "runs" | "id" | "labels">>,
): Summary[] {
  return Object.keys(titles)
    .filter((id) => runs[id]?.length)
    .map((id) =>
      summarize({
        id,
        labels,
        ...(titles[id] as Omit<Workload, "runs" | "id" | "labels">),
        runs: runs[id] ?? [],
      }),
    );
}

async function main(): Promise<void> {
  // The WAN table (bench/wan.ts) is a run of its own, with its own flags and cleanup.
  if (process.argv.includes("--wan")) return (await import("./wan.js")).wan(process.argv.slice(2));
  // The fleet figures (bench/fleet.ts): devices against one relay and against three.
  if (process.argv.includes("--fleet")) return (await import("./fleet.js")).fleet(process.argv.slice(2));
  // The fleet's inventory at full size (bench/inventory.ts): 1,000 devices over three relays.
  if (process.argv.includes("--inventory"))
    return (await import("./inventory.js")).inventory(process.argv.slice(2));
  const o = parseOptions(process.argv.slice(2));
  // The HTTP rows are ApacheBench's; say so before starting servers, not as a spawn ENOENT minutes in.
  if ((o.only.has("http-c1") || o.only.has("http-c50")) && !onPath("ab"))
    throw new Error(
      "the HTTP rows need ab (ApacheBench): apt-get install apache2-utils, or leave them out with --only download,upload,memory,startup,restart",
    );
  const runs: Record<string, Run[]> = {};
  const began = now();
  const machine = machineInfo(o.revtunBin);
  log(
    `bench: ${o.pairs} pairs, bulk ${o.bulkBytes / MiB} MiB, HTTP ${o.httpC1} (c=1) / ${o.httpC50} (c=50) requests, ${o.holdCount} held connections; cipher ${CIPHER}`,
  );

  const sshd = await Sshd.start({ config: [`Ciphers ${CIPHER}`] });
  live.add({ stop: () => sshd.close() });
  const service = new PeerProcess("service", o.bulkBytes, live);
  const client = new PeerProcess("client", o.bulkBytes, live);
  const svc = (await service.ready) as ServiceReady;
  const cli = (await client.ready) as ClientReady;
  const ctx: Context = { o, sshd, svc, cli, service, client };
  const toolOpts = (opts: TunnelOptions): TunnelOptions => ({ ...opts, revtunBin: o.revtunBin });
  const tool = (name: Tool): Side => ({
    label: name,
    start: (opts) => start(name, sshd, toolOpts(opts)),
    serverPids: (_t, before) => sshdSessionPids(sshd, before),
  });
  const sides: [Side, Side] = [tool("ssh"), tool("revtun")];
  const ids = [...o.only];

  await throughputRuns(ctx, sides, ids, runs);
  if (o.only.has("memory")) {
    runs.memory = [];
    await memoryRuns(ctx, sides, o.holdCount, "tunnel", runs.memory);
  }

  // Spawn to the first forwarded byte: stderr's "Allocated port", then one request.
  if (o.only.has("startup")) {
    runs.startup = [];
    for (let pair = 1; pair <= o.pairs; pair++) {
      for (const side of sides) {
        const t = side.start({ forwards: [fwd(svc.ports.http)] });
        const t0 = Number(t.startedAt) / 1e6;
        const port = remote(await t.allocated(1), svc.ports.http);
        const allocatedMs = now() - t0;
        const servedAt = await pollUntilServing(port, 5, 10_000);
        await stop(t);
        const value = servedAt - t0;
        runs.startup.push({ pair, tool: side.label, value, raw: { allocatedMs, firstResponseMs: value } });
        log(
          `  startup pair ${pair} ${side.label}: ${value.toFixed(0)} ms (port allocated at ${allocatedMs.toFixed(0)} ms)`,
        );
      }
    }
  }

  // sshd restart (sessions killed, listener restarted on the same port and keys) to serving again.
  if (o.only.has("restart")) {
    runs.restart = [];
    for (let pair = 1; pair <= o.pairs; pair++) {
      for (const name of TOOLS) {
        const remotePort = await freePort();
        const keepalive = ["ServerAliveInterval=1", "ServerAliveCountMax=3"];
        const opts = toolOpts({ forwards: [fwd(svc.ports.http, remotePort)] });
        const t =
          name === "ssh"
            ? new SshLoop(sshd, { ...opts, options: [...keepalive, "ExitOnForwardFailure=yes"] })
            : start(name, sshd, { ...opts, options: keepalive });
        live.add(t);
        await pollUntilServing(remotePort, 20, 15_000);
        const t0 = now();
        sshd.killSessions();
        await sshd.restart();
        const sshdUpMs = now() - t0;
        const servedAt = await pollUntilServing(remotePort, 20, 60_000);
        const value = servedAt - t0;
        const starts = t instanceof SshLoop ? t.starts : 1;
        await stop(t);
        runs.restart.push({
          pair,
          tool: name,
          value,
          raw: { sshdUpMs, servingMs: value, sshStarts: starts },
        });
        log(
          `  restart pair ${pair} ${name}: serving ${value.toFixed(0)} ms after the kill (sshd listening again at ${sshdUpMs.toFixed(0)} ms)`,
        );
      }
    }
  }

  const titles = workloadTitles(o, o.holdCount);
  const main = summaries(["ssh", "revtun"], runs, titles);
  if (runs.memory?.length) {
    // Idle RSS of the tunnel process, from the memory runs' baselines.
    main.push(
      summarize({
        id: "idle-rss",
        labels: ["ssh", "revtun"],
        title: "idle RSS",
        unit: "MiB",
        better: "lower",
        note: "VmRSS of the tunnel process with one forward, after one connection",
        runs: runs.memory.map((r) => ({
          pair: r.pair,
          tool: r.tool,
          value: Number(r.raw.rssBeforeKiB) / 1024,
          raw: {},
        })),
      }),
    );
  }

  let relay: { summaries: Summary[]; runs: Record<string, Run[]> } | { skipped: string } | undefined;
  if (o.relay) relay = await relayTable(ctx);

  let floor: { summaries: Summary[]; runs: Record<string, Run[]> } | undefined;
  if (o.floor) {
    const floorRuns: Record<string, Run[]> = {};
    await throughputRuns(ctx, [tool("ssh"), tool("ssh2-floor")], ids, floorRuns);
    floor = {
      summaries: summaries(["ssh", "ssh2-floor"], floorRuns, workloadTitles(o, o.holdCount)),
      runs: floorRuns,
    };
  }

  const elapsedS = (now() - began) / 1000;
  const heading = `revtun vs OpenSSH ssh -N -R (same sshd), ${o.pairs} pairs alternating ssh, revtun; medians; ratio = revtun/ssh per pair`;
  process.stdout.write(`\n${table(main, heading)}\n\n`);
  if (relay && "summaries" in relay) {
    const h = `server: revtun relay vs OpenSSH sshd, client OpenSSH ssh -N -R for both, ${o.pairs} pairs; ratio = relay/sshd per pair`;
    process.stdout.write(`${table(relay.summaries, h)}\n\n`);
  } else if (relay) process.stdout.write(`relay: ${relay.skipped}\n\n`);
  if (floor) {
    const h = `floor: a bare ssh2 forwarder (bench/ssh2-floor.mjs) vs OpenSSH ssh -N -R, ${o.pairs} pairs; ratio = ssh2-floor/ssh per pair`;
    process.stdout.write(`${table(floor.summaries, h)}\n\n`);
  }
  const result = {
    date: new Date().toISOString(),
    machine: { ...machine, loadavgAtEnd: os.loadavg() },
    config: {
      pairs: o.pairs,
      quick: o.quick,
      bulkBytes: o.bulkBytes,
      httpRequests: { c1: o.httpC1, c50: o.httpC50 },
      heldConnections: o.holdCount,
      order: "for each workload, for each pair: ssh then revtun",
      sshRestartWrapper:
        "ssh restarted by a loop in bench/tunnels.ts (SshLoop), like autossh -M 0: at once, then 0.1 s doubling to 2 s while attempts fail within 1 s",
      elapsedSeconds: Math.round(elapsedS),
    },
    summaries: main,
    runs,
    ...(relay ? { relay } : {}),
    ...(floor ? { floor } : {}),
  };
  mkdirSync(o.out, { recursive: true });
  writeFileSync(join(o.out, "results.json"), `${JSON.stringify(result, null, 2)}\n`);
  const subtitle = `${o.pairs} pairs, ${String(machine.cpu)} (${machine.cores} cores), Node ${process.version}, ${String(machine.ssh).split(",")[0]}, ${CIPHER}, ${result.date.slice(0, 10)}`;
  writeFileSync(
    join(o.out, "results.svg"),
    svg(
      main,
      "revtun vs OpenSSH ssh -R (median of pairs; bars scaled per workload)",
      subtitle,
      "sshd restart: ssh under a restart loop (autossh -M 0 style); revtun reconnects by itself. Loopback; figures vary with machine load.",
    ),
  );
  log(`wrote ${join(o.out, "results.json")} and results.svg in ${elapsedS.toFixed(0)} s`);
}

function workloadTitles(
  o: Options,
  holdCount: number,
): Record<string, Omit<Workload, "runs" | "id" | "labels">> {
  return {
    download: {
      title: "download",
      unit: "MiB/s",
      better: "higher",
      note: `${o.bulkBytes / MiB} MiB, sha256 checked`,
    },
    upload: {
      title: "upload",
      unit: "MiB/s",
      better: "higher",
      note: `${o.bulkBytes / MiB} MiB, sha256 checked`,
    },
    "http-c1": {
      title: "HTTP c=1",
      unit: "req/s",
      better: "higher",
      note: `ab -n ${o.httpC1} -c 1, new connection per request`,
    },
    "http-c50": {
      title: "HTTP c=50",
      unit: "req/s",
      better: "higher",
      note: `ab -n ${o.httpC50} -c 50, new connection per request`,
    },
    memory: {
      title: "idle conn RSS",
      unit: "KiB/conn",
      better: "lower",
      note: `VmRSS growth, ${holdCount} held-open forwarded connections`,
    },
    startup: {
      title: "startup",
      unit: "ms",
      better: "lower",
      note: "spawn to first HTTP response through the tunnel",
    },
    restart: {
      title: "sshd restart",
      unit: "ms",
      better: "lower",
      note: "sessions killed + sshd restarted (same port, keys) to serving again; ssh WRAPPED in a restart loop (autossh -M 0 style: at once, then 0.1-2 s backoff); revtun alone; both ServerAliveInterval=1",
    },
  };
}

/** The relay runs with --max-channels above the held count (its default is 256 a session). */
const RELAY_MAX_CHANNELS = 1_100;

interface BenchRelay {
  server: Server;
  pid: number;
  stop(): Promise<void>;
}

/** `revtun relay` on a free loopback port, with the sshd's user key authorized; or why it did not start. */
async function launchRelay(o: Options, sshd: Sshd, dir: string): Promise<BenchRelay | string> {
  const hostKey = join(dir, "host_ed25519");
  if (!existsSync(hostKey)) keygen(hostKey);
  const port = await freePort();
  const proc = new RelayProcess(o.revtunBin, port, hostKey, join(sshd.dir, "authorized_keys"), [
    "--max-channels",
    String(RELAY_MAX_CHANNELS),
  ]);
  const relay: BenchRelay = {
    server: { port, user: sshd.user, userKey: sshd.userKey, knownHosts: join(dir, "known_hosts") },
    pid: proc.proc.pid ?? 0,
    stop: async () => {
      live.delete(relay);
      await proc.stop();
    },
  };
  live.add(relay);
  const why = await proc.ready(port, sshBanner);
  if (why) {
    await relay.stop();
    return why;
  }
  const [type, key] = readFileSync(`${hostKey}.pub`, "utf8").trim().split(/\s+/);
  writeFileSync(relay.server.knownHosts, `[127.0.0.1]:${port} ${type} ${key}\n`);
  return relay;
}

/**
 * Second table: the same client (OpenSSH ssh) against OpenSSH sshd and
 * against `revtun relay`, both on loopback with the same user key. Memory
 * pairs get a fresh relay each, as sshd's sessions are fresh processes: a
 * long-lived Node process keeps the heap it grew for earlier pairs.
 */
async function relayTable(
  ctx: Context,
): Promise<{ summaries: Summary[]; runs: Record<string, Run[]> } | { skipped: string }> {
  const { o, sshd } = ctx;
  const dir = mkdtempSync(join(tmpdir(), "revtun-bench-relay-"));
  live.add({ stop: () => rmSync(dir, { recursive: true, force: true }) });
  const sshdSide: Side = {
    label: "sshd",
    start: (opts) => start("ssh", sshd, opts),
    serverPids: (_t, before) => sshdSessionPids(sshd, before),
  };
  const relaySide = (relay: BenchRelay): Side => ({
    label: "relay",
    start: (opts) => start("ssh", relay.server, opts),
    serverPids: () => [relay.pid],
  });
  log("relay table: OpenSSH ssh against sshd and against revtun relay");
  const runs: Record<string, Run[]> = {};
  const ids = [...o.only].filter((w) => w !== "startup" && w !== "restart");
  const count = Math.min(o.holdCount, RELAY_MAX_CHANNELS - 100);
  const withRelay = async (fn: (relay: BenchRelay) => Promise<void>): Promise<string | undefined> => {
    const relay = await launchRelay(o, sshd, dir);
    if (typeof relay === "string") return relay;
    try {
      await fn(relay);
    } finally {
      await relay.stop();
    }
    return undefined;
  };
  const failed = await withRelay((relay) => throughputRuns(ctx, [sshdSide, relaySide(relay)], ids, runs));
  if (failed) return { skipped: failed };
  if (o.only.has("memory")) {
    runs.memory = [];
    for (let pair = 1; pair <= o.pairs; pair++) {
      const memory = runs.memory;
      const why = await withRelay((relay) =>
        memoryRuns(ctx, [sshdSide, relaySide(relay)], count, "server", memory, [pair]),
      );
      if (why) return { skipped: why };
    }
  }
  const titles = workloadTitles(o, count);
  if (titles.memory) {
    titles.memory.title = "server RSS/conn";
    titles.memory.note = `VmRSS growth of the server (sshd session processes / a fresh relay process), ${count} held connections (relay run with --max-channels ${RELAY_MAX_CHANNELS})`;
  }
  return { summaries: summaries(["sshd", "relay"], runs, titles), runs };
}

/** sshd's processes that were not there before (`before`: its descendants then): a new session's. */
function sshdSessionPids(sshd: Sshd, before: Set<number>): number[] {
  return descendants(sshd.pid ?? 0).filter((p) => !before.has(p) && p !== sshd.pid);
}

/** A process and all its descendants, by /proc. */
function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(d)]);
    } catch {
      // gone
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    out.push(p);
    for (const c of children.get(p) ?? []) walk(c);
  };
  walk(pid);
  return out;
}

function sumCpuMs(pids: number[]): number {
  let total = 0;
  for (const p of pids) {
    try {
      total += cpuMs(p);
    } catch {
      // exited
    }
  }
  return total;
}

function remote(ports: Map<string, number>, localPort: number): number {
  const p = ports.get(`127.0.0.1:${localPort}`);
  if (p === undefined) throw new Error(`no allocated port for 127.0.0.1:${localPort}`);
  return p;
}

async function cleanup(): Promise<void> {
  for (const x of [...live].reverse()) {
    try {
      await x.stop();
    } catch {
      // best effort
    }
  }
  live.clear();
}

for (const [signal, code] of [
  ["SIGINT", 130],
  ["SIGTERM", 143],
] as const) {
  process.on(signal, () => {
    void cleanup().then(() => process.exit(code));
  });
}

main().then(
  async () => {
    await cleanup();
  },
  async (err: Error) => {
    process.stderr.write(`\nbench FAILED: ${err.stack ?? err.message}\n`);
    await cleanup();
    process.exitCode = 1;
  },
);
