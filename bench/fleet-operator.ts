/**
 * The fleet bench's operators and sweeps. An Operator is one ssh2 session to
 * one relay with a key that may open dev*:22 (`ssh -W dev42:22 relay`'s
 * direct-tcpip), reconnected when it is needed and gone. A sweep opens a
 * channel per (relay, name) job, at most SWEEP_IN_FLIGHT at once over all
 * relays, and checks that the bytes that come back are the device's name
 * (fleet-parties.ts): an open to the wrong device is a failure, as is a
 * refusal or no answer within OPEN_TIMEOUT_MS.
 *
 *   open latency  forwardOut() to the channel's confirmation, as the operator
 *                 sees it: the relay's lookup, a peer hop when the name is
 *                 held elsewhere, and the device's own channel confirmation.
 *                 Measured in the bench process, which also runs every device
 *                 (the machine's 2 cores are shared with the relays and Redis).
 */
import ssh2, { type ClientChannel } from "ssh2";
import { sleep } from "./fleet-parties.js";

const { Client } = ssh2;
export const SWEEP_IN_FLIGHT = 64;
const OPEN_TIMEOUT_MS = 10_000;

export class Operator {
  private client: InstanceType<typeof Client> | undefined;
  private ready: Promise<InstanceType<typeof Client>> | undefined;
  constructor(
    readonly port: number,
    private readonly key: string,
  ) {}

  private session(): Promise<InstanceType<typeof Client>> {
    if (this.ready) return this.ready;
    const c = new Client();
    this.client = c;
    const p = new Promise<InstanceType<typeof Client>>((resolve, reject) => {
      c.once("ready", () => {
        // ssh2 leaves Nagle on: the sweep is to time the relays, not a delayed ACK on this client's socket.
        c.setNoDelay(true);
        resolve(c);
      });
      c.on("error", (err) => reject(err));
      c.once("close", () => {
        reject(new Error("the operator's session closed"));
        if (this.ready === p) this.ready = undefined;
      });
      c.connect({
        host: "127.0.0.1",
        port: this.port,
        username: "operator",
        privateKey: this.key,
        readyTimeout: 5000,
        keepaliveInterval: 0,
      });
    });
    p.catch(() => {
      if (this.ready === p) this.ready = undefined;
    });
    this.ready = p;
    return p;
  }

  /** Opens dev<i>:22 and reads to EOF; rejects with why when it is not the device's name. */
  async open(name: string): Promise<number> {
    const c = await this.session();
    const t0 = performance.now();
    return new Promise<number>((resolve, reject) => {
      let openMs = -1;
      let ch: ClientChannel | undefined;
      const t = setTimeout(() => {
        ch?.close();
        reject(new Error(openMs < 0 ? `no channel within ${OPEN_TIMEOUT_MS} ms` : "no EOF from the device"));
      }, OPEN_TIMEOUT_MS);
      try {
        c.forwardOut("192.0.2.9", 4000, name, 22, (err, channel) => {
          if (err) {
            clearTimeout(t);
            reject(err);
            return;
          }
          openMs = performance.now() - t0;
          ch = channel;
          const got: Buffer[] = [];
          channel.on("data", (d: Buffer) => got.push(d));
          channel.on("error", () => {});
          channel.once("end", () => channel.close());
          channel.once("close", () => {
            clearTimeout(t);
            const text = Buffer.concat(got).toString();
            if (text === name) resolve(openMs);
            else reject(new Error(`wrong bytes: ${JSON.stringify(text.slice(0, 40))}`));
          });
        });
      } catch (err) {
        // ssh2 throws when the session is no longer writable.
        clearTimeout(t);
        reject(err as Error);
      }
    });
  }

  close(): void {
    this.ready = undefined;
    this.client?.end();
  }
}

export interface Job {
  /** Index into the sweep's operators. */
  relay: number;
  device: number;
  /** Whether the relay holds the name itself (else: a peer hop). */
  local: boolean;
}

export interface SweepResult {
  opens: number;
  failures: number;
  /** Distinct failure messages (digits folded), with counts; at most 8. */
  reasons: Record<string, number>;
  localMs: { p50: number; p99: number; n: number };
  peerMs: { p50: number; p99: number; n: number };
  seconds: number;
  /** The jobs that failed, for a retry. */
  failed: Job[];
}

export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] as number;
}

const round = (x: number) => Math.round(x * 100) / 100;

export async function sweep(ops: Operator[], jobs: Job[], inFlight = SWEEP_IN_FLIGHT): Promise<SweepResult> {
  const local: number[] = [];
  const peer: number[] = [];
  const reasons: Record<string, number> = {};
  const failed: Job[] = [];
  const t0 = performance.now();
  let next = 0;
  const worker = async () => {
    for (let j = jobs[next++]; j; j = jobs[next++]) {
      const op = ops[j.relay] as Operator;
      try {
        const ms = await op.open(`dev${j.device}`);
        (j.local ? local : peer).push(ms);
      } catch (err) {
        failed.push(j);
        const why = (err as Error).message.replace(/\d+/g, "N").slice(0, 160);
        if (reasons[why] !== undefined || Object.keys(reasons).length < 8)
          reasons[why] = (reasons[why] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(inFlight, jobs.length) }, worker));
  const stat = (xs: number[]) => ({
    p50: round(percentile(xs, 50)),
    p99: round(percentile(xs, 99)),
    n: xs.length,
  });
  return {
    opens: jobs.length,
    failures: failed.length,
    reasons,
    localMs: stat(local),
    peerMs: stat(peer),
    seconds: round((performance.now() - t0) / 1000),
    failed,
  };
}

/**
 * Sweeps `jobs`, then only the failed ones again every `pauseMs` until none
 * fails or `ms` passes: resolves with the time until the last one succeeded
 * (from the call), or NaN when some still fail at the end, and how many
 * failed in each round.
 */
export async function sweepUntilAllSucceed(
  ops: Operator[],
  jobs: Job[],
  ms: number,
  pauseMs = 100,
): Promise<{ ms: number; failedPerRound: number[]; stillFailing: number }> {
  const t0 = performance.now();
  let pending = jobs;
  const failedPerRound: number[] = [];
  while (pending.length > 0 && performance.now() - t0 < ms) {
    pending = (await sweep(ops, pending)).failed;
    failedPerRound.push(pending.length);
    if (pending.length > 0) await sleep(pauseMs);
  }
  return {
    ms: pending.length === 0 ? performance.now() - t0 : Number.NaN,
    failedPerRound,
    stillFailing: pending.length,
  };
}
