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
  // Signals before anything starts (issue 12 item 11): a stop while the file
  // loads or the tunnels start exits 0, and the tunnels that apply() starts
  // after the signal are closed too (a close during apply() would miss them).
  let stopRequested = false;
  let immediate = false;
  let announce = (_immediate: boolean) => {};
  let wake = () => {};
  const stopped = new Promise<void>((resolve) => {
    wake = resolve;
  });
  onSignals((now) => {
    stopRequested = true;
    immediate ||= now;
    announce(now);
    wake();
  });
  let set: TunnelSet<TunnelDefinition> | undefined;
  let server: MetricsServer | undefined;
  let reload: (() => void) | undefined;
  try {
    const config = await load(file);
    const log = createLogger({ format: args.logFormat, level: logLevel(args), stream: io.stderr });
    announce = (now) =>
      log.info({ event: "shutdown" }, now ? "stopping now" : `stopping (grace ${args.graceSeconds} s)`);
    if (stopRequested) announce(immediate);
    const passphrase = await readSecret(args.passphraseFile, io.env.REVTUN_PASSPHRASE);
    const password = await readSecret(args.passwordFile, io.env.REVTUN_PASSWORD);
    const { TunnelMetrics } = await import("../agent/metrics.js");
    const metrics = new TunnelMetrics();
    const tunnels = new TunnelSet<TunnelDefinition>(async (def) => {
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
    set = tunnels;
    tunnels.on("added", ({ name, tunnel }) => {
      logTunnel(tunnel, log.child({ tunnel: name }), io.stderr);
      metrics.add(name, tunnel);
    });
    tunnels.on("removed", ({ name }) => metrics.remove(name));
    tunnels.on("stopped", ({ name, error }) => {
      if (error)
        log.error({ event: "tunnel-stopped", tunnel: name }, `tunnel ${name} stopped: ${error.message}`);
    });

    let reloading = Promise.resolve();
    reload = () => {
      reloading = reloading.then(async () => {
        // A reload after the stop would start tunnels nobody closes.
        if (stopRequested) return;
        log.info({ event: "reload" }, `reloading ${file}`);
        try {
          const r = await tunnels.apply(await load(file), args.graceSeconds * 1000);
          log.info({ event: "reloaded", ...r }, `reloaded ${file}`);
        } catch (err) {
          // A broken file must not take down tunnels that work.
          for (const line of (err as Error).message.split("\n")) {
            log.error({ event: "reload-refused" }, `reload refused, tunnels unchanged: ${line}`);
          }
        }
      });
    };
    process.on("SIGHUP", reload);
    if (!stopRequested) await tunnels.apply(config, args.graceSeconds * 1000);
    if (!stopRequested)
      server = await startMetrics(args.metrics, metrics.registry, () => metrics.health(), log);
    await stopped;
    await reloading;
    await tunnels.close(immediate ? 0 : args.graceSeconds * 1000);
    return 0;
  } catch (err) {
    await set?.close(0);
    throw err;
  } finally {
    if (reload) process.off("SIGHUP", reload);
    await server?.close();
    // The signal handlers stay: a second Ctrl-C landing after the cleanup,
    // while the process exits, would otherwise get the default action (exit
    // by signal, measured with two SIGTERMs 20 ms apart). They keep nothing alive.
  }
}
