/**
 * `npm run bench -- --wan [RTTs]`: the tunnels over a simulated WAN
 * (bench/delay-line.ts, one process per RTT: one-way delay each way, a rate
 * cap, a bounded queue), at 20, 50, 100 and 200 ms RTT by default.
 *
 *   ssh    / revtun  agent -> delay line -> OpenSSH sshd        (same sshd, same flags)
 *   ssh@relay / revtun@relay  agent -> delay line -> `revtun relay`
 *   limit  a plain TCP connection through the same delay line to the same service
 *
 * Workloads, each side in turn per rep: download and upload (sha256 checked),
 * HTTP requests one at a time on new connections (mean ms), and
 * head-of-line: small HTTP requests one at a time on the same session while a
 * bulk download runs (p50 / p99 ms). It measures whatever bin/revtun (dist/)
 * is built; nothing to switch.
 *
 *   --wan [MS[,MS...]]  RTTs (default 20,50,100,200)
 *   --wan-size MiB      bulk size (default 64)
 *   --wan-reps N        reps per side and workload (default 1)
 *   --wan-rate MiB/s    bottleneck rate each way (default 100)
 *   --wan-queue N       bottleneck queue in bandwidth-delay products (default 2)
 *   --wan-http N        requests for the HTTP row (default 20)
 *   --wan-hol N         small requests during the bulk for head-of-line (default 15)
 *   --wan-only a,b      a subset of: download upload http hol
 *   --out DIR           where wan-results.json / wan.svg go (default bench/)
 *   --revtun-bin PATH   measure another checkout's bin/revtun
 */

import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, keygen, Sshd, sshBanner } from "../test/helpers/sshd.js";
import type { ClientReady, ServiceReady } from "./peer.js";
import { PeerProcess } from "./peer-process.js";
import { fmt, machineInfo, median } from "./report.js";
import {
  CIPHER,
  cpuMs,
  DEFAULT_REVTUN_BIN,
  RelayProcess,
  type Server,
  type Tool,
  Tunnel,
} from "./tunnels.js";

const HERE = dirname(fileURLToPath(import.meta.url));
const MiB = 1 << 20;
const WORKLOADS = ["download", "upload", "http", "hol"] as const;
type WorkloadId = (typeof WORKLOADS)[number];
const SIDES = ["limit", "ssh", "revtun", "ssh@relay", "revtun@relay"] as const;
type SideId = (typeof SIDES)[number];

interface WanOptions {
  rtts: number[];
  bytes: number;
  reps: number;
  rate: number;
  queueBdp: number;
  httpN: number;
  holN: number;
  only: WorkloadId[];
  out: string;
  revtunBin: string;
}

export function parseWanOptions(argv: string[]): WanOptions {
  const o: WanOptions = {
    rtts: [20, 50, 100, 200],
    bytes: 64 * MiB,
    reps: 1,
    rate: 100 * MiB,
    queueBdp: 2,
    httpN: 20,
    holN: 15,
    only: [...WORKLOADS],
    out: HERE,
    revtunBin: DEFAULT_REVTUN_BIN,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? "";
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    const positive = (integer: boolean) => {
      const v = value();
      const n = Number(v);
      if (!(n > 0) || (integer && !Number.isInteger(n))) throw new Error(`${a}: bad value ${v}`);
      return n;
    };
    if (a === "--wan") {
      const next = argv[i + 1];
      if (next !== undefined && /^[\d.,]+$/.test(next)) {
        i++;
        o.rtts = next.split(",").map((x) => {
          const n = Number(x);
          if (!(n > 0)) throw new Error(`--wan: bad RTT ${x}`);
          return n;
        });
      }
    } else if (a === "--wan-size") o.bytes = Math.round(positive(false) * MiB);
    else if (a === "--wan-reps") o.reps = positive(true);
    else if (a === "--wan-rate") o.rate = positive(false) * MiB;
    else if (a === "--wan-queue") o.queueBdp = positive(false);
    else if (a === "--wan-http") o.httpN = positive(true);
    else if (a === "--wan-hol") o.holN = positive(true);
    else if (a === "--out") o.out = resolve(value());
    else if (a === "--revtun-bin") o.revtunBin = resolve(value());
    else if (a === "--wan-only") {
      const ids = value().split(",");
      for (const id of ids)
        if (!WORKLOADS.includes(id as WorkloadId))
          throw new Error(`--wan-only: unknown workload ${id}; one of ${WORKLOADS.join(", ")}`);
      o.only = ids as WorkloadId[];
    } else throw new Error(`unknown option with --wan: ${a}`);
  }
  return o;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const now = () => Number(process.hrtime.bigint()) / 1e6;
const log = (s: string) => process.stderr.write(`${s}\n`);

/** Everything started, stopped by pid in reverse order on any exit. */
const live = new Set<{ stop(): Promise<void> | void }>();

function killAndWait(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null || !proc.pid) return Promise.resolve();
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  process.kill(proc.pid, "SIGTERM");
  return exited;
}

