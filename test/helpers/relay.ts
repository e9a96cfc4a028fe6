/**
 * Test helpers for the relay: an in-process Relay on an ephemeral loopback
 * port, the real OpenSSH client as the peer, and small TCP targets. Every
 * child process is recorded and killed by pid in `cleanup()`.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Relay, type RelayEventName, type RelayEvents, type RelayOptions } from "../../src/relay/index.js";
import { loadOrCreateHostKey } from "../../src/shared/keys.js";
import { exchange as netExchange, withTimeout } from "./net.js";
import { keygen } from "./sshd.js";

/** Shared with the tests that take their fixtures from here. */
export { withTimeout };

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resolves with the first `name` event whose payload passes `match`. */
export function nextEvent<K extends RelayEventName>(
  relay: Relay,
  name: K,
  match: (...args: RelayEvents[K]) => boolean = () => true,
  ms = 10_000,
): Promise<RelayEvents[K]> {
  const on = relay.on as (event: K, fn: (...a: RelayEvents[K]) => void) => Relay;
  const off = relay.off as (event: K, fn: (...a: RelayEvents[K]) => void) => Relay;
  return withTimeout(
    new Promise<RelayEvents[K]>((resolve) => {
      const fn = (...args: RelayEvents[K]) => {
        if (!match(...args)) return;
        off.call(relay, name, fn);
        resolve(args);
      };
      on.call(relay, name, fn);
    }),
    ms,
    `relay event ${name}`,
  );
}

export class SshProc {
  stdout = "";
  stderr = "";
  readonly exited: Promise<number | null>;
  exitCode: number | null | undefined;

  constructor(readonly proc: ChildProcess) {
    proc.stdout?.setEncoding("utf8").on("data", (d: string) => {
      this.stdout += d;
    });
    proc.stderr?.setEncoding("utf8").on("data", (d: string) => {
      this.stderr += d;
    });
    this.exited = new Promise((resolve) => {
      proc.once("exit", (code) => {
        this.exitCode = code;
        resolve(code);
      });
    });
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  async waitStderr(re: RegExp, ms: number): Promise<RegExpExecArray> {
    const deadline = Date.now() + ms;
    for (;;) {
      const m = re.exec(this.stderr);
      if (m) return m;
      if (this.exitCode !== undefined)
        throw new Error(`ssh exited ${this.exitCode} before ${re}: ${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${re} in ssh stderr: ${this.stderr}`);
      await sleep(20);
    }
  }

  waitExit(ms: number): Promise<number | null> {
    return withTimeout(this.exited, ms, `ssh ${this.pid} to exit (stderr: ${this.stderr})`);
  }

  signal(sig: NodeJS.Signals): void {
    if (this.exitCode === undefined && this.proc.pid) process.kill(this.proc.pid, sig);
  }

  /** Kills by pid (continuing it first, if stopped) and waits for the exit. */
  async kill(): Promise<void> {
    if (this.exitCode !== undefined) return;
    this.signal("SIGCONT");
    this.signal("SIGKILL");
    await withTimeout(this.exited, 5_000, `ssh ${this.pid} to die`);
  }
}

export interface Key {
  file: string;
  pub: string;
}

/** A relay in this process plus everything a test needs around it. */
export class RelayFixture {
  readonly dir = mkdtempSync(join(tmpdir(), "revtun-relay-"));
  readonly authorizedKeys = join(this.dir, "authorized_keys");
  readonly knownHosts = join(this.dir, "known_hosts");
  relay!: Relay;
  private readonly procs: SshProc[] = [];
  private readonly servers: net.Server[] = [];
  private keyCount = 0;

  key(): Key {
    const file = join(this.dir, `id_${++this.keyCount}`);
    return { file, pub: keygen(file) };
  }

  writeKeys(lines: string[]): void {
    // Write and rename, as config managers do: a watcher never sees half a file.
    const tmp = `${this.authorizedKeys}.tmp`;
    writeFileSync(tmp, `${lines.join("\n")}\n`);
    renameSync(tmp, this.authorizedKeys);
  }

