/**
 * Named tunnels end to end with real OpenSSH on both ends: devices bind a
 * name with stock `ssh -R device42:22:...` (and revtun's library Tunnel),
 * an operator reaches them with stock `ssh -J relay user@device42`, `-W`
 * and `-L`. The device's own sshd is a real sshd (helpers/sshd.ts).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { parseRemoteForward } from "../../src/agent/forward-spec.js";
import { openTunnel, type Tunnel } from "../../src/agent/tunnel.js";
import { fingerprintSha256, parsePublicKey } from "../../src/shared/keys.js";
import {
  exchange,
  hashServer,
  type Key,
  listen,
  nextEvent,
  payload,
  RelayFixture,
  SshProc,
  sha256,
  withTimeout,
} from "../helpers/relay.js";
import { freePort, Sshd } from "../helpers/sshd.js";

/** Socket inodes this process listens on over TCP (from /proc), to show a name opens none. */
function listeningInodes(): Set<string> {
  const mine = new Set<string>();
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`));
      if (m?.[1]) mine.add(m[1]);
    } catch {
      // fd closed while listing
    }
  }
  const out = new Set<string>();
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    for (const line of readFileSync(file, "utf8").split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      // st 0A = LISTEN; inode is field 9
      if (f[3] === "0A" && f[9] && mine.has(f[9])) out.add(`${f[1]} ${f[9]}`);
    }
  }
  return out;
}

const fp = (k: Key) => fingerprintSha256(parsePublicKey(k.pub)?.blob ?? Buffer.alloc(0));

describe("named tunnels with OpenSSH devices and operators", () => {
  const fx = new RelayFixture();
  let sshd: Sshd;
  let dev: Key;
  let dev2: Key;
  let op: Key;
  let noop: Key;
  let intruder: Key;
  let config: string;
  const reply = payload(3 * 1024 * 1024 + 17, "reply");
  const hs = hashServer(reply);
  let hashPort = 0;
  let device: SshProc;
  let revtun: Tunnel | undefined;
  const env = { ...process.env };
  delete env.SSH_AUTH_SOCK;

  const startDevice = () =>
    fx.ssh(dev, [
      "-N",
      "-o",
      "ExitOnForwardFailure=yes",
      "-o",
      "ServerAliveInterval=60",
      "-R",
      `device42:22:127.0.0.1:${sshd.port}`,
      "-R",
      `device42:7:127.0.0.1:${hashPort}`,
    ]);
  const bound = (name: string, port: number, not?: number) =>
    nextEvent(fx.relay, "forward-bound", (x) => x.address === name && x.port === port && x.sessionId !== not);
  /** Stock ssh with the test's config: `-J relay`, the device's known_hosts. */
  const procs: SshProc[] = [];
  const operator = (args: string[]) => {
    const p = new SshProc(spawn("ssh", ["-F", config, ...args], { stdio: ["ignore", "pipe", "pipe"], env }));
    procs.push(p);
    return p;
  };

  before(async () => {
    sshd = await Sshd.start();
    dev = fx.key();
    dev2 = fx.key();
    op = fx.key();
    noop = fx.key();
    intruder = fx.key();
    hashPort = await listen(fx.track(hs.server));
    await fx.start([
      `restrict,port-forwarding,permitlisten="device42:22",permitlisten="device42:7" ${dev.pub} device42`,
      `restrict,port-forwarding,permitlisten="device43:22" ${dev2.pub} device43`,
      `restrict,permitopen="*:22",permitopen="device42:7" ${op.pub} operator`,
      `restrict,port-forwarding,permitlisten="device*:*" ${noop.pub} no-permitopen`,
      `restrict,port-forwarding,permitlisten="device*:22" ${intruder.pub} intruder`,
    ]);
    // The operator knows the device's host key under its name, as an
    // operator's known_hosts would (port 22: no brackets).
    const deviceKnownHosts = join(fx.dir, "devices_known_hosts");
    const [type, key] = sshd.hostKeyPub().split(/\s+/);
    writeFileSync(deviceKnownHosts, `device42 ${type} ${key}\ndevice43 ${type} ${key}\n`);
    config = join(fx.dir, "ssh_config");
    writeFileSync(
      config,
      [
        "Host relay",
        "  HostName 127.0.0.1",
        `  Port ${fx.port}`,
        `  IdentityFile ${op.file}`,
        `  UserKnownHostsFile ${fx.knownHosts}`,
        "Host device4?",
        `  IdentityFile ${sshd.userKey}`,
        `  UserKnownHostsFile ${deviceKnownHosts}`,
        "Host *",
        "  IdentitiesOnly yes",
        "  StrictHostKeyChecking yes",
        "  BatchMode yes",
        "  ConnectTimeout 5",
        "",
      ].join("\n"),
    );
  });
  after(async () => {
    await revtun?.close(0);
    await Promise.all(procs.map((p) => p.kill().catch(() => {})));
    await fx.cleanup();
    await sshd.close();
  });

  test("a device's ssh -R device42:22 opens no port; ssh -J relay user@device42 runs a command there", async () => {
    const before = listeningInodes();
    // The measurement sees this process's listeners: the relay's and the hash server's.
    assert.ok(before.size >= 2, `listening sockets seen: ${[...before].join(", ")}`);
    const b22 = bound("device42", 22);
    const b7 = bound("device42", 7);
    device = startDevice();
    const [info] = await b22;
    await b7;
    assert.deepEqual(info.listening, []);
    assert.deepEqual(listeningInodes(), before, "binding a name opened a listening socket");
    assert.ok(fx.relay.forwards().some((f) => f.address === "device42" && f.port === 22));

    const audit = nextEvent(fx.relay, "tunnel-connection-closed", (x) => x.name === "device42");
    const started = Date.now();
    const ssh = operator(["-J", "relay", `${sshd.user}@device42`, "echo", "hello"]);
    const code = await ssh.waitExit(15_000);
    assert.equal(code, 0, ssh.stderr);
    assert.equal(ssh.stdout, "hello\n");
    const [rec] = await audit;
    assert.equal(rec.ended, "closed");
    assert.equal(rec.port, 22);
    assert.equal(rec.fingerprint, fp(op));
    assert.match(rec.keyComment, / operator$/);
    assert.equal(rec.deviceFingerprint, fp(dev));
    assert.ok(rec.bytesToDevice > 1000 && rec.bytesFromDevice > 1000, JSON.stringify(rec));
    assert.ok(rec.durationMs <= Date.now() - started);
  });

  test("revtun as a second device: device43 is reached the same way", async () => {
    const b = bound("device43", 22);
    revtun = await openTunnel({
      host: "127.0.0.1",
      port: fx.port,
      username: "device",
      identityFiles: [dev2.file],
      knownHostsFiles: [fx.knownHosts],
      strictHostKeyChecking: "yes",
      forwards: [parseRemoteForward(`device43:22:127.0.0.1:${sshd.port}`)],
    });
    await b;
    const ssh = operator(["-J", "relay", `${sshd.user}@device43`, "echo", "hello", "from", "43"]);
    assert.equal(await ssh.waitExit(15_000), 0, ssh.stderr);
    assert.equal(ssh.stdout, "hello from 43\n");
  });

  test("revtun asking for a name with port 0: the relay refuses it, the agent reports the forward failed", async () => {
    const refused = nextEvent(fx.relay, "forward-refused", (x) => x.address === "device43" && x.port === 0);
    const t = await openTunnel({
      host: "127.0.0.1",
      port: fx.port,
      username: "device",
      identityFiles: [dev2.file],
      knownHostsFiles: [fx.knownHosts],
      strictHostKeyChecking: "yes",
      forwards: [parseRemoteForward(`device43:0:127.0.0.1:${sshd.port}`)],
    });
    try {
      const failed = withTimeout(
        new Promise<string>((resolve) => t.once("forward-failed", (e) => resolve(e.forward.text))),
        10_000,
        "forward-failed",
      );
      assert.match((await refused)[0].reason, /a tunnel name needs a fixed port/);
      assert.equal(await failed, `device43:0:127.0.0.1:${sshd.port}`);
    } finally {
      await t.close(0);
    }
  });

  test("-W carries a few MiB byte-exact both ways, with half-close", async () => {
    const upload = payload(4 * 1024 * 1024 + 5, "upload-W");
    const n = hs.results.length;
    const proc = spawn("ssh", ["-F", config, "-W", "device42:7", "relay"], {
      stdio: ["pipe", "pipe", "pipe"],
      env,
    });
    const out: Buffer[] = [];
    let stderr = "";
    proc.stdout.on("data", (d: Buffer) => out.push(d));
    proc.stderr.on("data", (d: Buffer) => {
      stderr += d;
    });
    const closed = new Promise<number | null>((r) => proc.once("close", (code) => r(code)));
    proc.stdin.end(upload);
    let code: number | null;
    try {
      code = await withTimeout(closed, 20_000, "ssh -W to exit");
    } finally {
      if (proc.exitCode === null && proc.pid) process.kill(proc.pid, "SIGKILL");
    }
    assert.equal(code, 0, stderr);
    const got = Buffer.concat(out);
    assert.equal(got.length, reply.length);
    assert.equal(sha256(got), sha256(reply));
    assert.equal(hs.results.length, n + 1);
    assert.equal(hs.results[n]?.receivedHash, sha256(upload));
  });

  test("-L carries a few MiB byte-exact both ways, with half-close", async () => {
    const local = await freePort();
    const ssh = operator(["-N", "-o", "ExitOnForwardFailure=yes", "-L", `${local}:device42:7`, "relay"]);
    const upload = payload(3 * 1024 * 1024 + 1, "upload-L");
    let got: Buffer | undefined;
    for (let i = 0; i < 50 && !got; i++) {
      got = await exchange(local, upload, 20_000).catch(async () => {
        await new Promise((r) => setTimeout(r, 100));
        return undefined;
      });
    }
    assert.ok(got, ssh.stderr);
    assert.equal(sha256(got), sha256(reply));
    assert.equal(hs.results.at(-1)?.receivedHash, sha256(upload));
    await ssh.kill();
  });

  test("a key without permitopen is refused as before", async () => {
    const ssh = fx.ssh(noop, ["-W", "device42:22"]);
    assert.notEqual(await ssh.waitExit(10_000), 0);
    assert.match(ssh.stderr, /administratively prohibited: revtun relay: forwarding only, local forwarding/);
  });

  test("a name nobody holds fails at once: no tunnel device99:22", async () => {
    const refused = nextEvent(fx.relay, "tunnel-refused", (x) => x.name === "device99");
    const t0 = Date.now();
    const ssh = fx.ssh(op, ["-W", "device99:22"]);
    assert.notEqual(await ssh.waitExit(10_000), 0);
    const ms = Date.now() - t0;
    assert.match(ssh.stderr, /open failed: connect failed: no tunnel device99:22/);
    assert.equal((await refused)[0].reason, "no tunnel device99:22");
    assert.ok(ms < 3_000, `took ${ms} ms`);
  });

  test("another key cannot take a held name", async () => {
    const refused = nextEvent(fx.relay, "forward-refused", (x) => x.address === "device42");
    const ssh = fx.ssh(intruder, ["-N", "-o", "ExitOnForwardFailure=yes", "-R", "device42:22:127.0.0.1:1"]);
    assert.notEqual(await ssh.waitExit(10_000), 0);
    assert.equal((await refused)[0].reason, "device42:22 is held by another key");
    const again = operator(["-J", "relay", `${sshd.user}@device42`, "echo", "still", "mine"]);
    assert.equal(await again.waitExit(15_000), 0, again.stderr);
    assert.equal(again.stdout, "still mine\n");
  });

  test("a device that comes back takes its name at once while the stale session is still open", async (t) => {
    const staleId = fx.relay.forwards().find((f) => f.address === "device42" && f.port === 22)?.sessionId;
    assert.ok(staleId !== undefined);
    // The first device stalls (its link is gone but its socket stays open,
    // as a vanished network does) and is killed; its session on the relay lives on.
    device.signal("SIGSTOP");
    const stale = device;
    const b = bound("device42", 22, staleId);
    const t0 = Date.now();
    device = startDevice();
    const [info] = await b;
    const bindMs = Date.now() - t0;
    const audit = nextEvent(fx.relay, "tunnel-connection-closed", (x) => x.name === "device42");
    const t1 = Date.now();
    const ssh = operator(["-J", "relay", `${sshd.user}@device42`, "echo", "back"]);
    assert.equal(await ssh.waitExit(15_000), 0, ssh.stderr);
    const serveMs = Date.now() - t1;
    assert.equal(ssh.stdout, "back\n");
    const [rec] = await audit;
    assert.equal(rec.deviceSessionId, info.sessionId, "served by the new session");
    assert.ok(
      fx.relay.forwards().some((f) => f.sessionId === staleId),
      "the stale session still holds its name",
    );
    t.diagnostic(`reconnect to name bound: ${bindMs} ms; ssh -J ... echo through it: ${serveMs} ms`);
    assert.ok(bindMs < 1_000, `the new session took ${bindMs} ms to hold the name`);
    // Trying the stalled (older) holder first would wait out channelOpenTimeoutMs (15 s).
    assert.ok(serveMs < 3_000, `ssh -J through the name took ${serveMs} ms`);
    // The stale session goes when its socket does.
    const gone = nextEvent(fx.relay, "session-closed", (x) => x.sessionId === staleId);
    await stale.kill();
    await gone;
  });

  test("when the newest holder cannot open the channel, the next one serves", async () => {
    const current = fx.relay.forwards().find((f) => f.address === "device42" && f.port === 7)?.sessionId;
    assert.ok(current !== undefined);
    const closedPort = await freePort();
    const b = bound("device42", 7, current);
    // Same key, a second link whose target is down: the newest holder, and its open fails.
    const broken = fx.ssh(dev, ["-N", "-R", `device42:7:127.0.0.1:${closedPort}`]);
    const [newest] = await b;
    assert.deepEqual(
      fx.relay.forwards().filter((f) => f.address === "device42" && f.port === 7).length,
      2,
      "both sessions hold device42:7",
    );
    const audit = nextEvent(
      fx.relay,
      "tunnel-connection-closed",
      (x) => x.name === "device42" && x.port === 7,
    );
    const upload = payload(100_000, "fallover");
    const local = await freePort();
    const ssh = operator(["-N", "-o", "ExitOnForwardFailure=yes", "-L", `${local}:device42:7`, "relay"]);
    let got: Buffer | undefined;
    for (let i = 0; i < 50 && !got; i++) {
      got = await exchange(local, upload, 10_000).catch(async () => {
        await new Promise((r) => setTimeout(r, 100));
        return undefined;
      });
    }
    assert.ok(got, ssh.stderr);
    assert.equal(sha256(got), sha256(reply));
    const [rec] = await audit;
    assert.equal(rec.deviceSessionId, current, `newest was ${newest.sessionId}: ${JSON.stringify(rec)}`);
    await ssh.kill();
    await broken.kill();
  });

  test("opening a named channel: latency through the relay (ssh2 operator, 20 opens)", async (t) => {
    const { Client } = await import("ssh2");
    const client = new Client();
    const hostKey = readFileSync(fx.knownHosts, "utf8").trim().split(/\s+/)[2] ?? "";
    const ready = new Promise<void>((resolve, reject) => {
      client.once("ready", () => resolve());
      client.once("error", reject);
    });
    // Nagle off, as OpenSSH does for its sessions: otherwise the operator's
    // own CHANNEL_OPEN waits on the ACK of the previous CLOSE.
    const sock = net.connect({ host: "127.0.0.1", port: fx.port, noDelay: true });
    client.connect({
      sock,
      username: "operator",
      privateKey: readFileSync(op.file),
      hostVerifier: (key: Buffer) => key.toString("base64") === hostKey,
    });
    try {
      await withTimeout(ready, 10_000, "ssh2 operator login");
      const times: number[] = [];
      for (let i = 0; i < 20; i++) {
        const t0 = process.hrtime.bigint();
        const ch = await withTimeout(
          new Promise<import("ssh2").ClientChannel>((resolve, reject) =>
            client.forwardOut("127.0.0.1", 0, "device42", 7, (err, c) => (err ? reject(err) : resolve(c))),
          ),
          5_000,
          "named channel open",
        );
        times.push(Number(process.hrtime.bigint() - t0) / 1e6);
        ch.on("error", () => {});
        ch.resume();
        ch.end();
        await new Promise((r) => ch.once("close", r));
      }
      times.sort((a, b) => a - b);
      const median = times[10] ?? 0;
      const max = times[19] ?? 0;
      t.diagnostic(`named channel open: median ${median.toFixed(2)} ms, max ${max.toFixed(2)} ms`);
      assert.ok(max < 1_000, `an open took ${max} ms`);
    } finally {
      client.end();
    }
  });
});

describe("named tunnels: a device that does not answer", () => {
  const fx = new RelayFixture();
  after(() => fx.cleanup());

  test("the operator's open fails after channelOpenTimeoutMs, never hangs, and is recorded", async () => {
    const dev = fx.key();
    const op = fx.key();
    await fx.start(
      [
        `restrict,port-forwarding,permitlisten="device42:22" ${dev.pub} device42`,
        `restrict,permitopen="device42:22" ${op.pub} operator`,
      ],
      { channelOpenTimeoutMs: 300 },
    );
    const b = nextEvent(fx.relay, "forward-bound", (x) => x.address === "device42");
    const device = fx.ssh(dev, ["-N", "-o", "ExitOnForwardFailure=yes", "-R", "device42:22:127.0.0.1:1"]);
    const [info] = await b;
    device.signal("SIGSTOP"); // its session stays open and answers nothing
    const audit = nextEvent(fx.relay, "tunnel-connection-closed", (x) => x.name === "device42");
    const t0 = Date.now();
    const ssh = fx.ssh(op, ["-W", "device42:22"]);
    assert.notEqual(await ssh.waitExit(10_000), 0);
    const ms = Date.now() - t0;
    assert.match(
      ssh.stderr,
      new RegExp(
        `open failed: connect failed: tunnel device42:22 open failed: session ${info.sessionId} did not answer within 300 ms`,
      ),
    );
    const [rec] = await audit;
    assert.match(rec.ended, /^open failed: session \d+ did not answer within 300 ms$/);
    assert.ok(ms < 3_000, `took ${ms} ms`);
    await device.kill();
  });
});