/** bench/delay-line.ts in its own process, so that its CPU is its own and can be read. */
class LineProcess {
  readonly proc: ChildProcess;
  readonly ports: Promise<number[]>;

  constructor(o: WanOptions, rtt: number, targets: number[]) {
    const queue = Math.round(o.queueBdp * o.rate * (rtt / 1000));
    this.proc = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        join(HERE, "delay-line.ts"),
        "--delay",
        String(rtt / 2),
        "--rate",
        String(o.rate / MiB),
        "--queue",
        String(queue),
        ...targets.map(String),
      ],
      { stdio: ["pipe", "pipe", "inherit"] },
    );
    live.add(this);
    this.ports = new Promise((resolve, reject) => {
      let out = "";
      this.proc.once("exit", (code) => reject(new Error(`delay line exited ${code}`)));
      this.proc.stdout?.setEncoding("utf8").on("data", (d: string) => {
        out += d;
        const nl = out.indexOf("\n");
        if (nl >= 0) resolve((JSON.parse(out.slice(0, nl)) as { ports: number[] }).ports);
      });
    });
  }

  get pid(): number {
    return this.proc.pid ?? 0;
  }

  async stop(): Promise<void> {
    live.delete(this);
    await killAndWait(this.proc);
  }
}

/** `revtun relay` on a free loopback port with the sshd's user key authorized. */
async function launchRelay(
  o: WanOptions,
  sshd: Sshd,
  dir: string,
): Promise<{ port: number; hostKey: string }> {
  const hostKey = join(dir, "host_ed25519");
  keygen(hostKey);
  const port = await freePort();
  const relay = new RelayProcess(o.revtunBin, port, hostKey, join(sshd.dir, "authorized_keys"));
  live.add(relay);
  const why = await relay.ready(port, sshBanner);
  if (why) throw new Error(why);
  return { port, hostKey };
}

/** known_hosts naming the delay line's port for a server's host key(s). */
function knownHostsAt(file: string, port: number, pubFiles: string[]): void {
  const lines = pubFiles.map((f) => {
    const [type, key] = readFileSync(f, "utf8").trim().split(/\s+/);
    return `[127.0.0.1]:${port} ${type} ${key}\n`;
  });
  writeFileSync(file, lines.join(""));
}

/** One GET on a new connection; its latency in ms. */
function get(port: number, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = now();
    const req = http.get({ host: "127.0.0.1", port, path: "/", agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      res.on("end", () =>
        res.statusCode === 200 ? resolve(now() - t0) : reject(new Error(`HTTP ${res.statusCode}`)),
      );
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`no response in ${timeoutMs} ms`)));
    req.on("error", reject);
  });
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? Number.NaN;
}

/** Where one side's workloads connect, and which process is its tunnel (none for limit). */
interface Endpoint {
  side: SideId;
  download: number;
  upload: number;
  http: number;
  tunnel?: Tunnel;
}

interface WanRun {
  rtt: number;
  rep: number;
  side: SideId;
  workload: WorkloadId;
  /** MiB/s for bulk, mean ms for http, p50 ms for hol. */
  value: number;
  p99?: number;
  tunnelCpuPct?: number;
  lineCpuPct: number;
  wallMs: number;
  raw: Record<string, number>;
}

