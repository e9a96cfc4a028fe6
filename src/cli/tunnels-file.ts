/**
 * `revtun --config tunnels.yaml`: every tunnel of the file in one process,
 * one /healthz and /metrics for all, SIGHUP to reload.
 */
import { readFile } from "node:fs/promises";
import { userInfo } from "node:os";
import { RevtunError } from "../errors.js";
import { withJumpHosts } from "../jump.js";
import { createLogger } from "../log.js";
import { TunnelMetrics } from "../metrics.js";
import type { MetricsServer } from "../metrics-server.js";
import { resolveTunnelOptions } from "../resolve.js";
import { Tunnel } from "../supervisor.js";
import { TunnelSet } from "../tunnel-set.js";
import { parseTunnelsConfig } from "../tunnels-config.js";
import type { CliArgs } from "./args.js";
import { type Io, logLevel, onSignals, readSecret, startMetrics } from "./main.js";
import { reportTunnel } from "./report.js";

async function load(file: string) {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new RevtunError("CONFIG", `cannot read ${file}: ${(err as Error).message}`);
  }
  return parseTunnelsConfig(text, file);
}

export async function runTunnelsFile(args: CliArgs, io: Io): Promise<number> {
  const file = args.tunnelsFile as string;
  if (args.destination !== undefined || args.forwards.length) {
    throw new RevtunError(
      "USAGE",
      `--config ${file} describes every tunnel: give no destination or -R with it`,
    );
  }
  const config = await load(file);
  const log = createLogger({ format: args.logFormat, level: logLevel(args), stream: io.stderr });
  const passphrase = await readSecret(args.passphraseFile, io.env.REVTUN_PASSPHRASE);
  const password = await readSecret(args.passwordFile, io.env.REVTUN_PASSWORD);
  const metrics = new TunnelMetrics();
  const set = new TunnelSet(async (def) => {
    const ssh = { ...args.ssh, ...def.ssh };
    const options = resolveTunnelOptions(ssh, {
      host: def.name,
      localUser: userInfo().username,
      authSock: io.env.SSH_AUTH_SOCK,
      passphrase,
      password,
    });
    options.maxBackoffMs = args.maxBackoffSeconds * 1000;
    return new Tunnel(await withJumpHosts(options, ssh.proxyJump, { authSock: io.env.SSH_AUTH_SOCK }));
  });
  set.on("added", ({ name, tunnel }) => {
    reportTunnel(tunnel, log.child({ tunnel: name }), io.stderr);
    metrics.add(name, tunnel);
  });
  set.on("removed", ({ name }) => metrics.remove(name));
  set.on("stopped", ({ name, error }) => {
    if (error)
      log.error({ event: "tunnel-stopped", tunnel: name }, `tunnel ${name} stopped: ${error.message}`);
  });

  let server: MetricsServer | undefined;
  let reloading = Promise.resolve();
  const reload = () => {
    reloading = reloading.then(async () => {
      log.info({ event: "reload" }, `reloading ${file}`);
      try {
        const r = await set.apply(await load(file), args.graceSeconds * 1000);
        log.info({ event: "reloaded", ...r }, `reloaded ${file}`);
      } catch (err) {
        // A broken file must not take down tunnels that work.
        for (const line of (err as Error).message.split("\n")) {
          log.error({ event: "reload-refused" }, `reload refused, tunnels unchanged: ${line}`);
        }
      }
    });
  };
  let stopping: Promise<void> | undefined;
  const stopped = new Promise<void>((resolve) => {
    const offSignals = onSignals((immediate) => {
      log.info({ event: "shutdown" }, immediate ? "stopping now" : `stopping (grace ${args.graceSeconds} s)`);
      stopping = set.close(immediate ? 0 : args.graceSeconds * 1000).then(() => {
        offSignals();
        resolve();
      });
    });
  });
  process.on("SIGHUP", reload);
  try {
    await set.apply(config, args.graceSeconds * 1000);
    server = await startMetrics(args.metrics, metrics, log);
    await stopped;
    await stopping;
    return 0;
  } catch (err) {
    await set.close(0);
    throw err;
  } finally {
    process.off("SIGHUP", reload);
    await server?.close();
  }
}
