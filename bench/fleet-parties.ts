/**
 * The fleet bench's devices: ssh2 client sessions in the bench process, one
 * ed25519 key per device, each link binding the name dev<i>:22 on a relay and
 * answering every connection to it with its name ("dev<i>") and EOF, so an
 * operator can tell which device it reached.
 *
 * A link reconnects on loss after 100-300 ms (jittered), doubling after each
 * failed attempt up to 2 s (the agent's own backoff caps at 30 s; 2 s keeps a
 * restart's rebinding figure about the relay, not the wait): to the next
 * relay of its list when it has several (the sessions bench's failover), or
 * to its one relay again (the multi-homed scenario's two links a device, as
 * a tunnels file with two entries). Handshakes are paced at HANDSHAKES in
 * flight and links use 127.0.0.x source addresses, so the relays'
 * per-source MaxStartups (10) and their random early drop from 20
 * unauthenticated connections do not refuse the bench itself.
 */
import ssh2 from "ssh2";

const { Client, utils } = ssh2;
const HANDSHAKES = 16;
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let inFlight = 0;
const waiters: (() => void)[] = [];
async function slot(): Promise<() => void> {
  while (inFlight >= HANDSHAKES) await new Promise<void>((r) => waiters.push(r));
  inFlight++;
  return () => {
    inFlight--;
    waiters.shift()?.();
  };
}

export class Device {
  bound = false;
  private client: InstanceType<typeof Client> | undefined;
  private stopped = false;
  private at = 0;
  private fails = 0;
  constructor(
    readonly index: number,
    private readonly key: string,
    /** Relay ports, preferred first. */
    private readonly ports: number[],
  ) {}

  get name(): string {
    return `dev${this.index}`;
  }

  /** The port of the relay this link is on (or trying next). */
  get port(): number {
    return this.ports[this.at % this.ports.length] as number;
  }

  start(): Promise<void> {
    return this.connect();
  }

  stop(): void {
    this.stopped = true;
    this.bound = false;
    this.client?.end();
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    const release = await slot();
    if (this.stopped) {
      release();
      return;
    }
    const port = this.port;
    const c = new Client();
    this.client = c;
    let done = false;
    await new Promise<void>((resolve) => {
      // The outcome is recorded here, synchronously: 'close' (and lost()'s backoff) may follow in the same tick.
      const fin = (ok: boolean) => {
        if (done) return;
        done = true;
        release();
        if (ok) {
          this.bound = !this.stopped;
          this.fails = 0;
        } else if (!this.stopped) {
          this.at++; // the next relay in the list on the next try
          this.fails++;
        }
        resolve();
      };
      c.on("error", () => fin(false));
      c.on("close", () => {
        fin(false);
        if (this.client === c) this.lost();
      });
      c.on("tcp connection", (_i, accept) => {
        const ch = accept();
        ch.on("error", () => {});
        ch.end(this.name);
      });
      c.once("ready", () => {
        // As the agent does (src/agent/session.ts): ssh2 leaves Nagle on, and a delayed ACK then holds a small reply ~40 ms.
        c.setNoDelay(true);
        c.forwardIn(this.name, 22, (err) => {
          if (err) c.end();
          fin(!err);
        });
      });
      c.connect({
        host: "127.0.0.1",
        port,
        localAddress: `127.0.0.${2 + (this.index % 200)}`,
        username: "dev",
        privateKey: this.key,
        readyTimeout: 5000,
        keepaliveInterval: 0,
      });
    });
  }

  private lost(): void {
    this.bound = false;
    if (this.stopped) return;
    const ms = Math.min(2000, (100 + Math.random() * 200) * 2 ** Math.max(0, this.fails - 1));
    setTimeout(() => void this.connect(), ms);
  }
}

export async function waitUntil(cond: () => boolean, ms: number, what: string): Promise<number> {
  const t0 = performance.now();
  while (!cond()) {
    if (performance.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(20);
  }
  return performance.now() - t0;
}

/**
 * ssh2 1.17's generateKeyPairSync("ed25519") now and then writes a private
 * key its own parser calls malformed (1 in ~70 here); draw again.
 */
export function goodKey(): { private: string; public: string } {
  for (let i = 0; i < 10; i++) {
    const k = utils.generateKeyPairSync("ed25519");
    if (!(utils.parseKey(k.private) instanceof Error)) return k;
  }
  throw new Error("ssh2 generated 10 unreadable ed25519 keys in a row");
}