async function measure(
  o: WanOptions,
  client: PeerProcess,
  svc: ServiceReady,
  cli: ClientReady,
  e: Endpoint,
  w: WorkloadId,
): Promise<Omit<WanRun, "rtt" | "rep" | "lineCpuPct" | "wallMs" | "tunnelCpuPct">> {
  const bulk = async (type: "download" | "upload") => {
    const rep = await client.request({ type, port: type === "download" ? e.download : e.upload });
    const expected = type === "download" ? svc.downloadHash : cli.uploadHash;
    if (!rep.ok) throw new Error(`${type} through ${e.side} failed: ${rep.error}`);
    if (rep.hash !== expected || rep.bytes !== o.bytes)
      throw new Error(
        `BYTE MISMATCH: ${type} through ${e.side}: got ${rep.bytes} bytes sha256 ${rep.hash}, sent ${o.bytes} sha256 ${expected}`,
      );
    return rep.ms ?? Number.NaN;
  };
  if (w === "download" || w === "upload") {
    const ms = await bulk(w);
    return { side: e.side, workload: w, value: o.bytes / MiB / (ms / 1000), raw: { ms, bytes: o.bytes } };
  }
  if (w === "http") {
    const lat: number[] = [];
    for (let i = 0; i < o.httpN; i++) lat.push(await get(e.http, 30_000));
    const mean = lat.reduce((x, y) => x + y, 0) / lat.length;
    return {
      side: e.side,
      workload: w,
      value: mean,
      raw: { requests: lat.length, p50: percentile(lat, 50), maxMs: Math.max(...lat) },
    };
  }
  // Head-of-line: downloads back to back while small requests go one at a time.
  let stop = false;
  let downloads = 0;
  const bulkLoop = (async () => {
    while (!stop) {
      await bulk("download");
      downloads++;
    }
  })();
  await sleep(300); // let the bulk fill the windows and the queue
  const lat: number[] = [];
  try {
    for (let i = 0; i < o.holN; i++) lat.push(await get(e.http, 30_000));
  } finally {
    stop = true;
    await bulkLoop;
  }
  return {
    side: e.side,
    workload: w,
    value: percentile(lat, 50),
    p99: percentile(lat, 99),
    raw: { requests: lat.length, downloads, maxMs: Math.max(...lat) },
  };
}

