/**
 * The two tunnels under test, started with the same flags against the same
 * sshd: OpenSSH `ssh -N -R` and `bin/revtun -N -R`. Every process is stopped by
 * its pid.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** Where a tunnel connects: the test sshd, or the revtun relay (same user key). */
export interface Server {
  port: number;
  user: string;
  userKey: string;
  knownHosts: string;
}

export type Tool = "ssh" | "revtun" | "ssh2-floor";
export const TOOLS: Tool[] = ["ssh", "revtun"];
export const CIPHER = "aes128-gcm@openssh.com";
export const DEFAULT_REVTUN_BIN = fileURLToPath(new URL("../bin/revtun", import.meta.url));

const ENV = { ...process.env, SSH_AUTH_SOCK: "" };

export interface TunnelOptions {
  /** `-R` specs. */
  forwards: string[];
  /** Extra `-o` options, e.g. ServerAliveInterval=1. */
  options?: string[];
  /** revtun's bin (another checkout can be measured with --revtun-bin). */
  revtunBin?: string;
  /** Extra node flags for revtun, e.g. --cpu-prof. */
  nodeFlags?: string[];
}

/** The flags both tools get, exactly as ssh takes them. */
export function commonArgs(server: Server, opts: TunnelOptions): string[] {
  return [
    "-F",
    "/dev/null",
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    `UserKnownHostsFile=${server.knownHosts}`,
    "-o",
    "IdentitiesOnly=yes",
    "-i",
    server.userKey,
    "-p",
    String(server.port),
    "-c",
    CIPHER,
    "-N",
    ...(opts.options ?? []).flatMap((o) => ["-o", o]),
    ...opts.forwards.flatMap((f) => ["-R", f]),
    `${server.user}@127.0.0.1`,
  ];
}

export function command(tool: Tool, server: Server, opts: TunnelOptions): [string, string[]] {
  const args = commonArgs(server, opts);
  if (tool === "ssh") return ["ssh", args];
  if (tool === "ssh2-floor")
    return [process.execPath, [fileURLToPath(new URL("ssh2-floor.mjs", import.meta.url)), ...args]];
  return [process.execPath, [...(opts.nodeFlags ?? []), opts.revtunBin ?? DEFAULT_REVTUN_BIN, ...args]];
}

/** One tunnel process; `pid` is ssh's or node's own pid (what the memory figures read). */
export class Tunnel {
  stderr = "";
  readonly proc: ChildProcess;
  readonly startedAt: bigint;
  readonly exited: Promise<void>;

  constructor(
    readonly tool: Tool,
    server: Server,
    readonly opts: TunnelOptions,
  ) {
    const [cmd, args] = command(tool, server, opts);
    this.startedAt = process.hrtime.bigint();
    this.proc = spawn(cmd, args, { stdio: ["ignore", "ignore", "pipe"], env: ENV });
    this.proc.stderr?.setEncoding("utf8").on("data", (d: string) => {
      this.stderr += d;
      if (this.stderr.length > 200_000) this.stderr = this.stderr.slice(-100_000);
      this.onStderr?.();
    });
    this.exited = new Promise((r) => this.proc.once("exit", () => r()));
  }

  private onStderr: (() => void) | undefined;

  get pid(): number {
    if (!this.proc.pid) throw new Error(`${this.tool} did not start`);
    return this.proc.pid;
  }

  get alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /**
   * Waits until every forward to a port-0 spec printed "Allocated port N for
   * remote forward to TARGET"; returns TARGET → N.
   */
  allocated(count: number, timeoutMs = 20_000): Promise<Map<string, number>> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const ports = new Map<string, number>();
        for (const m of this.stderr.matchAll(/Allocated port (\d+) for remote forward to (\S+)/g)) {
          ports.set(m[2] ?? "", Number(m[1]));
        }
        if (ports.size >= count) {
          done();
          resolve(ports);
        } else if (!this.alive) {
          done();
          reject(new Error(`${this.tool} exited before allocating its ports: ${this.stderr}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.tool} allocated no port in ${timeoutMs} ms: ${this.stderr}`));
      }, timeoutMs);
      const onExit = () => check();
      const done = () => {
        clearTimeout(timer);
        this.onStderr = undefined;
        this.proc.removeListener("exit", onExit);
      };
      this.onStderr = check;
      this.proc.once("exit", onExit);
      check();
    });
  }

  async stop(): Promise<void> {
    if (this.alive) process.kill(this.pid, "SIGTERM");
    const t = setTimeout(() => {
      if (this.alive) process.kill(this.pid, "SIGKILL");
    }, 5_000);
    await this.exited;
    clearTimeout(t);
  }
}

/**
 * ssh under a restart loop, as autossh -M 0 (with AUTOSSH_GATETIME=0) would
 * run it: a new ssh at once when one exits, then, while attempts keep failing
 * within a second, waits of 100 ms doubling up to 2 s.
 */
export class SshLoop {
  current: Tunnel | undefined;
  starts = 0;
  private stopped = false;
  private readonly done: Promise<void>;

  constructor(
    private readonly server: Server,
    private readonly opts: TunnelOptions,
  ) {
    this.done = this.loop();
  }

  private async loop(): Promise<void> {
    let fastFailures = 0;
    while (!this.stopped) {
      const t = new Tunnel("ssh", this.server, this.opts);
      this.current = t;
      this.starts++;
      const began = Date.now();
      await t.exited;
      if (this.stopped) return;
      if (Date.now() - began < 1_000) fastFailures++;
      else fastFailures = 0;
      if (fastFailures > 1)
        await new Promise((r) => setTimeout(r, Math.min(2_000, 100 * 2 ** (fastFailures - 2))));
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.current?.stop();
    await this.done;
  }
}

/** User + system CPU time of a process, in ms. */
export function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14, 15)
  return (ticks * 1000) / 100; // USER_HZ is 100 on Linux
}

/**
 * `revtun relay` as its own process on loopback `port`, with `authorizedKeys`;
 * `ready()` resolves once it answers with an SSH banner, or with why not
 * (exited, or no banner within 15 s). Used by the loopback and the WAN bench.
 */
export class RelayProcess {
  readonly proc: ChildProcess;
  private stderr = "";

  constructor(
    revtunBin: string,
    port: number,
    hostKey: string,
    authorizedKeys: string,
    extraArgs: string[] = [],
  ) {
    this.proc = spawn(
      process.execPath,
      [
        revtunBin,
        "relay",
        "--listen",
        `127.0.0.1:${port}`,
        "--host-key",
        hostKey,
        "--authorized-keys",
        authorizedKeys,
        ...extraArgs,
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    this.proc.stderr?.setEncoding("utf8").on("data", (d: string) => {
      this.stderr = (this.stderr + d).slice(-20_000);
    });
  }

  /** Undefined once listening; otherwise why it is not. */
  async ready(port: number, banner: (port: number) => Promise<boolean>): Promise<string | undefined> {
    const deadline = Date.now() + 15_000;
    while (!(await banner(port))) {
      if (this.proc.exitCode !== null) return `revtun relay exited ${this.proc.exitCode}: ${this.stderr}`;
      if (Date.now() > deadline) return `revtun relay did not listen: ${this.stderr}`;
      await new Promise((r) => setTimeout(r, 50));
    }
    return undefined;
  }

  /** SIGTERM, and resolves once it has exited. */
  async stop(): Promise<void> {
    const p = this.proc;
    if (p.exitCode !== null || p.signalCode !== null || !p.pid) return;
    const exited = new Promise((r) => p.once("exit", r));
    process.kill(p.pid, "SIGTERM");
    await exited;
  }
}
