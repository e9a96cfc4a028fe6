/**
 * `revtun relay --workers 2 --fleet ...` as a whole, through bin/revtun: a
 * revtun agent binds a name on whichever worker accepts it; operators'
 * connections on the shared port reach it whichever worker accepts them
 * (one of the two carries it over a peer hop); a worker killed with -9 is
 * replaced and the name is reachable again through every connection; SIGTERM
 * to the primary stops every worker and exits 0.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Redis } from "ioredis";
import ssh2 from "ssh2";
import { Revtun } from "../helpers/cli.js";
import { ed, fleetRelayArgs, reach, sleep } from "../helpers/fleet.js";
import { echoServer, type Listening, random } from "../helpers/net.js";
import { alive } from "../helpers/proc.js";
import { RedisServer } from "../helpers/redis.js";
import { freePort } from "../helpers/sshd.js";

/** Worker index -> pid, from the primary's "worker N started, pid P" lines (the latest per index). */
function workerPids(stderr: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const m of stderr.matchAll(/worker (\d+) started, pid (\d+)/g)) out.set(Number(m[1]), Number(m[2]));
  return out;
}

/** A port whose next `n - 1` ports are free too (worker i serves --admin on port + i). */
async function freeRun(n: number): Promise<number> {
  for (let tries = 0; tries < 50; tries++) {
    const first = await freePort();
    if (first + n - 1 > 65535) continue;
    const rest = await Promise.all(
      Array.from(
        { length: n - 1 },
        (_, i) =>
          new Promise<boolean>((resolve) => {
            const srv = net.createServer();
            srv.once("error", () => resolve(false));
            srv.listen(first + i + 1, "127.0.0.1", () => srv.close(() => resolve(true)));
          }),
      ),
    );
    if (rest.every(Boolean)) return first;
  }
  throw new Error(`no run of ${n} free ports`);
}

/** The key comments of the sessions worker `index`'s admin page lists. */
async function sessionsOn(port: number): Promise<string[]> {
  const res = await fetch(`http://127.0.0.1:${port}/api/sessions`);
  assert.equal(res.status, 200);
  const body = (await res.json()) as { sessions: { keyComment: string }[] };
  return body.sessions.map((x) => x.keyComment);
}

const count = (text: string, re: RegExp) => text.match(new RegExp(re.source, "g"))?.length ?? 0;

/** `n` operator connections in a row, each echoing 20 kB; returns how many echoed byte-exact. */
async function reachN(port: number, key: string, n: number): Promise<number> {
  let ok = 0;
  for (let i = 0; i < n; i++) {
    const data = random(20_000);
    const got = await reach(port, key, data).catch(() => Buffer.alloc(0));
    if (got.equals(data)) ok++;
  }
  return ok;
}