  async start(lines: string[], options: Partial<RelayOptions> = {}): Promise<Relay> {
    this.writeKeys(lines);
    const hostKey = await loadOrCreateHostKey(join(this.dir, "host_ed25519"));
    this.relay = new Relay({
      listen: { host: "127.0.0.1", port: 0 },
      hostKey: hostKey.privateKey,
      authorizedKeysFile: this.authorizedKeys,
      watchAuthorizedKeys: false,
      authFailureDelayMs: 300,
      ...options,
    });
    const { port } = await this.relay.start();
    writeFileSync(this.knownHosts, `[127.0.0.1]:${port} ${hostKey.publicKey}\n`);
    return this.relay;
  }

  get port(): number {
    return this.relay.address?.port ?? 0;
  }

  /** Runs the OpenSSH client against the relay: `extra` goes before the destination. */
  ssh(key: Key, extra: string[], after: string[] = []): SshProc {
    const args = [
      "-F",
      "/dev/null",
      "-o",
      `UserKnownHostsFile=${this.knownHosts}`,
      "-o",
      "StrictHostKeyChecking=yes",
      "-o",
      "BatchMode=yes",
      "-o",
      "IdentitiesOnly=yes",
      "-o",
      "ConnectTimeout=5",
      "-i",
      key.file,
      "-p",
      String(this.port),
      ...extra,
      "127.0.0.1",
      ...after,
    ];
    const env = { ...process.env };
    delete env.SSH_AUTH_SOCK;
    const p = new SshProc(spawn("ssh", args, { stdio: ["ignore", "pipe", "pipe"], env }));
    this.procs.push(p);
    return p;
  }

  track(server: net.Server): net.Server {
    this.servers.push(server);
    return server;
  }

  async cleanup(): Promise<void> {
    await Promise.all(this.procs.map((p) => p.kill().catch(() => {})));
    await this.relay?.close();
    for (const s of this.servers) s.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export function listen(server: net.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port));
  });
}

/** Deterministic bytes, so both ends can hash what was meant to be sent. */
export function payload(size: number, seed: string): Buffer {
  const out = Buffer.alloc(size);
  let block = createHash("sha256").update(seed).digest();
  for (let off = 0; off < size; off += block.length) {
    block.copy(out, off);
    block = createHash("sha256").update(block).digest();
  }
  return out;
}

export { sha256 } from "./net.js";

export interface HashServerResult {
  receivedHash: string;
  receivedBytes: number;
}

/**
 * A target that reads until EOF, then answers with `reply` and closes: it
 * only replies after the client's half-close has crossed the tunnel.
 */
export function hashServer(reply: Buffer): { server: net.Server; results: HashServerResult[] } {
  const results: HashServerResult[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (sock) => {
    const h = createHash("sha256");
    let n = 0;
    sock.on("data", (d: Buffer) => {
      h.update(d);
      n += d.length;
    });
    sock.on("error", () => {});
    sock.on("end", () => {
      results.push({ receivedHash: h.digest("hex"), receivedBytes: n });
      sock.end(reply);
    });
  });
  return { server, results };
}

/** A target that greets with `name\n` and echoes. */
export function bannerServer(name: string): { server: net.Server; connections: () => number } {
  let count = 0;
  const server = net.createServer((sock) => {
    count++;
    sock.on("error", () => {});
    sock.write(`${name}\n`);
    sock.pipe(sock);
  });
  return { server, connections: () => count };
}

/** Connects, sends `data`, half-closes, and collects the whole answer (net.ts's exchange on loopback). */
export function exchange(port: number, data: Buffer, ms = 30_000): Promise<Buffer> {
  return netExchange(port, data, "127.0.0.1", ms);
}

/** Connects and returns the first line the far end sends (or "" if it closes first). */
export function firstLine(port: number, ms = 5_000): Promise<string> {
  return withTimeout(
    new Promise<string>((resolve, reject) => {
      let text = "";
      const sock = net.connect({ host: "127.0.0.1", port });
      sock.setEncoding("utf8");
      sock.on("data", (d: string) => {
        text += d;
        const nl = text.indexOf("\n");
        if (nl !== -1) {
          sock.destroy();
          resolve(text.slice(0, nl));
        }
      });
      sock.on("error", reject);
      sock.on("close", () => resolve(text));
    }),
    ms,
    `first line on port ${port}`,
  );
}

export { randomBytes };

/** Runs `fn` with a fresh RelayFixture, cleaned up however `fn` ends. */
export async function withFixture(fn: (f: RelayFixture) => Promise<void>): Promise<void> {
  const f = new RelayFixture();
  try {
    await fn(f);
  } finally {
    await f.cleanup();
  }
}