export async function wan(argv: string[]): Promise<void> {
  const o = parseWanOptions(argv);
  const began = now();
  const dir = mkdtempSync(join(tmpdir(), "revtun-bench-wan-"));
  live.add({ stop: () => rmSync(dir, { recursive: true, force: true }) });
  const runs: WanRun[] = [];
  // On ^C, bench/run.ts exits right after its own cleanup: stop ours first. Each
  // stop() signals its process synchronously, before its first await.
  const onSignal = () => {
    for (const x of [...live].reverse()) {
      try {
        void Promise.resolve(x.stop()).catch(() => undefined);
      } catch {
        // best effort
      }
    }
  };
  process.prependListener("SIGINT", onSignal).prependListener("SIGTERM", onSignal);
  try {
    log(
      `wan bench: RTT ${o.rtts.join(", ")} ms, ${o.rate / MiB} MiB/s each way, queue ${o.queueBdp} BDP, bulk ${o.bytes / MiB} MiB, ${o.reps} rep(s), cipher ${CIPHER}`,
    );
    const sshd = await Sshd.start({ config: [`Ciphers ${CIPHER}`] });
    live.add({ stop: () => sshd.close() });
    const relay = await launchRelay(o, sshd, dir);
    const service = new PeerProcess("service", o.bytes, live);
    const client = new PeerProcess("client", o.bytes, live);
    const svc = (await service.ready) as ServiceReady;
    const cli = (await client.ready) as ClientReady;
    const sshdPubs = readFileSync(sshd.knownHosts, "utf8")
      .trim()
      .split("\n")
      .map((l, i) => {
        const f = join(dir, `sshd_host_${i}.pub`);
        writeFileSync(f, `${l.split(/\s+/).slice(1).join(" ")}\n`);
        return f;
      });
    for (const rtt of o.rtts) {
      const line = new LineProcess(o, rtt, [
        sshd.port,
        relay.port,
        svc.ports.download,
        svc.ports.upload,
        svc.ports.http,
      ]);
      const [toSshd, toRelay, dl, ul, web] = (await line.ports) as [number, number, number, number, number];
      const sshdAt: Server = {
        port: toSshd,
        user: sshd.user,
        userKey: sshd.userKey,
        knownHosts: join(dir, `kh-sshd-${rtt}`),
      };
      const relayAt: Server = {
        port: toRelay,
        user: sshd.user,
        userKey: sshd.userKey,
        knownHosts: join(dir, `kh-relay-${rtt}`),
      };
      knownHostsAt(sshdAt.knownHosts, toSshd, sshdPubs);
      knownHostsAt(relayAt.knownHosts, toRelay, [`${relay.hostKey}.pub`]);
      const endpoints: Endpoint[] = [{ side: "limit", download: dl, upload: ul, http: web }];
      const forwards = [svc.ports.http, svc.ports.download, svc.ports.upload].map(
        (p) => `127.0.0.1:0:127.0.0.1:${p}`,
      );
      for (const side of SIDES.slice(1)) {
        const tool: Tool = side.startsWith("revtun") ? "revtun" : "ssh";
        const t = new Tunnel(tool, side.endsWith("@relay") ? relayAt : sshdAt, {
          forwards,
          revtunBin: o.revtunBin,
        });
        live.add(t);
        const ports = await t.allocated(3, 30_000);
        const at = (p: number) => {
          const r = ports.get(`127.0.0.1:${p}`);
          if (r === undefined) throw new Error(`${side}: no allocated port for 127.0.0.1:${p}`);
          return r;
        };
        endpoints.push({
          side,
          download: at(svc.ports.download),
          upload: at(svc.ports.upload),
          http: at(svc.ports.http),
          tunnel: t,
        });
      }
      for (const e of endpoints) await get(e.http, 30_000); // warm-up: one request end to end
      // And one bulk: the first 64 MiB of a run measured 52 MiB/s through the limit, the next 98.
      await measure(o, client, svc, cli, endpoints[0] as Endpoint, "download");
      for (let rep = 1; rep <= o.reps; rep++) {
        for (const w of o.only) {
          for (const e of endpoints) {
            if (e.tunnel && !e.tunnel.alive) throw new Error(`${e.side} tunnel died: ${e.tunnel.stderr}`);
            const pid = e.tunnel?.pid;
            const c0 = pid ? cpuMs(pid) : 0;
            const l0 = cpuMs(line.pid);
            const t0 = now();
            const r = await measure(o, client, svc, cli, e, w);
            const wallMs = now() - t0;
            const run: WanRun = {
              ...r,
              rtt,
              rep,
              wallMs,
              lineCpuPct: ((cpuMs(line.pid) - l0) / wallMs) * 100,
              ...(pid ? { tunnelCpuPct: ((cpuMs(pid) - c0) / wallMs) * 100 } : {}),
            };
            runs.push(run);
            log(
              `  ${rtt} ms ${w} ${e.side}: ${fmt(run.value)}${run.p99 !== undefined ? ` (p99 ${fmt(run.p99)})` : ""} ${w === "download" || w === "upload" ? "MiB/s" : "ms"}; line CPU ${run.lineCpuPct.toFixed(0)}%${run.tunnelCpuPct !== undefined ? `, tunnel CPU ${run.tunnelCpuPct.toFixed(0)}%` : ""}`,
            );
          }
        }
      }
      for (const e of endpoints) if (e.tunnel) await e.tunnel.stop();
      for (const e of endpoints) if (e.tunnel) live.delete(e.tunnel);
      await line.stop();
    }
    const elapsedS = (now() - began) / 1000;
    const rows = summarizeWan(o, runs);
    process.stdout.write(`\n${wanTable(rows, o)}\n\n`);
    const result = {
      date: new Date().toISOString(),
      machine: {
        ...machineInfo(),
        cipher: CIPHER,
        revtunBin: o.revtunBin,
      },
      config: {
        rttsMs: o.rtts,
        rateMiBps: o.rate / MiB,
        queueBdp: o.queueBdp,
        bulkBytes: o.bytes,
        reps: o.reps,
        httpRequests: o.httpN,
        holRequests: o.holN,
        model:
          "bench/delay-line.ts: userspace TCP proxy, one-way delay RTT/2 each way, token-bucket rate cap, queue bounded by pausing reads (no loss, no TCP congestion control across the path)",
        elapsedSeconds: Math.round(elapsedS),
      },
      rows,
      runs,
    };
    mkdirSync(o.out, { recursive: true });
    writeFileSync(join(o.out, "wan-results.json"), `${JSON.stringify(result, null, 2)}\n`);
    writeFileSync(join(o.out, "wan.svg"), wanSvg(rows, o, result.date));
    log(`wrote ${join(o.out, "wan-results.json")} and wan.svg in ${elapsedS.toFixed(0)} s`);
  } finally {
    process.off("SIGINT", onSignal).off("SIGTERM", onSignal);
    for (const x of [...live].reverse()) {
      try {
        await x.stop();
      } catch {
        // best effort
      }
    }
    live.clear();
  }
}

interface WanRow {
  rtt: number;
  workload: WorkloadId | "hol-p99";
  unit: string;
  better: "higher" | "lower";
  median: Partial<Record<SideId, number>>;
  /** Medians over reps of per-rep ratios. */
  ratios: Record<string, number>;
  /** Highest delay-line CPU% seen in this row's runs. */
  lineCpuPct: number;
}

