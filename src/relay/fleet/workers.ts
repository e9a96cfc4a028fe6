/**
 * `revtun relay --workers N`: N relay processes on one machine sharing the
 * SSH port, each a relay of the same fleet with its own relayId (the CLI
 * derives it from the worker index this passes in REVTUN_WORKER_INDEX, e.g.
 * `<host>-w<index>`), so one machine uses more than one core for
 * handshakes and ciphers. node:cluster shares the listening socket: the
 * primary accepts and hands each connection to a worker in turn (SCHED_RR,
 * Node's default on Linux), then the bytes flow worker <-> socket without
 * the primary. A device on worker 1 and an operator on worker 2 meet
 * through the fleet registry and a peer hop, like two machines; each
 * worker's peer address is the shared port, so the hop may land on the
 * same worker again, which then holds the name locally.
 *
 * The supervisor restarts a dead worker in its slot with backoff: a worker
 * that dies within resetAfterMs of starting waits twice as long as last
 * time (200 ms doubling to 10 s), so a worker that cannot start (bad
 * config, port taken) costs a few forks a minute, not a fork loop.
 */
import cluster, { type Worker } from "node:cluster";
import { EventEmitter } from "node:events";

export interface WorkersOptions {
  count: number;
  /** The script each worker runs (the CLI's own entry point). */
  exec: string;
  args?: string[];
  /** Node flags for the workers; default none (not the primary's, which may be a test runner's). */
  execArgv?: string[];
  /** Extra environment per worker, on top of the primary's and REVTUN_WORKER_INDEX/COUNT. */
  env?: (index: number) => Record<string, string>;
  backoff?: { initialMs?: number; maxMs?: number; resetAfterMs?: number };
}

/** What a worker sends the primary (process.send) once its relay serves: the supervisor's 'ready'. */
export const WORKER_READY = Object.freeze({ revtun: "relay-ready" });

export interface WorkerEvents {
  started: [{ index: number; pid: number }];
  /** A worker sent WORKER_READY: its relay listens and has joined the fleet. */
  ready: [{ index: number; pid: number }];
  /** A worker's server is listening (cluster's 'listening'). */
  listening: [{ index: number; pid: number; port: number }];
  /** A worker exited; restartInMs is undefined when stopping. */
  exited: [{ index: number; pid: number; code: number | null; signal: string | null; restartInMs?: number }];
}

interface Slot {
  worker: Worker | undefined;
  /** The worker sent WORKER_READY (its signal handlers are installed). */
  ready: boolean;
  /** Signals held for a worker not ready yet, sent when it is. */
  pending: NodeJS.Signals[];
  startedAt: number;
  delayMs: number;
  restart: NodeJS.Timeout | undefined;
}

export const MAX_WORKERS = 64;

export class WorkerSupervisor extends EventEmitter<WorkerEvents> {
  private readonly slots: Slot[] = [];
  private stopping = false;
  private readonly initialMs: number;
  private readonly maxMs: number;
  private readonly resetAfterMs: number;

  constructor(private readonly opts: WorkersOptions) {
    super();
    if (!Number.isInteger(opts.count) || opts.count < 1 || opts.count > MAX_WORKERS)
      throw new RangeError(
        `--workers ${JSON.stringify(opts.count)}: must be a whole number from 1 to ${MAX_WORKERS}`,
      );
    if (!cluster.isPrimary) throw new Error("workers are forked from the primary process only");
    this.initialMs = opts.backoff?.initialMs ?? 200;
    this.maxMs = opts.backoff?.maxMs ?? 10_000;
    this.resetAfterMs = opts.backoff?.resetAfterMs ?? 10_000;
  }

  /** Forks every worker. */
  start(): void {
    cluster.setupPrimary({
      exec: this.opts.exec,
      args: this.opts.args ?? [],
      execArgv: this.opts.execArgv ?? [],
    });
    for (let i = 0; i < this.opts.count; i++) {
      this.slots.push({
        worker: undefined,
        ready: false,
        pending: [],
        startedAt: 0,
        delayMs: this.initialMs,
        restart: undefined,
      });
      this.fork(i);
    }
  }

  /** Pids of the live workers, by slot (undefined while a slot waits to restart). */
  pids(): (number | undefined)[] {
    return this.slots.map((s) => s.worker?.process.pid);
  }

  /**
   * Sends `signal` to every live worker (the primary passes SIGHUP on:
   * reload authorized_keys). A worker still starting gets it once ready: a
   * SIGHUP before its handler is installed would kill it (measured: a
   * replacement forked 0.4 s before a SIGHUP died of it).
   */
  signal(signal: NodeJS.Signals): void {
    for (const slot of this.slots) {
      if (!slot.worker || slot.worker.isDead()) continue;
      if (slot.ready) slot.worker.process.kill(signal);
      else if (!slot.pending.includes(signal)) slot.pending.push(signal);
    }
  }

  /** SIGTERM to every worker, SIGKILL after graceMs; resolves when all have exited. */
  async stop(graceMs = 5000): Promise<void> {
    this.stopping = true;
    const exits: Promise<unknown>[] = [];
    for (const slot of this.slots) {
      clearTimeout(slot.restart);
      slot.restart = undefined;
      const w = slot.worker;
      if (!w || w.isDead()) continue;
      exits.push(
        new Promise<void>((resolve) => {
          const kill = setTimeout(() => w.process.kill("SIGKILL"), graceMs);
          w.once("exit", () => {
            clearTimeout(kill);
            resolve();
          });
          w.process.kill("SIGTERM");
        }),
      );
    }
    await Promise.all(exits);
  }

  private fork(index: number): void {
    const slot = this.slots[index];
    if (!slot || this.stopping) return;
    slot.restart = undefined;
    const w = cluster.fork({
      ...(this.opts.env?.(index) ?? {}),
      REVTUN_WORKER_INDEX: String(index),
      REVTUN_WORKER_COUNT: String(this.opts.count),
    });
    slot.worker = w;
    slot.ready = false;
    slot.pending = [];
    slot.startedAt = performance.now();
    const pid = w.process.pid ?? -1;
    this.emit("started", { index, pid });
    w.on("listening", (addr) => this.emit("listening", { index, pid, port: addr.port }));
    w.on("message", (m: unknown) => {
      if ((m as { revtun?: unknown } | null)?.revtun === WORKER_READY.revtun) {
        if (slot.worker === w) {
          slot.ready = true;
          for (const sig of slot.pending.splice(0)) w.process.kill(sig);
        }
        this.emit("ready", { index, pid });
      }
    });
    // A worker's IPC errors (it died mid-message) are followed by 'exit'; do not let them throw here.
    w.on("error", () => {});
    w.once("exit", (code, signal) => {
      if (slot.worker === w) slot.worker = undefined;
      if (this.stopping) {
        this.emit("exited", { index, pid, code, signal });
        return;
      }
      const lived = performance.now() - slot.startedAt;
      if (lived >= this.resetAfterMs) slot.delayMs = this.initialMs;
      const restartInMs = slot.delayMs;
      slot.delayMs = Math.min(slot.delayMs * 2, this.maxMs);
      slot.restart = setTimeout(() => this.fork(index), restartInMs);
      this.emit("exited", { index, pid, code, signal, restartInMs });
    });
  }
}

/** Forks `count` relay workers and keeps them running; the relay CLI's --workers calls this. */
export function forkWorkers(opts: WorkersOptions): WorkerSupervisor {
  const s = new WorkerSupervisor(opts);
  s.start();
  return s;
}
