/** Runs the real `bin/revtun` as a child process and watches its output. */
import { type ChildProcess, spawn } from "node:child_process";
import { PassThrough } from "node:stream";
import { fileURLToPath } from "node:url";

export const BIN = fileURLToPath(new URL("../../bin/revtun", import.meta.url));

export class Revtun {
  stdout = "";
  stderr = "";
  readonly proc: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(args: string[], env: NodeJS.ProcessEnv = {}) {
    this.proc = spawn(process.execPath, [BIN, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, SSH_AUTH_SOCK: "", HOME: process.env.HOME, ...env },
    });
    this.proc.stdout?.setEncoding("utf8").on("data", (d: string) => {
      this.stdout += d;
    });
    this.proc.stderr?.setEncoding("utf8").on("data", (d: string) => {
      this.stderr += d;
    });
    this.exited = new Promise((resolve) =>
      this.proc.once("exit", (code, signal) => resolve({ code, signal })),
    );
  }

  /** Resolves with the first match of `re` in stderr, or rejects on timeout/exit. */
  async waitFor(re: RegExp, timeoutMs = 15_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = this.stderr.match(re);
      if (m) return m;
      if (this.proc.exitCode !== null)
        throw new Error(`revtun exited ${this.proc.exitCode} before ${re}: ${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${re} in: ${this.stderr}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  async stop(signal: NodeJS.Signals = "SIGTERM", timeoutMs = 15_000): Promise<number | null> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal);
    const t = setTimeout(() => this.proc.kill("SIGKILL"), timeoutMs);
    const { code } = await this.exited;
    clearTimeout(t);
    return code;
  }
}

/** Runs revtun to completion (bounded) and returns its exit code and output. */
export async function runRevtun(
  args: string[],
  timeoutMs = 20_000,
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number | null; stderr: string; stdout: string }> {
  const r = new Revtun(args, env);
  const t = setTimeout(() => r.proc.kill("SIGKILL"), timeoutMs);
  const { code } = await r.exited;
  clearTimeout(t);
  return { code, stderr: r.stderr, stdout: r.stdout };
}

/** A command's entry point called in this process, as main() calls it. */
export type InProcessCommand = (
  argv: string[],
  io: { stdout: PassThrough; stderr: PassThrough; env: NodeJS.ProcessEnv },
) => Promise<number>;

/** Runs `command` in this process with captured stdout and stderr. */
export async function runInProcess(
  command: InProcessCommand,
  argv: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = new PassThrough();
  const err = new PassThrough();
  let stdout = "";
  let stderr = "";
  out.on("data", (d: Buffer) => {
    stdout += d.toString();
  });
  err.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const code = await command(argv, { stdout: out, stderr: err, env });
  return { code, stdout, stderr };
}

/**
 * ssh-style arguments for an agent against a test sshd: no ssh_config (the
 * machine's files must not change what is tested), its known_hosts, one
 * forward to `targetPort` on a port the server picks; `extra` before -R.
 */
export function agentArgs(
  server: { port: number; knownHosts: string },
  user: string,
  targetPort: number,
  ...extra: string[]
): string[] {
  return [
    "-N",
    "-F",
    "none",
    "-p",
    String(server.port),
    "-o",
    `UserKnownHostsFile=${server.knownHosts}`,
    ...extra,
    "-R",
    `127.0.0.1:0:127.0.0.1:${targetPort}`,
    `${user}@127.0.0.1`,
  ];
}
