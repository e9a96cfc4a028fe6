/**
 * A real redis-server for tests: loopback, ephemeral port, no persistence
 * (`--save "" --appendonly no`), its own temp dir, stopped by pid. `stop()`
 * then `start()` on the same port is how a test makes Redis go away and come
 * back (empty, as a restarted cache-only Redis does). `{ password }` starts it
 * with `requirepass`, as an operator's Redis usually is (the password is on
 * redis-server's command line: a test's throwaway secret, on loopback).
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./sshd.js";

export const REDIS_SERVER = "/usr/bin/redis-server";
export const REDIS_SENTINEL = "/usr/bin/redis-sentinel";

export class RedisServer {
  readonly dir: string;
  port = 0;
  log = "";
  private proc: ChildProcess | undefined;

  /** `tls`: this port speaks TLS only (redis-server --port 0 --tls-port). `args`: more redis-server flags. */
  private constructor(
    readonly password?: string,
    readonly tls?: TlsFiles,
    readonly args: string[] = [],
  ) {
    this.dir = mkdtempSync(join(tmpdir(), "revtun-redis-"));
  }

  static async start(
    opts: { password?: string; tls?: TlsFiles; args?: string[] } = {},
  ): Promise<RedisServer> {
    const r = new RedisServer(opts.password, opts.tls, opts.args);
    r.port = await freePort();
    await r.start();
    return r;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  async start(): Promise<void> {
    if (this.proc) return;
    const proc = spawn(
      REDIS_SERVER,
      [
        ...(this.tls
          ? [
              "--port",
              "0",
              "--tls-port",
              String(this.port),
              "--tls-cert-file",
              this.tls.cert,
              "--tls-key-file",
              this.tls.key,
              "--tls-ca-cert-file",
              this.tls.ca,
              "--tls-auth-clients",
              "no",
            ]
          : ["--port", String(this.port)]),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        this.dir,
        ...(this.password !== undefined ? ["--requirepass", this.password] : []),
        ...this.args,
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    this.proc = proc;
    const keep = (d: string) => {
      this.log += d;
      if (this.log.length > 200_000) this.log = this.log.slice(-100_000);
    };
    proc.stdout?.setEncoding("utf8").on("data", keep);
    proc.stderr?.setEncoding("utf8").on("data", keep);
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`redis-server exited ${proc.exitCode}: ${this.log}`);
      if (this.tls ? this.log.includes("Ready to accept connections") : await ping(this.port)) return;
      if (Date.now() > deadline) throw new Error(`redis-server did not start: ${this.log}`);
      await new Promise((r) => setTimeout(r, 30));
    }
  }

  /** Kills redis-server by pid (SIGKILL by default: a crash, not a shutdown) and waits for it to exit. */
  async stop(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once("exit", r));
    proc.kill(signal);
    await exited;
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  async close(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** True once 127.0.0.1:port answers PING: +PONG, or -NOAUTH from a Redis with requirepass. */
export function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: "127.0.0.1", port });
    const t = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, 1000);
    s.once("connect", () => s.write("PING\r\n"));
    s.once("data", (d) => {
      clearTimeout(t);
      s.destroy();
      const reply = d.toString();
      resolve(reply.startsWith("+PONG") || reply.startsWith("-NOAUTH"));
    });
    s.once("error", () => {
      clearTimeout(t);
      resolve(false);
    });
  });
}

export interface TlsFiles {
  cert: string;
  key: string;
  ca: string;
}

/**
 * A throwaway CA and a server certificate for 127.0.0.1 (IP SAN), made with
 * openssl in `dir`: `ca.crt`, `server.crt`, `server.key`. Call twice with
 * different names for a second, unrelated CA.
 */
export function makeTlsFiles(dir: string, name = "test"): TlsFiles {
  const f = (x: string) => join(dir, `${name}-${x}`);
  const run = (args: string[]) => execFileSync("openssl", args, { stdio: "pipe" });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  run([
    "req",
    "-x509",
    ...ec,
    "-keyout",
    f("ca.key"),
    "-out",
    f("ca.crt"),
    "-days",
    "1",
    "-subj",
    `/CN=${name} CA`,
  ]);
  run(["req", ...ec, "-keyout", f("server.key"), "-out", f("server.csr"), "-subj", "/CN=127.0.0.1"]);
  writeFileSync(f("ext"), "subjectAltName=IP:127.0.0.1\n");
  run([
    "x509",
    "-req",
    "-in",
    f("server.csr"),
    "-CA",
    f("ca.crt"),
    "-CAkey",
    f("ca.key"),
    "-CAcreateserial",
    "-out",
    f("server.crt"),
    "-days",
    "1",
    "-extfile",
    f("ext"),
  ]);
  return { cert: f("server.crt"), key: f("server.key"), ca: f("ca.crt") };
}

/**
 * Debian's redis-sentinel watching one primary under `name`, quorum 1,
 * declaring it down after 1 s (the default 30 s would make a failover test
 * wait half a minute). Its config file is its own (Sentinel rewrites it).
 */
export class RedisSentinel {
  readonly dir = mkdtempSync(join(tmpdir(), "revtun-sentinel-"));
  port = 0;
  log = "";
  private proc: ChildProcess | undefined;

  static async start(primaryPort: number, name = "fleet-primary"): Promise<RedisSentinel> {
    const s = new RedisSentinel();
    s.port = await freePort();
    const conf = join(s.dir, "sentinel.conf");
    writeFileSync(
      conf,
      [
        `port ${s.port}`,
        "bind 127.0.0.1",
        `dir ${s.dir}`,
        `sentinel monitor ${name} 127.0.0.1 ${primaryPort} 1`,
        `sentinel down-after-milliseconds ${name} 1000`,
        `sentinel failover-timeout ${name} 5000`,
        `sentinel parallel-syncs ${name} 1`,
        "",
      ].join("\n"),
    );
    const proc = spawn(REDIS_SENTINEL, [conf], { stdio: ["ignore", "pipe", "pipe"] });
    s.proc = proc;
    const keep = (d: string) => {
      s.log += d;
      if (s.log.length > 200_000) s.log = s.log.slice(-100_000);
    };
    proc.stdout?.setEncoding("utf8").on("data", keep);
    proc.stderr?.setEncoding("utf8").on("data", keep);
    const deadline = Date.now() + 10_000;
    while (!(await ping(s.port))) {
      if (proc.exitCode !== null) throw new Error(`redis-sentinel exited ${proc.exitCode}: ${s.log}`);
      if (Date.now() > deadline) throw new Error(`redis-sentinel did not start: ${s.log}`);
      await new Promise((r) => setTimeout(r, 30));
    }
    return s;
  }

  async close(): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGKILL");
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
