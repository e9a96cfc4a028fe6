/**
 * Jump hosts against real OpenSSH sshds: a bastion and a target, through the
 * library (withJumpHosts) and the CLI (-J), with host key checks on every hop,
 * recovery when a hop's session dies, and no hop session left behind.
 */
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import type net from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { parseJumpHosts, resolveJumpHosts } from "../../src/config/jump-hosts.js";
import {
  openTunnel,
  parseRemoteForward,
  type Tunnel,
  type TunnelEvents,
  type TunnelOptions,
} from "../../src/index.js";
import { RevtunError } from "../../src/shared/errors.js";
import { Revtun, runRevtun } from "../helpers/cli.js";
import { echoServer, exchange, type Listening, random, sha256, waitFor } from "../helpers/net.js";
import { childPids, freePort, keygen, Sshd } from "../helpers/sshd.js";

type TunnelEventArg<E extends keyof TunnelEvents> = TunnelEvents[E][0];

describe("parseJumpHosts", () => {
  it("takes ssh's -J forms", () => {
    assert.deepEqual(
      parseJumpHosts("a, me@b:2200,[::1]:22,ssh://u@c:2/, x@y@d").map(({ user, host, port }) => ({
        user,
        host,
        port,
      })),
      [
        { user: undefined, host: "a", port: undefined },
        { user: "me", host: "b", port: 2200 },
        { user: undefined, host: "::1", port: 22 },
        { user: "u", host: "c", port: 2 },
        { user: "x@y", host: "d", port: undefined },
      ],
    );
  });

  for (const bad of ["", "a,,b", "@host", "host:0", "host:x", "::1"]) {
    it(`refuses "${bad}" as a usage error`, () => {
      assert.throws(
        () => parseJumpHosts(bad),
        (e: unknown) => e instanceof RevtunError && e.code === "USAGE" && /jump host/.test(e.message),
      );
    });
  }
});

/** The options with the hops of a -J value, as the CLI builds them. */
async function withJumpHosts(o: TunnelOptions, jump: string, _ctx: object): Promise<TunnelOptions> {
  return { ...o, jumpHosts: await resolveJumpHosts(jump) };
}

