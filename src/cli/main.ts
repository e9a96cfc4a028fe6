/**
 * The CLI: parses, calls the library, turns events into lines and outcomes
 * into exit codes (0 after a signal, 255 for connection, authentication and
 * host key failures as ssh, 2 for usage errors).
 */
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { userInfo } from "node:os";
import { createInterface } from "node:readline/promises";
import { RevtunError } from "../errors.js";
import { createLogger, type Logger, type LogLevel } from "../log.js";
import type { TunnelMetrics } from "../metrics.js";
import { type MetricsServer, parseListen, serveMetrics } from "../metrics-server.js";
import { resolveTunnelOptions } from "../resolve.js";
import { Tunnel } from "../supervisor.js";
import { type CliArgs, parseArgs, parseDestination } from "./args.js";
import { HELP } from "./help.js";
import { reportTunnel } from "./report.js";

export interface Io {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  env: NodeJS.ProcessEnv;
  /** Whether a person can answer prompts (stdin is a terminal). */
  interactive: boolean;
}

const defaultIo = (): Io => ({
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  interactive: Boolean(process.stdin.isTTY),
});

export function exitCodeFor(err: unknown): number {
  return err instanceof RevtunError && (err.code === "USAGE" || err.code === "CONFIG") ? 2 : 255;
}

export function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  return pkg.version;
}

/** Waits for SIGINT or SIGTERM; a second signal asks for an immediate stop. */
export function onSignals(handler: (immediate: boolean) => void): () => void {
  let count = 0;
  const h = () => handler(count++ > 0);
  process.on("SIGINT", h);
  process.on("SIGTERM", h);
  return () => {
    process.off("SIGINT", h);
    process.off("SIGTERM", h);
  };
}

/** Reads a secret from a file (first line) or an environment variable; never from argv. */
export async function readSecret(
  file: string | undefined,
  envValue: string | undefined,
): Promise<string | undefined> {
  if (file !== undefined) {
    try {
      return (await readFile(file, "utf8")).split(/\r?\n/)[0];
    } catch (err) {
      throw new RevtunError("USAGE", `cannot read secret file ${file}: ${(err as Error).message}`);
    }
  }
  return envValue;
}

function askHostKey(io: Io) {
  return async (info: { host: string; port: number; keyType: string; fingerprint: string }) => {
    const name = info.port === 22 ? info.host : `[${info.host}]:${info.port}`;
    io.stderr.write(
      `The authenticity of host '${name}' can't be established.\n${info.keyType} key fingerprint is ${info.fingerprint}.\n`,
    );
    const rl = createInterface({ input: process.stdin, output: io.stderr as NodeJS.WritableStream });
    try {
      for (;;) {
        const a = (await rl.question("Are you sure you want to continue connecting (yes/no)? "))
          .trim()
          .toLowerCase();
        if (a === "yes") return true;
        if (a === "no") return false;
        io.stderr.write("Please type 'yes' or 'no'.\n");
      }
    } finally {
      rl.close();
    }
  };
}

export async function main(argv: string[], io: Io = defaultIo()): Promise<number> {
  const sub = argv[0];
  try {
    if (sub === "demo") {
      const { demoCommand } = await import("./demo.js");
      return await demoCommand(argv.slice(1), io);
    }
    if (sub === "relay") {
      const { relayCommand } = await import("./relay-command.js");
      return await relayCommand(argv.slice(1), io);
    }
    const args = parseArgs(argv);
    if (args.help) {
      io.stdout.write(HELP);
      return 0;
    }
    if (args.version) {
      io.stdout.write(`revtun ${version()}\n`);
      return 0;
    }
    if (args.tunnelsFile !== undefined) {
      const { runTunnelsFile } = await import("./tunnels-file.js");
      return await runTunnelsFile(args, io);
    }
    return await runAgent(args, io);
  } catch (err) {
    io.stderr.write(`revtun: ${err instanceof Error ? err.message : String(err)}\n`);
    return exitCodeFor(err);
  }
}

