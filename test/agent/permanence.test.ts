/**
 * Permanence under injected faults, through a TCP proxy between the agent and
 * a real sshd: killed sessions, resets, blackholes, server restarts, stale
 * bindings. Every scenario asserts the time to recover, with the bounds from
 * the issue (5 s to serve again, 6 s to notice a blackhole).
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import type net from "node:net";
import { after, before, describe, it } from "node:test";
import { openTunnel, parseRemoteForward, type Tunnel } from "../../src/index.js";
import { FaultProxy } from "../helpers/fault-proxy.js";
import { echoServer, exchange, type Listening, random, sha256, waitFor } from "../helpers/net.js";
import { freePort, Sshd } from "../helpers/sshd.js";

describe("permanence", () => {
  let sshd: Sshd;
  let proxy: FaultProxy;
  let echo: Listening<net.Server>;

  before(async () => {
    sshd = await Sshd.start({ config: ["ClientAliveInterval 2", "ClientAliveCountMax 2"] });
    proxy = await FaultProxy.start(sshd.port);
    echo = await echoServer();
  });
  after(async () => {
    await proxy.close();
    await echo.close();
    await sshd.close();
  });

  async function start(remotePort: number, extra: Partial<Parameters<typeof openTunnel>[0]> = {}) {
    const t = await openTunnel({
      host: "127.0.0.1",
      port: proxy.port,
      hostKeyAlias: "sshd-under-test",
      username: sshd.user,
      identityFiles: [sshd.userKey],
      knownHostsFiles: [sshd.knownHosts],
      strictHostKeyChecking: "yes",
      serverAliveIntervalMs: 1_000,
      serverAliveCountMax: 3,
      maxBackoffMs: 2_000,
      forwards: [parseRemoteForward(`127.0.0.1:${remotePort}:127.0.0.1:${echo.port}`)],
      ...extra,
    });
    return t;
  }

  before(async () => {
    // Tests reach sshd through the proxy's port, so record the key under an alias.
    const { appendFileSync, readFileSync } = await import("node:fs");
    const [type, key] = readFileSync(`${sshd.hostKeys[0]}.pub`, "utf8").trim().split(/\s+/);
    appendFileSync(sshd.knownHosts, `sshd-under-test ${type} ${key}\n`);
  });

  const works = async (port: number) => {
    const p = random(1024);
    const back = await exchange(port, p, "127.0.0.1", 2_000);
    return sha256(back) === sha256(p);
  };

  async function timeToServe(port: number, limitMs: number): Promise<number> {
    const started = Date.now();
    await waitFor(() => works(port), `port ${port} to serve again`, limitMs, 50);
    return Date.now() - started;
  }

  async function withTunnel(fn: (t: Tunnel, port: number) => Promise<void>, extra = {}) {
    const port = await freePort();
    const t = await start(port, extra);
    try {
      await timeToServe(port, 10_000);
      await fn(t, port);
    } finally {
      await t.close(0);
    }
  }

  it("comes back within 5 s after the server kills the session", async () => {
    await withTunnel(async (t, port) => {
      const down = new Promise((r) => t.once("disconnected", r));
      sshd.killSessions();
      await down;
      const ms = await timeToServe(port, 5_000);
      assert.ok(ms < 5_000, `served again after ${ms} ms`);
    });
  });

  it("comes back within 5 s after a connection reset", async () => {
    await withTunnel(async (t, port) => {
      const down = new Promise<{ reason: string }>((r) => t.once("disconnected", r));
      proxy.reset();
      assert.equal((await down).reason, "reset");
      const ms = await timeToServe(port, 5_000);
      assert.ok(ms < 5_000, `served again after ${ms} ms`);
    });
  });

  it("notices a blackhole within 6 s, and heals when the network returns", async () => {
    await withTunnel(async (t, port) => {
      const frozenAt = Date.now();
      const down = new Promise<{ reason: string }>((r) => t.once("disconnected", r));
      proxy.freeze();
      const { reason } = await down;
      const noticed = Date.now() - frozenAt;
      assert.equal(reason, "keepalive-timeout");
      assert.ok(noticed < 6_000, `noticed after ${noticed} ms`);
      assert.equal(t.healthy(), false);
      proxy.thaw();
      const ms = await timeToServe(port, 10_000);
      assert.ok(ms < 10_000, `served again after ${ms} ms`);
    });
  });

  it("serves again within 5 s of sshd coming back after a stop", async () => {
    await withTunnel(async (_t, port) => {
      sshd.killSessions();
      await sshd.stop();
      await new Promise((r) => setTimeout(r, 3_000));
      assert.equal(await works(port).catch(() => false), false);
      await sshd.start();
      const ms = await timeToServe(port, 5_000);
      assert.ok(ms < 5_000, `served again after ${ms} ms`);
    });
  });

  it("keeps retrying a forward a stale ssh -R session holds, and takes it within 5 s of its release", async () => {
    const port = await freePort();
    const holder: ChildProcess = spawn(
      "ssh",
      [
        "-F",
        "/dev/null",
        "-N",
        "-o",
        "BatchMode=yes",
        "-o",
        `UserKnownHostsFile=${sshd.knownHosts}`,
        "-o",
        "StrictHostKeyChecking=yes",
        "-i",
        sshd.userKey,
        "-p",
        String(sshd.port),
        "-R",
        `127.0.0.1:${port}:127.0.0.1:9`,
        `${sshd.user}@127.0.0.1`,
      ],
      { stdio: "ignore" },
    );
    try {
      await waitFor(() => sshd.log.includes(`port ${port}`) || undefined, "ssh -R to bind", 10_000).catch(
        () => undefined,
      );
      await new Promise((r) => setTimeout(r, 500));
      const t = await start(port);
      try {
        const failed = await new Promise<{ retryInMs: number | undefined }>((r) =>
          t.once("forward-failed", r),
        );
        assert.ok(failed.retryInMs !== undefined, "the forward is retried");
        assert.equal(t.healthy(), false);
        assert.equal(t.status().forwards[0]?.state, "failed");
        const released = Date.now();
        holder.kill("SIGTERM");
        await waitFor(() => t.status().forwards[0]?.state === "bound", "the forward to be bound", 6_000);
        const ms = Date.now() - released;
        assert.ok(ms < 5_000, `bound ${ms} ms after the release`);
        assert.ok(await works(port));
        assert.equal(t.healthy(), true);
      } finally {
        await t.close(0);
      }
    } finally {
      holder.kill("SIGKILL");
    }
  });

  it("does not mistake a slow bulk transfer for a dead peer", async () => {
    await withTunnel(async (t, port) => {
      let dropped = false;
      t.on("disconnected", () => {
        dropped = true;
      });
      // At 400 KiB/s the keepalive replies queue behind up to 2 MiB of channel
      // data (one window): about 5 s, more than 3 missed 1 s keepalives.
      proxy.throttle(400 * 1024);
      try {
        const payload = random(6 * 1024 * 1024);
        const back = await exchange(port, payload, "127.0.0.1", 60_000);
        assert.equal(sha256(back), sha256(payload));
      } finally {
        proxy.throttle(0);
      }
      assert.equal(dropped, false, "the session survived the transfer");
    });
  });

  it("closes in-flight connections on both ends when the session dies", async () => {
    await withTunnel(async (_t, port) => {
      const { connect } = await import("node:net");
      const s = connect({ host: "127.0.0.1", port });
      await new Promise((r) => s.once("connect", r));
      s.write("hello");
      await new Promise((r) => s.once("data", r));
      const closed = new Promise((r) => s.once("close", r));
      s.on("error", () => {});
      const killedAt = Date.now();
      proxy.reset();
      await closed;
      assert.ok(Date.now() - killedAt < 3_000, "the remote client is closed promptly");
    });
  });
});
