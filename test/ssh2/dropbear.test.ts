/**
 * The agent against Dropbear with the receive-window policy on: Dropbear and
 * SSH.NET have had stalls with peers that advertise large windows and adjust
 * late (dropbear PR 377, SSH.NET 1671), so a grown window must still carry
 * every byte both ways.
 *
 * Dropbear reads authorized_keys from the login user's passwd home, not
 * $HOME; this runs as root, so Dropbear gets a private mount namespace
 * (unshare -m) where a temp dir is bind-mounted over /root. Nothing outside
 * that namespace changes, and it ends with Dropbear.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import type net from "node:net";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { openTunnel, parseRemoteForward, type Tunnel } from "../../src/index.js";
import { DEFAULT_WINDOW_POLICY, reservedWindowBytes, windowPolicy } from "../../src/ssh2/window.js";
import { DelayProxy } from "../helpers/delay-proxy.js";
import { echoServer, exchange, type Listening, random, sha256 } from "../helpers/net.js";
import { childPids, freePort, keygen, sshBanner } from "../helpers/sshd.js";

const DROPBEAR = "/usr/sbin/dropbear";
const MiB = 1024 * 1024;
const canRun =
  userInfo().uid === 0 &&
  (() => {
    try {
      execFileSync(DROPBEAR, ["-V"], { stdio: "ignore" });
      return true;
    } catch {
      return false;
    }
  })();

describe("agent tunnel through Dropbear with managed windows", {
  skip: !canRun && "needs root and /usr/sbin/dropbear",
}, () => {
  const dir = mkdtempSync(join(tmpdir(), "revtun-dropbear-"));
  const home = join(dir, "home");
  const userKey = join(dir, "id_ed25519");
  const knownHosts = join(dir, "known_hosts");
  let proc: ChildProcess | undefined;
  let log = "";
  let proxy: DelayProxy;
  let echo: Listening<net.Server>;
  let tunnel: Tunnel | undefined;

  before(async () => {
    mkdirSync(join(home, ".ssh"), { recursive: true, mode: 0o700 });
    writeFileSync(join(home, ".ssh", "authorized_keys"), `${keygen(userKey)}\n`, { mode: 0o600 });
    const hostKey = join(dir, "host_ed25519");
    const out = execFileSync("dropbearkey", ["-t", "ed25519", "-f", hostKey], { encoding: "utf8" });
    const pub = /^(ssh-ed25519 \S+)/m.exec(out)?.[1];
    assert.ok(pub, `no public key in dropbearkey output: ${out}`);
    const port = await freePort();
    // -W: Dropbear's own receive window at its 10 MB maximum, so both ends
    // advertise large windows (its default, 24 KiB, would make this a test of that).
    const args = ["-F", "-E", "-s", "-W", String(10 * 1000 * 1000), "-p", `127.0.0.1:${port}`, "-r", hostKey];
    proc = spawn(
      "unshare",
      ["-m", "sh", "-c", `mount --bind "$0" /root && exec ${DROPBEAR} "$@"`, home, ...args],
      {
        stdio: ["ignore", "ignore", "pipe"],
      },
    );
    proc.stderr?.setEncoding("utf8").on("data", (d: string) => {
      log = (log + d).slice(-100_000);
    });
    const deadline = Date.now() + 10_000;
    while (!(await sshBanner(port))) {
      if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`dropbear did not start: ${log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    // 10 ms each way: enough round trip for the window to grow.
    proxy = await DelayProxy.start(port, 10);
    writeFileSync(knownHosts, `[127.0.0.1]:${proxy.port} ${pub}\n`);
    echo = await echoServer();
  });

  after(async () => {
    await tunnel?.close(0);
    await proxy?.close();
    await echo?.close();
    const pid = proc?.pid;
    if (pid && proc?.exitCode === null) {
      for (const child of childPids(pid)) process.kill(child, "SIGKILL");
      const exited = new Promise((r) => proc?.once("exit", r));
      process.kill(pid, "SIGTERM");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  });

  test("16 MiB both ways byte-exact through an echo target, with the window grown, then 8 MiB on a seeded channel", async () => {
    assert.equal(windowPolicy().enabled, DEFAULT_WINDOW_POLICY.enabled);
    assert.ok(windowPolicy().enabled, "the policy is on by default");
    const t = await openTunnel({
      host: "127.0.0.1",
      port: proxy.port,
      username: "root",
      identityFiles: [userKey],
      knownHostsFiles: [knownHosts],
      strictHostKeyChecking: "yes",
      forwards: [parseRemoteForward(`127.0.0.1:0:127.0.0.1:${echo.port}`)],
    });
    tunnel = t;
    const port = await new Promise<number>((resolve, reject) => {
      t.on("forward-bound", (e) => resolve(e.port ?? 0));
      t.on("error", reject);
    });
    assert.ok(port > 0, "dropbear allocated no port");
    let maxReserved = 0;
    const sampler = setInterval(() => {
      maxReserved = Math.max(maxReserved, reservedWindowBytes());
    }, 10);
    try {
      const payload = random(16 * MiB);
      const back = await exchange(port, payload, "127.0.0.1", 30_000);
      assert.equal(back.length, payload.length, `dropbear log: ${log.slice(-2000)}`);
      assert.equal(sha256(back), sha256(payload));
      // The next connection on the warm session opens at the learned window
      // (an adjust right behind the confirmation): Dropbear must take it too.
      const again = random(8 * MiB);
      const back2 = await exchange(port, again, "127.0.0.1", 30_000);
      assert.equal(sha256(back2), sha256(again), `second connection; dropbear log: ${log.slice(-2000)}`);
    } finally {
      clearInterval(sampler);
    }
    assert.ok(maxReserved > 0, "the agent's window never grew past 2 MiB");
  });
});