/** Serves /healthz and /metrics when --metrics was given, and logs where. */
export async function startMetrics(
  listen: string | undefined,
  metrics: TunnelMetrics,
  log: Logger,
): Promise<MetricsServer | undefined> {
  if (listen === undefined) return undefined;
  const server = await serveMetrics({
    ...parseListen(listen, "--metrics"),
    registry: metrics.registry,
    health: () => metrics.health(),
  });
  log.info(
    { event: "metrics-listening", port: server.address.port },
    `metrics on http://${server.address.host}:${server.address.port}/metrics`,
  );
  return server;
}

export function logLevel(args: CliArgs): LogLevel {
  return args.quiet ? "error" : args.verbose > 0 ? "debug" : "info";
}

async function runAgent(args: CliArgs, io: Io): Promise<number> {
  if (!args.destination)
    throw new RevtunError("USAGE", "no destination given: revtun [options] -R spec [user@]host");
  const dest = parseDestination(args.destination);
  const ssh = { ...args.ssh };
  if (args.forwards.length) ssh.remoteForward = [...args.forwards, ...(ssh.remoteForward ?? [])];
  if (dest.user && ssh.user === undefined) ssh.user = dest.user;
  if (dest.port && ssh.port === undefined) ssh.port = dest.port;
  const { applySshConfig } = await import("../ssh-config.js");
  const config = await applySshConfig(ssh, {
    host: dest.host,
    file: args.configFile,
    ...(ssh.user ? { user: ssh.user } : {}),
    localUser: userInfo().username,
  });
  if (args.jump !== undefined) ssh.proxyJump = args.jump;
  const options = resolveTunnelOptions(ssh, {
    host: dest.host,
    authSock: io.env.SSH_AUTH_SOCK,
    passphrase: await readSecret(args.passphraseFile, io.env.REVTUN_PASSPHRASE),
    password: await readSecret(args.passwordFile, io.env.REVTUN_PASSWORD),
  });
  options.maxBackoffMs = args.maxBackoffSeconds * 1000;
  if (io.interactive && !ssh.batchMode) options.confirmHostKey = askHostKey(io);

  const log = createLogger({ format: args.logFormat, level: logLevel(args), stream: io.stderr });
  for (const name of config.ignored)
    log.debug({ event: "config-ignored", directive: name }, `ssh_config: ${name} ignored`);
  const { withJumpHosts } = await import("../jump.js");
  for (const note of config.notes) log.debug({ event: "config-note", note }, `ssh_config: ${note}`);
  const tunnel = new Tunnel(
    await withJumpHosts(options, ssh.proxyJump, {
      authSock: io.env.SSH_AUTH_SOCK,
      localUser: userInfo().username,
      config: { file: args.configFile },
    }),
  );
  reportTunnel(tunnel, log, io.stderr);
  // prom-client costs 40 ms of startup and CPU on every connection: only with --metrics.
  let server: MetricsServer | undefined;
  if (args.metrics !== undefined) {
    const { TunnelMetrics } = await import("../metrics.js");
    const metrics = new TunnelMetrics();
    metrics.add(args.destination, tunnel);
    server = await startMetrics(args.metrics, metrics, log);
  }
  let signalled = false;
  const offSignals = onSignals((immediate) => {
    signalled = true;
    log.info({ event: "shutdown" }, immediate ? "stopping now" : `stopping (grace ${args.graceSeconds} s)`);
    void tunnel.close(immediate ? 0 : args.graceSeconds * 1000);
  });
  try {
    await tunnel.start();
    const err = await tunnel.done;
    if (err && !signalled) {
      io.stderr.write(`revtun: ${err.message}\n`);
      return exitCodeFor(err);
    }
    return 0;
  } finally {
    offSignals();
    await server?.close();
  }
}