function summarizeWan(o: WanOptions, runs: WanRun[]): WanRow[] {
  const rows: WanRow[] = [];
  for (const rtt of o.rtts) {
    for (const w of [...o.only, ...(o.only.includes("hol") ? (["hol-p99"] as const) : [])]) {
      const base: WorkloadId = w === "hol-p99" ? "hol" : w;
      const sel = runs.filter((r) => r.rtt === rtt && r.workload === base);
      if (!sel.length) continue;
      const val = (r: WanRun) => (w === "hol-p99" ? (r.p99 ?? Number.NaN) : r.value);
      const of = (side: SideId, rep: number) => sel.find((r) => r.side === side && r.rep === rep);
      const med: Partial<Record<SideId, number>> = {};
      for (const s of SIDES) med[s] = median(sel.filter((r) => r.side === s).map(val));
      const ratio = (a: SideId, b: SideId, onlyRep?: number) => {
        const xs: number[] = [];
        for (let rep = onlyRep ?? 1; rep <= (onlyRep ?? o.reps); rep++) {
          const ra = of(a, rep);
          const rb = of(b, rep);
          if (ra && rb && val(rb) !== 0) xs.push(val(ra) / val(rb));
        }
        return median(xs);
      };
      rows.push({
        rtt,
        workload: w,
        unit: base === "download" || base === "upload" ? "MiB/s" : "ms",
        better: base === "download" || base === "upload" ? "higher" : "lower",
        median: med,
        ratios: {
          "revtun/ssh": ratio("revtun", "ssh"),
          "revtun/ssh @relay": ratio("revtun@relay", "ssh@relay"),
          "revtun/limit": ratio("revtun", "limit"),
          "ssh/limit": ratio("ssh", "limit"),
          "relay/limit": ratio("revtun@relay", "limit"),
          // Rep 1 is every session's first transfer of the row: windows start
          // at 2 MiB; later reps open at what the session learned (window.ts seed()).
          "relay/limit rep1": ratio("revtun@relay", "limit", 1),
          "ssh: relay/sshd": ratio("ssh@relay", "ssh"),
        },
        lineCpuPct: Math.max(...sel.map((r) => r.lineCpuPct)),
      });
    }
  }
  return rows;
}

const TITLES: Record<WanRow["workload"], string> = {
  download: "download",
  upload: "upload",
  http: "HTTP c=1 mean",
  hol: "HOL small req p50",
  "hol-p99": "HOL small req p99",
};

