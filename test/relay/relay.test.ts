/**
 * The relay against the real OpenSSH client: remote forwards, data
 * integrity with half-close, refusals, takeover, reload.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { join } from "node:path";
import { describe, test } from "node:test";
import {
  bannerServer,
  exchange,
  firstLine,
  hashServer,
  listen,
  nextEvent,
  payload,
  sha256,
  sleep,
  withFixture,
  withTimeout,
} from "../helpers/relay.js";
import { freePort } from "../helpers/sshd.js";

const MiB = 1024 * 1024;

describe("relay with the OpenSSH client", () => {
  test("-R 0 allocates a port and carries several MiB each way, byte-exact, across a half-close", () =>
    withFixture(async (f) => {
      const k = f.key();
      const relay = await f.start([k.pub]);
      const reply = payload(6 * MiB, "reply");
      const target = hashServer(reply);
      const targetPort = await listen(f.track(target.server));

      const ssh = f.ssh(k, ["-N", "-R", `0:127.0.0.1:${targetPort}`]);
      const m = await ssh.waitStderr(/Allocated port (\d+) for remote forward to 127\.0\.0\.1:(\d+)/, 10_000);
      const port = Number(m[1]);
      assert.equal(Number(m[2]), targetPort);
      assert.deepEqual(
        relay.forwards().map((x) => [x.address, x.requestedPort, x.port]),
        [["localhost", 0, port]],
      );

      const sent = payload(7 * MiB, "request");
      for (let i = 0; i < 2; i++) {
        const got = await exchange(port, sent);
        const r = target.results[i];
        assert.ok(r, "the target saw the client's EOF");
        assert.equal(r.receivedBytes, sent.length);
        assert.equal(r.receivedHash, sha256(sent));
        assert.equal(
          got.length,
          reply.length,
          "the whole reply arrived after the client shut its write side",
        );
        assert.equal(sha256(got), sha256(reply));
      }

      await sleep(100);
      const text = await relay.registry.metrics();
      const toAgent = Number(
        /revtun_relay_forwarded_bytes_total\{direction="to_agent"\} (\d+)/.exec(text)?.[1],
      );
      const fromAgent = Number(
        /revtun_relay_forwarded_bytes_total\{direction="from_agent"\} (\d+)/.exec(text)?.[1],
      );
      assert.equal(toAgent, 2 * sent.length);
      assert.equal(fromAgent, 2 * reply.length);
      assert.match(text, /revtun_relay_forwarded_connections_total 2/);
      assert.match(text, /revtun_relay_sessions 1/);
      assert.match(text, /revtun_relay_forwards_bound 1/);
    }));

  test("a fixed port; cancel-tcpip-forward and session close release ports", () =>
    withFixture(async (f) => {
      const k = f.key();
      const relay = await f.start([k.pub]);
      const target = bannerServer("fixed");
      const targetPort = await listen(f.track(target.server));
      const port = await freePort();
      const ctl = join(f.dir, "ctl");
      const bound = nextEvent(relay, "forward-bound", (e) => e.port === port);
      const master = f.ssh(k, [
        "-N",
        "-M",
        "-S",
        ctl,
        "-o",
        "ExitOnForwardFailure=yes",
        "-R",
        `${port}:127.0.0.1:${targetPort}`,
      ]);
      await bound;
      assert.equal(await firstLine(port), "fixed");

      // A second forward added and cancelled through the control socket
      // arrives as tcpip-forward / cancel-tcpip-forward on the same session.
      const port2 = await freePort();
      const bound2 = nextEvent(relay, "forward-bound", (e) => e.port === port2);
      const add = f.ssh(k, ["-S", ctl, "-O", "forward", "-R", `${port2}:127.0.0.1:${targetPort}`]);
      assert.equal(await add.waitExit(10_000), 0);
      await bound2;
      assert.equal(await firstLine(port2), "fixed");
      const cancelled = nextEvent(relay, "forward-released", (e) => e.port === port2);
      const cancel = f.ssh(k, ["-S", ctl, "-O", "cancel", "-R", `${port2}:127.0.0.1:${targetPort}`]);
      assert.equal(await cancel.waitExit(10_000), 0);
      assert.equal((await cancelled)[0].reason, "cancelled");
      await assert.rejects(firstLine(port2, 2_000), /ECONNREFUSED/);
      assert.equal(await firstLine(port), "fixed", "the other forward is untouched");

      const released = nextEvent(relay, "forward-released", (e) => e.port === port);
      master.signal("SIGTERM");
      await master.waitExit(5_000);
      assert.equal((await released)[0].reason, "session-closed");
      await assert.rejects(firstLine(port, 2_000), /ECONNREFUSED/);
    }));

  test("permitlisten: a listed port is granted, another is refused (ExitOnForwardFailure exits non-zero)", () =>
    withFixture(async (f) => {
      const k = f.key();
      const allowed = await freePort();
      const other = await freePort();
      const relay = await f.start([`permitlisten="localhost:${allowed}" ${k.pub}`]);
      const target = bannerServer("permit");
      const targetPort = await listen(f.track(target.server));

      const refused = nextEvent(relay, "forward-refused", (e) => e.port === other);
      const bad = f.ssh(k, [
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-R",
        `${other}:127.0.0.1:${targetPort}`,
      ]);
      assert.notEqual(await bad.waitExit(10_000), 0);
      assert.match(bad.stderr, new RegExp(`remote port forwarding failed for listen port ${other}`));
      const [e] = await refused;
      assert.match(e.reason, /permitlisten/);
      assert.ok(e.fingerprint.startsWith("SHA256:") && e.peer.startsWith("127.0.0.1:"));

      const bound = nextEvent(relay, "forward-bound", (x) => x.port === allowed);
      f.ssh(k, ["-N", "-o", "ExitOnForwardFailure=yes", "-R", `${allowed}:127.0.0.1:${targetPort}`]);
      await bound;
      assert.equal(await firstLine(allowed), "permit");
    }));

  test("restrict without port-forwarding refuses every forward", () =>
    withFixture(async (f) => {
      const k = f.key();
      await f.start([`restrict ${k.pub}`]);
      const ssh = f.ssh(k, ["-N", "-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:9"]);
      assert.notEqual(await ssh.waitExit(10_000), 0);
      assert.doesNotMatch(ssh.stderr, /Allocated port/);
    }));

  test("a command is refused with the relay's message and runs nothing", () =>
    withFixture(async (f) => {
      const k = f.key();
      const relay = await f.start([k.pub]);
      const refused = nextEvent(relay, "channel-refused", (e) => e.type === "session");
      const ssh = f.ssh(k, [], ["echo", "hi"]);
      const code = await ssh.waitExit(10_000);
      assert.notEqual(code, 0);
      assert.doesNotMatch(ssh.stdout, /hi/);
      assert.match(
        ssh.stderr,
        /administratively prohibited: revtun relay: forwarding only, no shell or commands/,
      );
      await refused;
    }));

  test("-L carries nothing: the local connection is closed without data", () =>
    withFixture(async (f) => {
      const k = f.key();
      const relay = await f.start([k.pub]);
      const target = bannerServer("secret");
      const targetPort = await listen(f.track(target.server));
      const lport = await freePort();
      const opened = nextEvent(relay, "session-opened");
      f.ssh(k, ["-N", "-L", `${lport}:127.0.0.1:${targetPort}`]);
      await opened;
      const refused = nextEvent(relay, "channel-refused", (e) => e.type === "direct-tcpip");
      // ssh opens its -L listener after authentication; poll until it accepts.
      let received: string | undefined;
      const deadline = Date.now() + 5_000;
      while (received === undefined) {
        try {
          received = await firstLine(lport, 5_000);
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          // ssh may close the refused connection with a reset: still no data.
          if (code === "ECONNRESET") received = "";
          else if (code !== "ECONNREFUSED" || Date.now() > deadline) throw err;
          else await sleep(50);
        }
      }
      assert.equal(received, "");
      await refused;
      assert.equal(target.connections(), 0);
    }));

  test("an unknown key gets Permission denied (exit 255) after a delay, and is logged with its fingerprint", () =>
    withFixture(async (f) => {
      const known = f.key();
      const stranger = f.key();
      const relay = await f.start([known.pub]);
      const refused = nextEvent(relay, "auth-refused");
      const t0 = Date.now();
      const ssh = f.ssh(stranger, ["-N", "-R", "0:127.0.0.1:9"]);
      assert.equal(await ssh.waitExit(10_000), 255);
      assert.ok(Date.now() - t0 >= 150, "failure answered after a delay");
      assert.match(ssh.stderr, /Permission denied \(publickey\)/);
      const [e] = await refused;
      assert.equal(e.reason, "unknown-key");
      assert.ok(e.fingerprint?.startsWith("SHA256:"));
      assert.match(e.peer, /^127\.0\.0\.1:\d+$/);
      assert.match(
        await relay.registry.metrics(),
        /revtun_relay_auth_failures_total\{reason="unknown-key"\} 1/,
      );
    }));

  test("from= refuses a key from an address outside the list", () =>
    withFixture(async (f) => {
      const k = f.key();
      const relay = await f.start([`from="10.0.0.0/8,!127.0.0.1" ${k.pub}`]);
      const refused = nextEvent(relay, "auth-refused");
      const ssh = f.ssh(k, ["-N"]);
      assert.equal(await ssh.waitExit(10_000), 255);
      assert.equal((await refused)[0].reason, "from-not-allowed");
    }));

  test("a stopped agent's port is taken over by a new session of the same key within 3 s", (t) =>
    withFixture(async (f) => {
      const k = f.key();
      const relay = await f.start([k.pub]);
      const a = bannerServer("A");
      const b = bannerServer("B");
      const aPort = await listen(f.track(a.server));
      const bPort = await listen(f.track(b.server));
      const port = await freePort();

      const boundA = nextEvent(relay, "forward-bound", (e) => e.port === port);
      const sshA = f.ssh(k, ["-N", "-R", `${port}:127.0.0.1:${aPort}`]);
      const [first] = await boundA;
      assert.equal(await firstLine(port), "A");
      sshA.signal("SIGSTOP");

      const t0 = Date.now();
      const takeover = nextEvent(relay, "forward-taken-over", (e) => e.port === port);
      const closedA = nextEvent(relay, "session-closed", (e) => e.sessionId === first.sessionId);
      f.ssh(k, ["-N", "-o", "ExitOnForwardFailure=yes", "-R", `${port}:127.0.0.1:${bPort}`]);
      let line = "";
      while (line !== "B") {
        assert.ok(Date.now() - t0 < 3_000, `port not taken over within 3 s (last answer "${line}")`);
        line = await firstLine(port, 1_000).catch(() => "");
        if (line !== "B") await sleep(50);
      }
      t.diagnostic(`takeover: new session answering on the port ${Date.now() - t0} ms after ssh started`);
      const [e] = await takeover;
      assert.equal(e.previousSessionId, first.sessionId);
      // The stale session held nothing else, so it is closed (destroyed after the grace period).
      const [closed] = await closedA;
      assert.match(closed.reason, /taken over/);
      assert.equal(relay.authenticatedSessions().length, 1);
      sshA.signal("SIGCONT");
      await sshA.kill();
      assert.equal(await firstLine(port), "B");
    }));

  test("another key cannot take a held port", () =>
    withFixture(async (f) => {
      const k1 = f.key();
      const k2 = f.key();
      const relay = await f.start([k1.pub, k2.pub]);
      const a = bannerServer("one");
      const aPort = await listen(f.track(a.server));
      const port = await freePort();
      const bound = nextEvent(relay, "forward-bound", (e) => e.port === port);
      f.ssh(k1, ["-N", "-R", `${port}:127.0.0.1:${aPort}`]);
      await bound;
      const refused = nextEvent(relay, "forward-refused", (e) => e.port === port);
      const intruder = f.ssh(k2, ["-N", "-o", "ExitOnForwardFailure=yes", "-R", `${port}:127.0.0.1:9`]);
      assert.notEqual(await intruder.waitExit(10_000), 0);
      assert.match((await refused)[0].reason, /held by another key/);
      assert.equal(await firstLine(port), "one");
    }));

  test("editing authorized_keys closes the sessions of removed keys and keeps the others", () =>
    withFixture(async (f) => {
      const keep = f.key();
      const drop = f.key();
      const relay = await f.start([keep.pub, drop.pub], { watchAuthorizedKeys: true });
      const opened: number[] = [];
      relay.on("session-opened", (e) => opened.push(e.sessionId));
      const sshKeep = f.ssh(keep, ["-N", "-R", "0:127.0.0.1:9"]);
      const sshDrop = f.ssh(drop, ["-N", "-R", "0:127.0.0.1:9"]);
      await sshKeep.waitStderr(/Allocated port/, 10_000);
      await sshDrop.waitStderr(/Allocated port/, 10_000);
      assert.equal(relay.authenticatedSessions().length, 2);

      const closed = nextEvent(relay, "session-closed", (e) => /no longer authorized/.test(e.reason));
      f.writeKeys([keep.pub]);
      const [e] = await closed;
      assert.equal(e.keyComment, "revtun-test");
      await sshDrop.waitExit(5_000);
      await sleep(200);
      assert.equal(sshKeep.exitCode, undefined, "the remaining key's session stays");
      assert.equal(relay.authenticatedSessions().length, 1);
      assert.match(await relay.registry.metrics(), /revtun_relay_authorized_keys 1/);
    }));

  test("unauthenticated connections are limited and time out", () =>
    withFixture(async (f) => {
      // Long enough that, on a loaded machine, the first two are still
      // unauthenticated when the third connects.
      const relay = await f.start([f.key().pub], {
        handshakeTimeoutMs: 1_500,
        limits: { maxUnauthenticated: 2 },
      });
      const socks: net.Socket[] = [];
      try {
        const refused = nextEvent(relay, "connection-refused");
        const ended = nextEvent(relay, "handshake-ended", (e) => /not authenticated within/.test(e.reason));
        for (let i = 0; i < 3; i++) {
          const s = net.connect({ host: "127.0.0.1", port: f.port });
          s.on("error", () => {});
          s.resume(); // read the relay's version line, so its FIN is seen
          socks.push(s);
          await new Promise((r) => s.once("connect", r));
        }
        assert.match((await refused)[0].reason, /too many unauthenticated/);
        await ended;
        await withTimeout(
          Promise.all(socks.map((s) => (s.destroyed ? undefined : new Promise((r) => s.once("close", r))))),
          5_000,
          "sockets closed by the relay",
        );
      } finally {
        for (const s of socks) s.destroy();
      }
    }));
  test("keepalives drop a stopped client and leave a live one", () =>
    withFixture(async (f) => {
      const k = f.key();
      const relay = await f.start([k.pub], {
        keepaliveIntervalMs: 200,
        keepaliveCountMax: 2,
        closeGraceMs: 200,
      });
      const live = f.ssh(k, ["-N", "-R", "0:127.0.0.1:9"]);
      await live.waitStderr(/Allocated port/, 10_000);
      const stopped = f.ssh(k, ["-N", "-R", "0:127.0.0.1:9"]);
      await stopped.waitStderr(/Allocated port/, 10_000);
      // The later session is the one about to be stopped.
      const [victim] = relay.authenticatedSessions().sort((a, b) => b.id - a.id);
      assert.ok(victim);
      const closed = nextEvent(relay, "session-closed", (e) => e.sessionId === victim.id);
      stopped.signal("SIGSTOP");
      const t0 = Date.now();
      const [e] = await closed;
      assert.match(e.reason, /keepalive timeout/);
      assert.ok(Date.now() - t0 < 3_000);
      assert.equal(live.exitCode, undefined);
      assert.equal(relay.authenticatedSessions().length, 1);
    }));

  test("limits: sessions per key, forwards per session, channels per session", () =>
    withFixture(async (f) => {
      const k = f.key();
      const relay = await f.start([k.pub], {
        limits: { maxSessionsPerKey: 1, maxForwardsPerSession: 1, maxChannelsPerSession: 1 },
      });
      const target = bannerServer("lim");
      const targetPort = await listen(f.track(target.server));
      const refusedForward = nextEvent(relay, "forward-refused", (e) => /forward limit/.test(e.reason));
      const first = f.ssh(k, ["-N", "-R", `0:127.0.0.1:${targetPort}`, "-R", "0:127.0.0.1:9"]);
      const m = await first.waitStderr(
        /Allocated port (\d+) for remote forward to 127\.0\.0\.1:(\d+)/,
        10_000,
      );
      await refusedForward;
      assert.equal(relay.forwards().length, 1);
      const port = relay.forwards()[0]?.port ?? 0;
      assert.equal(Number(m[1]), port, "the first -R got the port; the second was refused");
      assert.equal(Number(m[2]), targetPort);

      const refusedAuth = nextEvent(relay, "auth-refused", (e) => /too many sessions/.test(e.reason));
      const second = f.ssh(k, ["-N"]);
      assert.equal(await second.waitExit(10_000), 255);
      await refusedAuth;

      // One forwarded connection may be open; a second is closed at once.
      const held = net.connect({ host: "127.0.0.1", port });
      held.on("error", () => {});
      try {
        await new Promise((r) => held.once("data", r));
        const failed = nextEvent(relay, "forwarded-failed", (e) => /channel limit/.test(e.reason));
        assert.equal(await firstLine(port), "");
        await failed;
      } finally {
        held.destroy();
      }
    }));

  test("a forward whose agent-side target refuses closes the public connection", () =>
    withFixture(async (f) => {
      const k = f.key();
      const relay = await f.start([k.pub]);
      const dead = await freePort();
      const ssh = f.ssh(k, ["-N", "-R", `0:127.0.0.1:${dead}`]);
      const port = Number((await ssh.waitStderr(/Allocated port (\d+)/, 10_000))[1]);
      const failed = nextEvent(relay, "forwarded-failed");
      assert.equal(await firstLine(port), "");
      assert.match((await failed)[0].reason, /open failure|refused|failed/i);
      assert.equal(ssh.exitCode, undefined, "the session survives");
    }));

  test("garbage from peers never takes the relay down", () =>
    withFixture(async (f) => {
      const k = f.key();
      const relay = await f.start([k.pub], { handshakeTimeoutMs: 2_000 });
      const junk = [
        Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        Buffer.concat([Buffer.from("SSH-2.0-junk\r\n"), payload(4096, "junk")]),
        Buffer.concat([
          Buffer.from("SSH-2.0-junk\r\n"),
          Buffer.from([0, 0, 0, 12, 4, 20, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0]),
        ]),
        payload(70_000, "noise"),
      ];
      await Promise.all(
        junk.map(
          (data) =>
            new Promise<void>((resolve) => {
              const s = net.connect({ host: "127.0.0.1", port: f.port }, () => s.write(data));
              s.on("error", () => resolve());
              s.on("close", () => resolve());
              s.resume();
              setTimeout(() => {
                s.destroy();
                resolve();
              }, 3_000);
            }),
        ),
      );
      // A reset in the middle of a handshake.
      const r = net.connect({ host: "127.0.0.1", port: f.port }, () => r.resetAndDestroy());
      r.on("error", () => {});
      await sleep(100);
      assert.ok(relay.listening);
      const ssh = f.ssh(k, ["-N", "-R", "0:127.0.0.1:9"]);
      await ssh.waitStderr(/Allocated port/, 10_000);
    }));
});
