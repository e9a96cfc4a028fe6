/**
 * What operators see: /healthz and /metrics, JSON logs, graceful shutdown,
 * and resources that stay flat over thousands of connections.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import type net from "node:net";
import { after, before, describe, it } from "node:test";
import { Revtun } from "../helpers/cli.js";
import { FaultProxy } from "../helpers/fault-proxy.js";
import { echoServer, exchange, httpGet, type Listening, random, sha256, waitFor } from "../helpers/net.js";
import { fdCount, rssKiB } from "../helpers/proc.js";
import { freePort, Sshd } from "../helpers/sshd.js";

describe("observability and shutdown", () => {
  let sshd: Sshd;
  let echo: Listening<net.Server>;
  const base = () => ["-N", ...sshd.clientArgs(), "-o", "ServerAliveInterval=1", "--max-backoff", "2"];

  before(async () => {
    sshd = await Sshd.start();
    echo = await echoServer();
  });
  after(async () => {
    await echo.close();
    await sshd.close();
  });

  const works = async (port: number) => {
    const p = random(1024);
    return sha256(await exchange(port, p, "127.0.0.1", 5_000)) === sha256(p);
  };

  // Deterministic under load: the outage is a blackhole in a FaultProxy between
  // revtun and sshd, so the tunnel stays down (nothing passes, nothing closes)
  // until the test thaws it, and the keepalive is what declares it down.
  it("/healthz flips 200 → 503 → 200 as the tunnel is lost and regained; /metrics tells the same", async () => {
    const proxy = await FaultProxy.start(sshd.port);
    // revtun dials the proxy's port, so known_hosts must name the key under it.
    const knownHosts = `${sshd.knownHosts}.proxy`;
    writeFileSync(knownHosts, sshd.knownHostsLines().replaceAll(`]:${sshd.port} `, `]:${proxy.port} `));
    const port = await freePort();
    const r = new Revtun([
      "-N",
      ...sshd.clientArgs({ port: proxy.port, knownHosts }),
      "-o",
      "ServerAliveInterval=1",
      "-o",
      "ServerAliveCountMax=2",
      // Longer than any wait below: a reconnect attempt into the blackhole never times out during the test.
      "-o",
      "ConnectTimeout=60",
      "--max-backoff",
      "2",
      "--metrics",
      "127.0.0.1:0",
      "-R",
      `127.0.0.1:${port}:127.0.0.1:${echo.port}`,
      `${sshd.user}@127.0.0.1`,
    ]);
    type Healthz = {
      ok: boolean;
      tunnels: Record<
        string,
        { ok: boolean; state: string; error?: string; forwards: { state: string; reason?: string }[] }
      >;
    };
    // Bounded polls, generous for a loaded machine: each returns the first matching response.
    const healthz = (mport: number, status: number, what: string) =>
      waitFor(
        async () => {
          const h = await httpGet(mport, "/healthz");
          return h.status === status ? h : undefined;
        },
        what,
        20_000,
        100,
      );
    try {
      const mport = Number((await r.waitFor(/metrics on http:\/\/127\.0\.0\.1:(\d+)/, 20_000))[1]);
      const up = JSON.parse((await healthz(mport, 200, "/healthz 200 at start")).body) as Healthz;
      assert.equal(up.ok, true);
      assert.equal(Object.values(up.tunnels)[0]?.state, "up");
      const m0 = await httpGet(mport, "/metrics");
      assert.match(m0.body, /^revtun_session_up\{tunnel="[^"]+"\} 1$/m);
      assert.match(m0.body, /^revtun_forwards_bound\{tunnel="[^"]+"\} 1$/m);
      assert.ok(await works(port), "serves through the tunnel");

      // Blackhole: keepalives go unanswered, and ServerAliveInterval 1 × ServerAliveCountMax 2 declares it down.
      proxy.freeze();
      const down = await healthz(mport, 503, "/healthz 503 while the proxy is frozen");
      const body = JSON.parse(down.body) as Healthz;
      assert.equal(body.ok, false);
      const t = Object.values(body.tunnels)[0];
      assert.equal(t?.ok, false);
      assert.notEqual(t?.state, "up");
      // Why: while frozen no reconnect attempt can end (ConnectTimeout 60), so the error is the keepalive's.
      assert.equal(
        t?.error,
        `no answer from [127.0.0.1]:${proxy.port} for 3 s (ServerAliveInterval 1 × ServerAliveCountMax 2)`,
      );
      assert.deepEqual(
        t?.forwards.map((f) => [f.state, f.reason]),
        [["pending", "session down"]],
      );
      await r.waitFor(/disconnected: no answer from/, 20_000);
      const m1 = await httpGet(mport, "/metrics");
      assert.match(m1.body, /^revtun_session_up\{tunnel="[^"]+"\} 0$/m);
      assert.match(m1.body, /^revtun_forward_up\{tunnel="[^"]+",forward="[^"]+"\} 0$/m);

      // The network returns: the frozen connections are reset, and revtun reconnects and re-binds.
      proxy.thaw();
      const back = JSON.parse((await healthz(mport, 200, "/healthz 200 after the thaw")).body) as Healthz;
      assert.equal(back.ok, true);
      assert.equal(Object.values(back.tunnels)[0]?.state, "up");
      assert.equal(Object.values(back.tunnels)[0]?.error, undefined);
      assert.ok(await works(port), "serves through the tunnel again");
      const m2 = await httpGet(mport, "/metrics");
      assert.match(m2.body, /^revtun_session_up\{tunnel="[^"]+"\} 1$/m);
      assert.match(m2.body, /^revtun_forward_up\{tunnel="[^"]+",forward="[^"]+"\} 1$/m);
      assert.match(m2.body, /^revtun_reconnects_total\{tunnel="[^"]+"\} [1-9]/m);
    } finally {
      proxy.thaw();
      assert.equal(await r.stop(), 0, r.stderr);
      await proxy.close();
    }
  });

  it("writes one JSON object per line with --log-format json", async () => {
    const r = new Revtun([
      ...base(),
      "--log-format",
      "json",
      "-R",
      `127.0.0.1:0:127.0.0.1:${echo.port}`,
      `${sshd.user}@127.0.0.1`,
    ]);
    try {
      await r.waitFor(/"event":"forward-bound"/);
    } finally {
      await r.stop();
    }
    const lines = r.stderr.split("\n").filter((l) => l.startsWith("{"));
    assert.ok(lines.length >= 3);
    const events = lines.map((l) => (JSON.parse(l) as { event?: string; msg?: string }).event);
    for (const e of ["connecting", "connected", "forward-bound"])
      assert.ok(events.includes(e), `${e} in ${events}`);
  });

  it("on SIGTERM stops taking connections, lets an open one finish within the grace period, exits 0", async () => {
    const r = new Revtun([
      ...base(),
      "--grace",
      "5",
      "-R",
      `127.0.0.1:0:127.0.0.1:${echo.port}`,
      `${sshd.user}@127.0.0.1`,
    ]);
    const port = Number((await r.waitFor(/Allocated port (\d+)/))[1]);
    const { connect } = await import("node:net");
    const s = connect({ host: "127.0.0.1", port, allowHalfOpen: true });
    await new Promise((res) => s.once("connect", res));
    s.write("before ");
    await new Promise((res) => s.once("data", res));
    r.proc.kill("SIGTERM");
    await r.waitFor(/stopping \(grace 5 s\)/);
    await waitFor(
      async () =>
        !(await exchange(port, Buffer.from("x"), "127.0.0.1", 1_000).then(
          () => true,
          () => false,
        )),
      "new connections refused",
      5_000,
    );
    // The open connection still works until it ends.
    const rest: Buffer[] = [];
    s.on("data", (d: Buffer) => rest.push(d));
    s.end("after");
    await new Promise((res) => s.once("end", res));
    assert.equal(Buffer.concat(rest).toString(), "after");
    const { code } = await r.exited;
    assert.equal(code, 0);
  });

  it("an idle agent exits at once on SIGTERM", async () => {
    const r = new Revtun([...base(), "-R", `127.0.0.1:0:127.0.0.1:${echo.port}`, `${sshd.user}@127.0.0.1`]);
    await r.waitFor(/Allocated port/);
    const t0 = Date.now();
    assert.equal(await r.stop(), 0);
    assert.ok(Date.now() - t0 < 2_000, `exited after ${Date.now() - t0} ms`);
  });

  it("keeps file descriptors and memory flat over 2,000 forwarded connections", async () => {
    const r = new Revtun([...base(), "-R", `127.0.0.1:0:127.0.0.1:${echo.port}`, `${sshd.user}@127.0.0.1`]);
    try {
      const port = Number((await r.waitFor(/Allocated port (\d+)/))[1]);
      const pid = r.proc.pid ?? 0;
      const batch = async (n: number) => {
        for (let i = 0; i < n; i += 20) {
          await Promise.all(
            Array.from({ length: 20 }, async () => {
              const p = random(512);
              assert.equal(sha256(await exchange(port, p)), sha256(p));
            }),
          );
        }
      };
      await batch(200); // warm up: JIT, buffers, pools
      await new Promise((res) => setTimeout(res, 300));
      const fd0 = fdCount(pid);
      const rss0 = rssKiB(pid);
      await batch(2_000);
      await new Promise((res) => setTimeout(res, 500));
      const fd1 = fdCount(pid);
      const rss1 = rssKiB(pid);
      assert.ok(fd1 <= fd0 + 2, `descriptors ${fd0} → ${fd1}`);
      assert.ok(rss1 - rss0 < 40 * 1024, `RSS ${rss0} → ${rss1} KiB`);
    } finally {
      await r.stop();
    }
  });
});
