/**
 * `revtun --config tunnels.yaml`: every tunnel of the file in one process,
 * one /healthz and /metrics for all, SIGHUP to reload.
 */
import { readFile } from "node:fs/promises";
import { userInfo } from "node:os";
import { Tunnel } from "../agent/tunnel.js";
import { TunnelSet } from "../agent/tunnel-set.js";
import { resolveJumpHosts } from "../config/jump-hosts.js";
import { resolveTunnelOptions } from "../config/tunnel-options.js";
import { parseTunnelsConfig, type TunnelDefinition } from "../config/tunnels-file.js";
import { RevtunError } from "../shared/errors.js";
import { createLogger } from "../shared/log.js";
import type { MetricsServer } from "../shared/metrics-server.js";
import { logLevel } from "./agent-command.js";
import type { CliArgs } from "./args.js";
import { startMetrics } from "./metrics-endpoint.js";
import { type Io, onSignals, readSecret } from "./process.js";
import { logTunnel } from "./tunnel-log.js";

async function load(file: string) {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new RevtunError("CONFIG", `cannot read ${file}: ${(err as Error).message}`);
  }
  return parseTunnelsConfig(text, file);
}

export async function tunnelsFileCommand(args: CliArgs, io: Io): Promise<number> {
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
  const { TunnelMetrics } = await import("../agent/metrics.js");
  const metrics = new TunnelMetrics();
  const set = new TunnelSet<TunnelDefinition>(async (def) => {
    const ssh = { ...args.ssh, ...def.ssh };
    const options = resolveTunnelOptions(ssh, {
      host: def.name,
      localUser: userInfo().username,
      authSock: io.env.SSH_AUTH_SOCK,
      passphrase,
      password,
    });
    options.maxBackoffMs = args.maxBackoffSeconds * 1000;
    options.jumpHosts = await resolveJumpHosts(ssh.proxyJump);
    return new Tunnel(options);
  });
  set.on("added", ({ name, tunnel }) => {
    logTunnel(tunnel, log.child({ tunnel: name }), io.stderr);
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
    server = await startMetrics(args.metrics, metrics.registry, () => metrics.health(), log);
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
