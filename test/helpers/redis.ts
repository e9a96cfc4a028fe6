/**
 * A real redis-server for tests: loopback, ephemeral port, no persistence
 * (`--save "" --appendonly no`), its own temp dir, stopped by pid. `stop()`
 * then `start()` on the same port is how a test makes Redis go away and come
 * back (empty, as a restarted cache-only Redis does). `{ password }` starts it
 * with `requirepass`, as an operator's Redis usually is (the password is on
 * redis-server's command line: a test's throwaway secret, on loopback).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./sshd.js";

export const REDIS_SERVER = "/usr/bin/redis-server";

export class RedisServer {
  readonly dir: string;
  port = 0;
  log = "";
  private proc: ChildProcess | undefined;

  private constructor(readonly password?: string) {
    this.dir = mkdtempSync(join(tmpdir(), "revtun-redis-"));
  }

  static async start(opts: { password?: string } = {}): Promise<RedisServer> {
    const r = new RedisServer(opts.password);
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
        "--port",
        String(this.port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        this.dir,
        ...(this.password !== undefined ? ["--requirepass", this.password] : []),
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
      if (await ping(this.port)) return;
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
