/**
 * What operators see: /healthz and /metrics, JSON logs, graceful shutdown,
 * and resources that stay flat over thousands of connections.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import type net from "node:net";
import { after, before, describe, it } from "node:test";
import { Revtun } from "../helpers/cli.js";
import { echoServer, exchange, httpGet, type Listening, random, sha256, waitFor } from "../helpers/net.js";
import { freePort, Sshd } from "../helpers/sshd.js";

const fdCount = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;
const rssKiB = (pid: number) =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? Number.NaN);

describe("observability and shutdown", () => {
  let sshd: Sshd;
  let echo: Listening<net.Server>;
  const base = () => [
    "-N",
    "-p",
    String(sshd.port),
    "-i",
    sshd.userKey,
    "-o",
    `UserKnownHostsFile=${sshd.knownHosts}`,
    "-o",
    "ServerAliveInterval=1",
    "--max-backoff",
    "2",
  ];

  before(async () => {
    sshd = await Sshd.start();
    echo = await echoServer();
  });
  after(async () => {
    await echo.close();
    await sshd.close();
  });

  // Skipped: racy under load (revtun may re-bind before the holder ssh does); the same flip is asserted through
  // Tunnel.healthy() in permanence.test.ts. To be made deterministic with the fault proxy.
  it("/healthz flips 200 → 503 → 200 as a forward is lost and regained; /metrics tells the same", {
    skip: "racy: see comment",
  }, async () => {
    const port = await freePort();
    const r = new Revtun([
      ...base(),
      "--metrics",
      "127.0.0.1:0",
      "-R",
      `127.0.0.1:${port}:127.0.0.1:${echo.port}`,
      `${sshd.user}@127.0.0.1`,
    ]);
    let holder: ChildProcess | undefined;
    try {
      const mport = Number((await r.waitFor(/metrics on http:\/\/127\.0\.0\.1:(\d+)/))[1]);
      await waitFor(async () => (await httpGet(mport, "/healthz")).status === 200, "healthy");
      const up = await httpGet(mport, "/metrics");
      assert.match(up.body, /^revtun_session_up\{tunnel="[^"]+"\} 1$/m);
      assert.match(up.body, /^revtun_forwards_bound\{tunnel="[^"]+"\} 1$/m);

      // Kill the session and hold its port with another client before revtun returns.
      sshd.killSessions();
      holder = spawn(
        "ssh",
        [
          "-F",
          "/dev/null",
          "-N",
          "-o",
          "BatchMode=yes",
          "-o",
          `UserKnownHostsFile=${sshd.knownHosts}`,
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
      const down = await waitFor(
        async () => {
          const h = await httpGet(mport, "/healthz");
          return h.status === 503 && h.body.includes("failed") ? h : undefined;
        },
        "503 with the failed forward",
        15_000,
      );
      const body = JSON.parse(down.body) as {
        ok: boolean;
        tunnels: Record<string, { forwards: { reason?: string }[] }>;
      };
      assert.equal(body.ok, false);
      const fwd = Object.values(body.tunnels)[0]?.forwards[0];
      assert.match(fwd?.reason ?? "", /refused to listen on 127\.0\.0\.1:\d+/);
      const m = await httpGet(mport, "/metrics");
      assert.match(m.body, /^revtun_forward_up\{tunnel="[^"]+",forward="[^"]+"\} 0$/m);
      assert.match(m.body, /^revtun_reconnects_total\{tunnel="[^"]+"\} [1-9]/m);

      holder.kill("SIGTERM");
      await waitFor(async () => (await httpGet(mport, "/healthz")).status === 200, "healthy again", 10_000);
      assert.match(
        r.stderr,
        /remote port forwarding failed for 127\.0\.0\.1:\d+:127\.0\.0\.1:\d+: .*; retrying in \d+ ms/,
      );
    } finally {
      holder?.kill("SIGKILL");
      assert.equal(await r.stop(), 0);
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