function wanTable(rows: WanRow[], o: WanOptions): string {
  const ratioKeys = [
    "revtun/ssh",
    "revtun/ssh @relay",
    "revtun/limit",
    "ssh/limit",
    "relay/limit",
    "relay/limit rep1",
    "ssh: relay/sshd",
  ];
  const header = ["RTT", "workload", "unit", ...SIDES, ...ratioKeys, "line CPU%"];
  const lines = rows.map((r) => [
    `${r.rtt} ms`,
    TITLES[r.workload],
    `${r.unit} (${r.better})`,
    ...SIDES.map((s) => fmt(r.median[s] ?? Number.NaN)),
    ...ratioKeys.map((k) => (Number.isFinite(r.ratios[k]) ? `${(r.ratios[k] as number).toFixed(2)}x` : "-")),
    r.lineCpuPct.toFixed(0),
  ]);
  const all = [header, ...lines];
  const widths = header.map((_, i) => Math.max(...all.map((l) => (l[i] ?? "").length)));
  const render = (l: string[]) =>
    l.map((c, i) => (i >= 3 ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0))).join("  ");
  return [
    `WAN: agents -> delay line (${o.rate / MiB} MiB/s each way, queue ${o.queueBdp} BDP) -> sshd or revtun relay; limit = plain TCP through the same line; ${o.reps} rep(s), medians; bulk ${o.bytes / MiB} MiB sha256-checked`,
    render(header),
    widths.map((w) => "-".repeat(w)).join("  "),
    ...lines.map(render),
    `notes: HTTP = ${o.httpN} GETs one at a time, a new connection each (Node's http from this process, not ab); HOL = ${o.holN} GETs one at a time on new connections through the same tunnel while ${o.bytes / MiB} MiB downloads run back to back on it; line CPU% = the delay line process, % of one core (highest run in the row); relay/limit = revtun@relay/limit, rep1 = the first rep alone (each session's first transfer of the row: cold windows); ssh: relay/sshd = stock ssh -R through the revtun relay / through sshd`,
  ].join("\n");
}

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/** One panel per workload, a group of bars (one per side) per RTT, each panel scaled to its largest value. */
function wanSvg(rows: WanRow[], o: WanOptions, date: string): string {
  const panels = (["download", "upload", "http", "hol", "hol-p99"] as const).filter((w) =>
    rows.some((r) => r.workload === w),
  );
  const colors: Record<SideId, string> = {
    limit: "#d0d0d0",
    ssh: "#8c8c8c",
    revtun: "#2a6fdb",
    "ssh@relay": "#5a5a5a",
    "revtun@relay": "#89b4f5",
  };
  const barW = 26;
  const groupW = SIDES.length * barW + 30;
  const panelW = Math.max(340, o.rtts.length * groupW + 40);
  const cols = panels.length > 1 ? 2 : 1;
  const plotH = 170;
  const panelH = plotH + 70;
  const width = Math.max(720, 20 + cols * panelW);
  const top = 70;
  const height = top + Math.ceil(panels.length / cols) * panelH + 30;
  const p: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="10">`,
    `<title>revtun vs OpenSSH ssh -R over a simulated WAN</title>`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="20" y="22" font-size="15" font-weight="bold">revtun vs OpenSSH ssh -R over a simulated WAN</text>`,
    `<text x="20" y="40" fill="#555">${esc(`${o.rate / MiB} MiB/s each way, queue ${o.queueBdp} BDP, ${o.bytes / MiB} MiB bulk, ${o.reps} rep(s), ${CIPHER}, ${date.slice(0, 10)}`)}</text>`,
  ];
  SIDES.forEach((s, i) => {
    const x = 20 + i * 110;
    p.push(
      `<rect x="${x}" y="50" width="10" height="10" fill="${colors[s]}"/><text x="${x + 14}" y="59">${esc(s)}</text>`,
    );
  });
  panels.forEach((w, pi) => {
    const x0 = 20 + (pi % cols) * panelW;
    const y0 = top + Math.floor(pi / cols) * panelH;
    const sel = rows.filter((r) => r.workload === w);
    const max =
      Math.max(...sel.flatMap((r) => SIDES.map((s) => r.median[s] ?? 0)).filter(Number.isFinite)) || 1;
    const unit = sel[0]?.unit ?? "";
    const better = sel[0]?.better ?? "higher";
    p.push(
      `<text x="${x0}" y="${y0 + 14}" font-size="12" font-weight="bold">${esc(`${TITLES[w]} (${unit}, ${better} is better)`)}</text>`,
      `<line x1="${x0}" y1="${y0 + 20 + plotH}" x2="${x0 + o.rtts.length * groupW + 10}" y2="${y0 + 20 + plotH}" stroke="#333"/>`,
    );
    sel.forEach((r, gi) => {
      const gx = x0 + 10 + gi * groupW;
      SIDES.forEach((s, j) => {
        const v = r.median[s] ?? Number.NaN;
        if (!Number.isFinite(v)) return;
        const h = Math.max(1, (v / max) * (plotH - 24));
        const x = gx + j * barW;
        const y = y0 + 20 + plotH - h;
        p.push(
          `<rect x="${x}" y="${y.toFixed(1)}" width="${barW - 2}" height="${h.toFixed(1)}" fill="${colors[s]}"><title>${esc(`${s} ${fmt(v)} ${unit}`)}</title></rect>`,
          `<text x="${x + (barW - 2) / 2}" y="${(y - 3).toFixed(1)}" text-anchor="middle" font-size="8">${esc(fmt(v))}</text>`,
        );
      });
      const rs = r.ratios["revtun/ssh"] ?? Number.NaN;
      const good = r.better === "higher" ? rs >= 0.95 : rs <= 1.05;
      p.push(
        `<text x="${gx + (SIDES.length * barW) / 2}" y="${y0 + 34 + plotH}" text-anchor="middle" font-weight="bold">${r.rtt} ms RTT</text>`,
        `<text x="${gx + (SIDES.length * barW) / 2}" y="${y0 + 48 + plotH}" text-anchor="middle" fill="${good ? "#1a7f37" : "#b42318"}">revtun/ssh ${Number.isFinite(rs) ? rs.toFixed(2) : "-"}x</text>`,
      );
    });
  });
  p.push(
    `<text x="20" y="${height - 10}" fill="#555">Delay line: bench/delay-line.ts (userspace; no loss, no end-to-end TCP congestion control). Loopback; figures vary with machine load.</text>`,
    "</svg>",
  );
  return `${p.join("\n")}\n`;
}
