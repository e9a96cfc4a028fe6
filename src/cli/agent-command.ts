/**
 * `revtun [ssh flags] -R spec... [user@]host`: one tunnel, with ssh's flags,
 * ssh_config and exit codes (0 after a signal, 255 for connection,
 * authentication and host key failures, 2 for usage errors).
 */
import { userInfo } from "node:os";
import { createInterface } from "node:readline/promises";
import { Tunnel } from "../agent/tunnel.js";
import { resolveJumpHosts } from "../config/jump-hosts.js";
import { applySshConfig } from "../config/ssh-config.js";
import { resolveTunnelOptions } from "../config/tunnel-options.js";
import { parseUserHostPort, sshHostName } from "../shared/address.js";
import { RevtunError } from "../shared/errors.js";
import { createLogger, type Logger, type LogLevel } from "../shared/log.js";
import type { MetricsServer } from "../shared/metrics-server.js";
import { staticHooks } from "../ssh2/hooks.js";
import type { CliArgs } from "./args.js";
import { startMetrics } from "./metrics-endpoint.js";
import { exitCodeFor, type Io, onSignals, readSecret } from "./process.js";
import { logTunnel } from "./tunnel-log.js";

export function logLevel(args: CliArgs): LogLevel {
  return args.quiet ? "error" : args.verbose > 0 ? "debug" : "info";
}

/** A debug line for each reach into ssh2 that the installed version does not support. */
export function logInactiveHooks(log: Logger): void {
  for (const h of staticHooks()) {
    if (!h.live)
      log.debug({ event: "ssh2-hook-inactive", hook: h.name }, `ssh2 hook ${h.name} inactive: no ${h.needs}`);
  }
}

function askHostKey(io: Io) {
  return async (info: { host: string; port: number; keyType: string; fingerprint: string }) => {
    io.stderr.write(
      `The authenticity of host '${sshHostName(info.host, info.port)}' can't be established.\n${info.keyType} key fingerprint is ${info.fingerprint}.\n`,
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

export async function agentCommand(args: CliArgs, io: Io): Promise<number> {
  if (!args.destination)
    throw new RevtunError("USAGE", "no destination given: revtun [options] -R spec [user@]host");
  const dest = parseUserHostPort(args.destination, "destination", { allowPort: false });
  const ssh = { ...args.ssh };
  if (args.forwards.length) ssh.remoteForward = [...args.forwards, ...(ssh.remoteForward ?? [])];
  if (dest.user && ssh.user === undefined) ssh.user = dest.user;
  if (dest.port && ssh.port === undefined) ssh.port = dest.port;
  const localUser = userInfo().username;
  const config = await applySshConfig(ssh, {
    host: dest.host,
    file: args.configFile,
    ...(ssh.user ? { user: ssh.user } : {}),
    localUser,
  });
  if (args.jump !== undefined) ssh.proxyJump = args.jump;
  const options = resolveTunnelOptions(ssh, {
    host: dest.host,
    authSock: io.env.SSH_AUTH_SOCK,
    passphrase: await readSecret(args.passphraseFile, io.env.REVTUN_PASSPHRASE),
    password: await readSecret(args.passwordFile, io.env.REVTUN_PASSWORD),
  });
  options.maxBackoffMs = args.maxBackoffSeconds * 1000;
  options.jumpHosts = await resolveJumpHosts(ssh.proxyJump, { localUser, config: { file: args.configFile } });
  if (io.interactive && !ssh.batchMode) options.confirmHostKey = askHostKey(io);

  const log = createLogger({ format: args.logFormat, level: logLevel(args), stream: io.stderr });
  logInactiveHooks(log);
  for (const name of config.ignored)
    log.debug({ event: "config-ignored", directive: name }, `ssh_config: ${name} ignored`);
  for (const note of config.notes) log.debug({ event: "config-note", note }, `ssh_config: ${note}`);
  const tunnel = new Tunnel(options);
  logTunnel(tunnel, log, io.stderr);
  let signalled = false;
  const offSignals = onSignals((immediate) => {
    signalled = true;
    log.info({ event: "shutdown" }, immediate ? "stopping now" : `stopping (grace ${args.graceSeconds} s)`);
    void tunnel.close(immediate ? 0 : args.graceSeconds * 1000);
  });
  // prom-client costs 40 ms of startup and CPU on every connection: only with --metrics.
  let server: MetricsServer | undefined;
  try {
    if (args.metrics !== undefined) {
      const { TunnelMetrics } = await import("../agent/metrics.js");
      const metrics = new TunnelMetrics();
      metrics.add(args.destination, tunnel);
      server = await startMetrics(args.metrics, metrics.registry, () => metrics.health(), log);
    }
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