describe("jump hosts through OpenSSH sshd", () => {
  let bastion: Sshd;
  let target: Sshd;
  let echo: Listening<net.Server>;
  let knownHosts: string;
  const tunnels: Tunnel[] = [];

  before(async () => {
    [bastion, target] = await Promise.all([Sshd.start(), Sshd.start()]);
    echo = await echoServer();
    knownHosts = join(target.dir, "both_known_hosts");
    writeFileSync(knownHosts, bastion.knownHostsLines() + target.knownHostsLines());
  });
  after(async () => {
    await Promise.all(tunnels.map((t) => t.close(0)));
    await echo.close();
    await Promise.all([bastion.close(), target.close()]);
  });

  const jump = () => `${bastion.user}@127.0.0.1:${bastion.port}`;

  function baseOptions(remotePort: number, extra: Partial<TunnelOptions> = {}): TunnelOptions {
    return {
      host: "127.0.0.1",
      port: target.port,
      username: target.user,
      // Each sshd authorizes its own key; both are offered everywhere.
      identityFiles: [bastion.userKey, target.userKey],
      knownHostsFiles: [knownHosts],
      strictHostKeyChecking: "yes",
      serverAliveIntervalMs: 2_000,
      maxBackoffMs: 1_000,
      forwards: [parseRemoteForward(`127.0.0.1:${remotePort}:127.0.0.1:${echo.port}`)],
      ...extra,
    };
  }

  /** The next `name` event, or a failure naming it rather than a hung test. */
  const next = <E extends "disconnected" | "connect-failed">(t: Tunnel, name: E, ms = 15_000) =>
    new Promise<TunnelEventArg<E>>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${name} event within ${ms} ms`)), ms);
      t.once(name, ((e: TunnelEventArg<E>) => {
        clearTimeout(timer);
        resolve(e);
      }) as never);
    });

  const works = async (port: number, size = 4096) => {
    const p = random(size);
    const back = await exchange(port, p, "127.0.0.1", 10_000);
    return sha256(back) === sha256(p);
  };

  /** Connections the bastion's sshd is serving right now (one child per connection). */
  const bastionSessions = () => childPids(bastion.pid).length;

  it("forwards byte-exact through one hop, and the hop's session ends with the tunnel", async () => {
    const before = bastion.log.split("Accepted publickey").length;
    const port = await freePort();
    const t = await openTunnel(await withJumpHosts(baseOptions(port), jump(), {}));
    tunnels.push(t);
    await waitFor(() => t.status().forwards[0]?.state === "bound", "the forward to be bound");
    assert.ok(await works(port, 8 * 1024 * 1024), "8 MiB come back unchanged");
    assert.ok(bastion.log.split("Accepted publickey").length > before, "the bastion authenticated us");
    assert.equal(bastionSessions(), 1);
    await t.close(0);
    await waitFor(() => bastionSessions() === 0, "the bastion session to end");
  });

  it("chains two hops (the bastion, then the bastion again through itself)", async () => {
    const port = await freePort();
    const t = await openTunnel(await withJumpHosts(baseOptions(port), `${jump()},${jump()}`, {}));
    tunnels.push(t);
    await waitFor(() => t.status().forwards[0]?.state === "bound", "the forward to be bound");
    assert.ok(await works(port, 1024 * 1024));
    assert.equal(bastionSessions(), 2);
    await t.close(0);
    await waitFor(() => bastionSessions() === 0, "both hop sessions to end");
  });

  it("comes back through the chain when the bastion's sessions are killed, without leaking hop sessions", async () => {
    const port = await freePort();
    const t = await openTunnel(await withJumpHosts(baseOptions(port), jump(), {}));
    tunnels.push(t);
    try {
      await waitFor(() => works(port), "the tunnel to serve", 15_000);
      for (let i = 0; i < 2; i++) {
        const down = next(t, "disconnected");
        bastion.killSessions();
        await down;
        await waitFor(() => works(port), "the tunnel to serve again after the bastion dropped it", 15_000);
      }
      // The target dropping the session must end the hop session that carried it too.
      for (let i = 0; i < 2; i++) {
        const down = next(t, "disconnected");
        target.killSessions();
        await down;
        await waitFor(() => works(port), "the tunnel to serve again after the target dropped it", 15_000);
      }
      await waitFor(() => bastionSessions() === 1, "exactly one bastion session", 10_000);
    } finally {
      await t.close(0);
    }
    await waitFor(() => bastionSessions() === 0, "the bastion session to end");
  });

  it("refuses a hop whose host key is unknown, naming the hop, and does not retry", async () => {
    const onlyTarget = join(target.dir, "only_target_known_hosts");
    writeFileSync(onlyTarget, target.knownHostsLines());
    const t = await openTunnel(
      await withJumpHosts(baseOptions(await freePort(), { knownHostsFiles: [onlyTarget] }), jump(), {}),
    );
    tunnels.push(t);
    t.on("error", () => {});
    const err = await t.done;
    assert.ok(err instanceof RevtunError);
    assert.equal(err.code, "HOSTKEY_UNKNOWN");
    assert.match(err.message, new RegExp(`jump host ${bastion.user}@127\\.0\\.0\\.1:${bastion.port}: `));
    assert.match(err.message, new RegExp(`host key for \\[127\\.0\\.0\\.1\\]:${bastion.port} is not known`));
    await waitFor(() => bastionSessions() === 0, "no bastion session left");
  });

  it("a hop refusing our keys stops the tunnel with AUTH naming the hop, as the target would", async () => {
    const t = await openTunnel(
      await withJumpHosts(baseOptions(await freePort(), { identityFiles: [target.userKey] }), jump(), {}),
    );
    tunnels.push(t);
    t.on("error", () => {});
    const err = await t.done;
    assert.ok(err instanceof RevtunError, String(err));
    assert.equal(err.code, "AUTH");
    assert.match(
      err.message,
      new RegExp(`^jump host ${bastion.user}@127\\.0\\.0\\.1:${bastion.port}: permission denied`),
    );
    assert.ok(err.message.includes(target.userKey), "names the key offered");
  });

  it("a CONNECT error names the hop when the bastion is not there, and is retried", async () => {
    const dead = await freePort();
    const t = await openTunnel(
      await withJumpHosts(baseOptions(await freePort()), `${bastion.user}@127.0.0.1:${dead}`, {}),
    );
    tunnels.push(t);
    try {
      const failed = await next(t, "connect-failed");
      assert.ok(failed.error instanceof RevtunError, String(failed.error));
      assert.equal(failed.error.code, "CONNECT");
      assert.equal(
        failed.error.message,
        `jump host ${bastion.user}@127.0.0.1:${dead}: cannot connect to [127.0.0.1]:${dead}: connection refused`,
      );
      await next(t, "connect-failed");
    } finally {
      await t.close(0);
    }
  });

  describe("CLI -J", () => {
    const args = (kh: string, remote: string) => [
      "-N",
      "-F",
      "none",
      "-J",
      jump(),
      "-p",
      String(target.port),
      "-i",
      bastion.userKey,
      "-i",
      target.userKey,
      "-o",
      `UserKnownHostsFile=${kh}`,
      "-o",
      "StrictHostKeyChecking=yes",
      "-R",
      `${remote}:127.0.0.1:${echo.port}`,
      `${target.user}@127.0.0.1`,
    ];

    it("forwards through the bastion and exits 0 on SIGTERM, leaving no hop session", async () => {
      const r = new Revtun(args(knownHosts, "127.0.0.1:0"));
      try {
        const m = await r.waitFor(/Allocated port (\d+) for remote forward to 127\.0\.0\.1:(\d+)/);
        assert.ok(await works(Number(m[1]), 2 * 1024 * 1024));
        assert.equal(bastionSessions(), 1);
      } finally {
        assert.equal(await r.stop("SIGTERM"), 0);
      }
      await waitFor(() => bastionSessions() === 0, "the bastion session to end");
    });

    it("a changed hop host key exits 255 with HOSTKEY's message naming the hop", async () => {
      const other = keygen(join(target.dir, "impostor"));
      const kh = join(target.dir, "changed_known_hosts");
      writeFileSync(kh, `[127.0.0.1]:${bastion.port} ${other}\n${target.knownHostsLines()}`);
      const r = await runRevtun(args(kh, `127.0.0.1:${await freePort()}`));
      assert.equal(r.code, 255, r.stderr);
      assert.match(r.stderr, new RegExp(`jump host ${bastion.user}@127\\.0\\.0\\.1:${bastion.port}: `));
      assert.match(r.stderr, /has CHANGED/);
      assert.match(r.stderr, new RegExp(bastion.fingerprint().replace(/[+/]/g, "\\$&")));
      assert.ok(readFileSync(kh, "utf8").includes(other), "known_hosts is left alone");
    });
  });
});
