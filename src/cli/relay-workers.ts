/**
 * `revtun relay --workers N`: the primary forks N workers (each runs
 * `revtun relay` again with the same flags, REVTUN_WORKER_INDEX set) and
 * keeps them running; what a worker does differently from a single relay.
 *
 *  - Each worker is fleet member `<relay-id>-w<index>` with a peer listener
 *    of its own on an ephemeral port of the --advertise host (the shared
 *    --listen port hands a peer's connection to any worker, see the
 *    `peerListen` relay option).
 *  - --admin and --metrics: worker i serves port + i (a shared port would
 *    answer each request from a different worker's sessions).
 *  - The primary stops, and exits with its code, when a worker exits by
 *    itself before it ever was ready (a configuration a restart cannot fix:
 *    unreadable authorized_keys, the port taken); a worker that dies after
 *    it was ready is restarted (workers.ts).
 *  - SIGHUP to the primary is passed on to every worker; SIGTERM/SIGINT stop
 *    every worker (SIGKILL after 5 s) and exit 0.
 */
import cluster from "node:cluster";
import { MAX_WORKERS, WORKER_READY, WorkerSupervisor } from "../relay/fleet/workers.js";
import { RevtunError } from "../shared/errors.js";
import type { Logger } from "../shared/log.js";
import { onSignals } from "./process.js";

/** The worker index the primary set, or undefined outside a --workers worker. */
export function workerIndex(env: Record<string, string | undefined>, workers: number): number | undefined {
  const text = env.REVTUN_WORKER_INDEX;
  if (workers <= 1 || text === undefined) return undefined;
  const i = Number(text);
  if (!/^\d{1,2}$/.test(text) || i >= MAX_WORKERS)
    throw new RevtunError(
      "USAGE",
      `bad REVTUN_WORKER_INDEX ${JSON.stringify(text)}: set by the --workers primary`,
    );
  return i;
}

/** In a worker: tells the primary this worker's relay serves. */
export function reportReady(): void {
  process.send?.(WORKER_READY);
}

/**
 * In a worker, once its relay command has returned: closes the IPC channel
 * to the primary, which otherwise keeps the process alive after its exit
 * code is set (a worker that failed to start, or stopped on SIGTERM, would
 * linger until the primary's SIGKILL 5 s later).
 */
export function leaveCluster(): void {
  // cluster's own disconnect: process.disconnect() would make the worker exit 0 at once (cluster/child.js).
  if (cluster.worker?.isConnected()) cluster.worker.disconnect();
}

/** Worker `index`'s own port for --admin/--metrics: port + index. */
export function workerPort<T extends { port: number }>(at: T, index: number | undefined): T {
  return index === undefined ? at : { ...at, port: at.port + index };
}

/** Checks that --admin/--metrics leave room for `workers` consecutive ports, apart from each other. */
export function checkWorkerPorts(
  workers: number,
  listeners: { flag: string; port: number }[],
  listenPort: number,
): void {
  if (workers <= 1) return;
  for (const l of listeners) {
    if (l.port === 0)
      throw new RevtunError(
        "USAGE",
        `${l.flag} port 0 with --workers ${workers}: give a port (worker i serves port + i)`,
      );
    if (l.port + workers - 1 > 65535)
      throw new RevtunError(
        "USAGE",
        `${l.flag} port ${l.port} with --workers ${workers}: worker ${workers - 1} would need port ${l.port + workers - 1}`,
      );
    if (listenPort >= l.port && listenPort < l.port + workers)
      throw new RevtunError(
        "USAGE",
        `${l.flag} ports ${l.port}-${l.port + workers - 1} (one a worker) include the --listen port ${listenPort}`,
      );
  }
  const [a, b] = listeners;
  if (a && b && Math.abs(a.port - b.port) < workers)
    throw new RevtunError(
      "USAGE",
      `${a.flag} ports ${a.port}-${a.port + workers - 1} and ${b.flag} ports ${b.port}-${b.port + workers - 1} overlap (worker i serves port + i)`,
    );
}

/** Runs the primary until a signal (0) or a worker that could not start (its exit code). */
export async function runWorkers(count: number, argv: string[], log: Logger): Promise<number> {
  const entry = process.argv[1];
  if (!entry) throw new RevtunError("USAGE", "--workers: cannot tell which script to fork");
  let wake: () => void = () => {};
  const stopped = new Promise<void>((resolve) => {
    wake = resolve;
  });
  let exitCode = 0;
  let stopping = false;
  // Listeners before start(): the first 'started' events are emitted while forking.
  const sup = new WorkerSupervisor({ count, exec: entry, args: ["relay", ...argv] });
  const offSignals = onSignals(
    (_immediate, signal) => {
      if (stopping) return;
      stopping = true;
      log.info({ event: "shutdown", signal }, `${signal}: stopping ${count} workers`);
      wake();
    },
    () => {
      log.info({ event: "reload" }, `SIGHUP: passed on to ${count} workers`);
      sup.signal("SIGHUP");
    },
  );
  const ready = new Set<number>();
  let allReady = false;
  sup.on("started", (x) =>
    log.info({ event: "worker-started", ...x }, `worker ${x.index} started, pid ${x.pid}`),
  );
  sup.on("ready", (x) => {
    ready.add(x.index);
    log.debug({ event: "worker-ready", ...x }, `worker ${x.index} (pid ${x.pid}) ready`);
    if (!allReady && ready.size === count) {
      allReady = true;
      log.info({ event: "workers-ready", count }, `all ${count} workers ready`);
    }
  });
  sup.on("exited", (x) => {
    const how = x.signal ?? `with code ${x.code}`;
    if (!stopping && !ready.has(x.index) && x.code !== null && x.code !== 0) {
      // It gave up by itself before serving once: its own error is on stderr above; restarting cannot fix it.
      stopping = true;
      exitCode = x.code === 2 ? 2 : 255;
      log.error(
        { event: "worker-failed", ...x },
        `worker ${x.index} (pid ${x.pid}) exited ${how} before it was ready: stopping`,
      );
      wake();
      return;
    }
    log.warn(
      { event: "worker-exited", ...x },
      `worker ${x.index} (pid ${x.pid}) exited ${how}${x.restartInMs !== undefined && !stopping ? `; restarting in ${x.restartInMs} ms` : ""}`,
    );
  });
  sup.start();
  try {
    await stopped;
    await sup.stop();
    return exitCode;
  } finally {
    offSignals();
  }
}