describe("revtun relay --workers 2 --fleet, through bin/revtun", () => {
  let redis: RedisServer;
  let dir: string;
  let echo: Listening<net.Server>;
  const procs: Revtun[] = [];
  before(async () => {
    redis = await RedisServer.start();
    dir = mkdtempSync(join(tmpdir(), "revtun-workers-cli-"));
    echo = await echoServer();
  });
  after(async () => {
    await Promise.all(procs.map((p) => p.stop("SIGKILL")));
    await echo.close();
    await redis.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /**
   * Two workers, and three: with three, a peer hop through the shared port
   * lands on a worker that does not hold the name 2 times in 3 (measured
   * before each worker had a peer port of its own: 6 of 10 echoed).
   */
  for (const WORKERS of [2, 3])
    test(`--workers ${WORKERS}: a name is reachable through the shared port from every worker, after kill -9 of one, and SIGTERM stops all`, async () => {
      const dev = ed();
      const op = ed();
      const hostKey = ed();
      const fleetKey = join(dir, "fleet_key");
      writeFileSync(fleetKey, ed().private, { mode: 0o600 });
      const hostKeyFile = join(dir, "host_key");
      writeFileSync(hostKeyFile, hostKey.private, { mode: 0o600 });
      const devFile = join(dir, "device_key");
      writeFileSync(devFile, dev.private, { mode: 0o600 });
      const keysFile = join(dir, "authorized_keys");
      writeFileSync(
        keysFile,
        `restrict,port-forwarding,permitlisten="device42:22" ${dev.public} device\n` +
          `restrict,permitopen="device*:22" ${op.public} operator\n`,
      );
      const port = await freePort();
      const adminPort = await freeRun(WORKERS);
      const knownHosts = join(dir, "known_hosts");
      const pub = ssh2.utils.parseKey(hostKey.private);
      assert.ok(!(pub instanceof Error));
      writeFileSync(knownHosts, `[127.0.0.1]:${port} ${pub.type} ${pub.getPublicSSH().toString("base64")}\n`);

      const primary = new Revtun(
        fleetRelayArgs({
          port,
          hostKey: hostKeyFile,
          authorizedKeys: keysFile,
          redisUrl: redis.url,
          fleetKey,
          relayId: "wk",
          extra: ["--workers", String(WORKERS), "--admin", `127.0.0.1:${adminPort}`],
        }),
      );
      procs.push(primary);
      const t0 = performance.now();
      await primary.waitFor(new RegExp(`all ${WORKERS} workers ready`), 20_000);
      assert.equal(count(primary.stderr, /relay listening/), WORKERS, primary.stderr);
      console.log(
        `# ${WORKERS} workers ready ${Math.round(performance.now() - t0)} ms after the primary started`,
      );
      // Each worker's peers dial a port of its own, not the shared one.
      const peerPorts = [...primary.stderr.matchAll(/fleet peers dial 127\.0\.0\.1:(\d+)/g)].map((m) => m[1]);
      assert.equal(new Set(peerPorts).size, WORKERS, primary.stderr);
      assert.ok(!peerPorts.includes(String(port)));
      const first = workerPids(primary.stderr);
      assert.equal(first.size, WORKERS, primary.stderr);
      assert.ok(!first.has(process.pid));

      const agent = new Revtun([
        "-N",
        "-F",
        "none",
        "-p",
        String(port),
        "-i",
        devFile,
        "-o",
        `UserKnownHostsFile=${knownHosts}`,
        "-o",
        "StrictHostKeyChecking=yes",
        "-R",
        `device42:22:127.0.0.1:${echo.port}`,
        "device@127.0.0.1",
      ]);
      procs.push(agent);
      await primary.waitFor(/holds tunnel device42:22/, 15_000);

      // Which worker holds it: the registry says (names:<relayId>).
      const rc = new Redis({ host: "127.0.0.1", port: redis.port, lazyConnect: true });
      await rc.connect();
      const holder = async (): Promise<number | undefined> => {
        for (let i = 0; i < WORKERS; i++)
          if (await rc.hexists(`revtun:names:wk-w${i}`, "device42:22")) return i;
        return undefined;
      };
      try {
        let held: number | undefined;
        for (let i = 0; i < 50 && held === undefined; i++) {
          held = await holder();
          if (held === undefined) await sleep(20);
        }
        assert.ok(held !== undefined, "the name is in the registry");
        // Worker i's admin page (port + i) lists worker i's sessions: the device on the holder's only.
        for (let i = 0; i < WORKERS; i++)
          assert.deepEqual(
            await sessionsOn(adminPort + i),
            i === held ? ["device"] : [],
            `worker ${i}'s admin page`,
          );

        const ok = await reachN(port, op.private, 10);
        const via = count(primary.stderr, /tunnel device42:22 .* via relay wk-w\d+: /);
        console.log(`# ${ok}/10 operator connections echoed, ${via} of them over the peer hop`);
        assert.equal(ok, 10, primary.stderr.slice(-4000));
        assert.ok(via >= 1 && via <= 9, `${via} of 10 over the peer hop: both workers took connections`);
        // Each connection's record says it closed normally (not "write after end").
        const ends = [
          ...primary.stderr.matchAll(/tunnel device42:22 for .*?: ([^,]*), \d+ bytes to the device/g),
        ];
        assert.deepEqual([...new Set(ends.map((m) => m[1]))], ["closed"], ends.map((m) => m[0]).join("\n"));

        // kill -9 the worker that holds the name: the agent reconnects, the slot is refilled.
        const victim = first.get(held) as number;
        process.kill(victim, "SIGKILL");
        const killedAt = performance.now();
        let back = Number.NaN;
        for (let i = 0; i < 100 && performance.now() - killedAt < 15_000; i++) {
          if (workerPids(primary.stderr).get(held) !== victim && (await reachN(port, op.private, 4)) === 4) {
            back = performance.now() - killedAt;
            break;
          }
          await sleep(100);
        }
        console.log(
          `# after kill -9 of worker ${held}: reachable through every worker again in ${Math.round(back)} ms`,
        );
        assert.ok(back < 10_000, `${back} ms\n${primary.stderr.slice(-4000)}`);
        assert.equal(alive(victim), false);
        assert.match(
          primary.stderr,
          new RegExp(`worker ${held} \\(pid ${victim}\\) exited SIGKILL; restarting in`),
        );
        assert.equal(await reachN(port, op.private, 10), 10, primary.stderr.slice(-4000));
      } finally {
        rc.disconnect();
      }

      const last = workerPids(primary.stderr);
      assert.equal(last.size, WORKERS);
      // SIGHUP to the primary reaches every worker.
      process.kill(primary.proc.pid as number, "SIGHUP");
      for (let i = 0; i < 100 && count(primary.stderr, /SIGHUP: reloading authorized keys/) < WORKERS; i++)
        await sleep(20);
      assert.equal(
        count(primary.stderr, /SIGHUP: reloading authorized keys/),
        WORKERS,
        primary.stderr.slice(-3000),
      );
      const stopAt = performance.now();
      const code = await primary.stop("SIGTERM");
      const stopMs = performance.now() - stopAt;
      console.log(`# SIGTERM to the primary: exit ${code} after ${Math.round(stopMs)} ms`);
      assert.equal(code, 0, primary.stderr.slice(-4000));
      // Each worker stopped by itself, under the supervisor's 5 s SIGKILL grace.
      assert.ok(stopMs < 4000, `${stopMs} ms`);
      assert.equal(count(primary.stderr, /exited with code 0/), WORKERS, primary.stderr.slice(-3000));
      for (const pid of last.values()) {
        for (let i = 0; i < 50 && alive(pid); i++) await sleep(20);
        assert.equal(alive(pid), false, `worker ${pid} is gone after the primary exited`);
      }
      await agent.stop();
    });
});
