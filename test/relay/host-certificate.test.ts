/**
 * --host-certificate (sshd's HostCertificate): stock ssh that trusts only
 * an `@cert-authority` line, with StrictHostKeyChecking=yes, connects to
 * the relay, alone and with --workers in a fleet; a certificate for
 * another key, an expired one or a user certificate stops the relay at
 * start with exit 2 and one line.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { relayCommand } from "../../src/cli/relay-command.js";
import { Relay } from "../../src/relay/index.js";
import { loadOrCreateHostKey } from "../../src/shared/keys.js";
import { lineOf, TestCa } from "../helpers/ca.js";
import { Revtun, runInProcess } from "../helpers/cli.js";
import { device, ed, fleetRelayArgs, reach } from "../helpers/fleet.js";
import { random } from "../helpers/net.js";
import { RedisServer } from "../helpers/redis.js";
import { nextEvent, RelayFixture, SshProc } from "../helpers/relay.js";
import { freePort } from "../helpers/sshd.js";

describe("--host-certificate", () => {
  const fx = new RelayFixture();
  const ca = new TestCa();
  const hostCa = ca.key("ed25519", "host-ca");
  const otherCa = ca.key("ed25519", "other-ca");
  const hostKey = join(fx.dir, "host_ed25519");
  const env = { ...process.env };
  delete env.SSH_AUTH_SOCK;
  const procs: Array<{ kill(): Promise<void> }> = [];

  /** Stock ssh trusting only `@cert-authority [127.0.0.1]:* <ca>`, strict host key checking. */
  function ssh(port: number, user: string, caFile: string): SshProc {
    const known = join(fx.dir, `known_${Math.random().toString(36).slice(2)}`);
    writeFileSync(known, `@cert-authority [127.0.0.1]:* ${lineOf(`${caFile}.pub`)}\n`);
    const p = new SshProc(
      spawn(
        "ssh",
        [
          "-F",
          "/dev/null",
          "-N",
          "-o",
          `UserKnownHostsFile=${known}`,
          "-o",
          "StrictHostKeyChecking=yes",
          "-o",
          "BatchMode=yes",
          "-o",
          "IdentitiesOnly=yes",
          "-i",
          user,
          "-p",
          String(port),
          "relayuser@127.0.0.1",
        ],
        { stdio: ["ignore", "pipe", "pipe"], env },
      ),
    );
    procs.push(p);
    return p;
  }

  before(async () => {
    await loadOrCreateHostKey(hostKey);
    fx.writeKeys([fx.key().pub]);
  });
  after(async () => {
    await Promise.all(procs.map((p) => p.kill().catch(() => {})));
    await fx.cleanup();
    ca.close();
  });

  test("stock ssh with only an @cert-authority line and StrictHostKeyChecking=yes connects", async () => {
    const cert = ca.sign(hostCa, hostKey, {
      host: true,
      id: "relay-1",
      principals: ["127.0.0.1"],
      validity: "-5m:+1h",
    });
    const u = fx.key();
    await fx.start([u.pub], { hostCertificate: lineOf(cert) });
    const opened = nextEvent(fx.relay, "session-opened");
    const p = ssh(fx.port, u.file, hostCa);
    await opened;
    await p.kill();
    // The same relay to a client trusting another CA: a host key failure, never a login.
    const stranger = ssh(fx.port, u.file, otherCa);
    assert.equal(await stranger.waitExit(10_000), 255);
    assert.match(stranger.stderr, /Host key verification failed/);
  });

  for (const kind of ["ecdsa384", "rsa"] as const)
    test(`a ${kind} host key's certificate: stock ssh connects on the @cert-authority line alone`, async () => {
      const key = ca.key(kind, `relay_${kind}`);
      const cert = ca.sign(hostCa, key, { host: true, id: `relay-${kind}`, principals: ["127.0.0.1"] });
      const u = fx.key();
      fx.writeKeys([u.pub]);
      const relay = new Relay({
        listen: { host: "127.0.0.1", port: 0 },
        hostKey: readFileSync(key, "utf8"),
        hostCertificate: lineOf(cert),
        authorizedKeysFile: fx.authorizedKeys,
        watchAuthorizedKeys: false,
      });
      const { port } = await relay.start();
      try {
        const opened = nextEvent(relay, "session-opened");
        const p = ssh(port, u.file, hostCa);
        await opened;
        await p.kill();
      } finally {
        await relay.close();
      }
    });

  const refusedAtStart = async (certFile: string, re: RegExp) => {
    const port = await freePort();
    const r = await runInProcess(relayCommand, [
      "--listen",
      `127.0.0.1:${port}`,
      "--host-key",
      hostKey,
      "--authorized-keys",
      fx.authorizedKeys,
      "--host-certificate",
      certFile,
    ]);
    assert.equal(r.code, 2, r.stderr);
    // Startup records (host key, keys loaded) may come first; the refusal is one line, the last.
    const lines = r.stderr
      .trim()
      .split("\n")
      .filter((l) => l.startsWith("revtun relay:"));
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0] ?? "", re);
    assert.ok(r.stderr.trim().endsWith(lines[0] ?? "-"), r.stderr);
  };

  test("a certificate of another key stops the relay: exit 2, one line naming both keys", async () => {
    const other = ca.key("ed25519", "not-the-host-key");
    const cert = ca.sign(hostCa, other, { host: true, id: "wrong-key", principals: ["127.0.0.1"] });
    await refusedAtStart(
      cert,
      /^revtun relay: host certificate "wrong-key" certifies SHA256:\S+, not the relay's host key SHA256:\S+; sign it with ssh-keygen -s CA_KEY -h -I ID -n HOSTNAMES HOST_KEY\.pub$/,
    );
  });

  test("an expired certificate stops the relay: exit 2, one line with the instant", async () => {
    const cert = ca.sign(hostCa, hostKey, {
      host: true,
      id: "old-relay",
      principals: ["x"],
      validity: "20200101:20200201",
    });
    await refusedAtStart(
      cert,
      /^revtun relay: host certificate "old-relay" \(serial 0, CA SHA256:\S+\) expired at 2020-0[12]-\d\dT\d\d:00:00Z/,
    );
  });

  test("a user certificate, or a file that is no certificate, stops the relay: exit 2, one line", async () => {
    const cert = ca.sign(hostCa, hostKey, { id: "user-cert", principals: ["x"] });
    await refusedAtStart(
      cert,
      /^revtun relay: host certificate "user-cert" .* is a user certificate; a host certificate is needed here \(ssh-keygen -s -h\)$/,
    );
    await refusedAtStart(
      `${hostKey}.pub`,
      /^revtun relay: host certificate: "ssh-ed25519" is not an OpenSSH certificate type/,
    );
    await refusedAtStart(
      join(fx.dir, "missing-cert.pub"),
      /^revtun relay: cannot read --host-certificate \S+missing-cert\.pub: ENOENT/,
    );
  });

  describe("with --workers 2 in a fleet (bin/revtun)", () => {
    let redis: RedisServer;
    before(async () => {
      redis = await RedisServer.start();
    });
    after(async () => {
      await redis.close();
    });

    const args = (port: number, cert: string) => {
      const fleetKey = join(fx.dir, "fleet_key");
      writeFileSync(fleetKey, ed().private, { mode: 0o600 });
      return fleetRelayArgs({
        port,
        hostKey,
        authorizedKeys: fx.authorizedKeys,
        redisUrl: redis.url,
        fleetKey,
        relayId: "hc",
        extra: ["--workers", "2", "--host-certificate", cert],
      });
    };

    test("every worker presents the certificate", async () => {
      const cert = ca.sign(hostCa, hostKey, {
        host: true,
        id: "relay-w",
        principals: ["127.0.0.1"],
        validity: "-5m:+1h",
      });
      const u = fx.key();
      const dev = ed();
      const op = ed();
      fx.writeKeys([
        u.pub,
        `restrict,port-forwarding,permitlisten="device42:22" ${dev.public} device`,
        `restrict,permitopen="device*:22" ${op.public} operator`,
      ]);
      const port = await freePort();
      const primary = new Revtun(args(port, cert));
      procs.push({ kill: async () => void (await primary.stop("SIGTERM")) });
      await primary.waitFor(/all 2 workers ready/, 20_000);
      // Several connections on the shared port: the primary hands them to either worker.
      for (let i = 0; i < 4; i++) {
        const p = ssh(port, u.file, hostCa);
        await primary.waitFor(new RegExp(`(session \\d+ opened.*){${i + 1}}`, "s"), 10_000);
        await p.kill();
      }
      const opened = [...primary.stderr.matchAll(/session \d+ opened.* worker=(\d)/g)].map((m) => m[1]);
      assert.deepEqual([...new Set(opened)].sort(), ["0", "1"], primary.stderr);
      // The peer hop between workers still works: peers (ssh2, no certificate algorithms) get the plain key.
      const d = await device(port, dev.private);
      try {
        for (let i = 0; i < 6; i++) {
          const data = random(5_000);
          assert.deepEqual(await reach(port, op.private, data), data);
        }
        assert.match(primary.stderr, /tunnel device42:22 .* via relay hc-w\d: closed/);
      } finally {
        d.end();
      }
      assert.equal(await primary.stop("SIGTERM"), 0);
    });

    test("a malformed --revoked-keys: the primary exits 2 with one line naming file and line, no worker starts", async () => {
      const cert = ca.sign(hostCa, hostKey, { host: true, id: "relay-r", principals: ["127.0.0.1"] });
      const bad = join(fx.dir, "bad_revoked");
      writeFileSync(bad, "# list\nnot-a-key\n");
      const r = new Revtun([...args(await freePort(), cert), "--revoked-keys", bad]);
      const { code } = await r.exited;
      assert.equal(code, 2, r.stderr);
      assert.equal(
        r.stderr.trim(),
        `revtun relay: ${bad}:2: not a public key or a KRL (type "not-a-key"); make a KRL with ssh-keygen -k -f FILE KEY.pub`,
      );
    });

    test("a certificate of another key: the primary exits 2 with one line, no worker starts", async () => {
      const other = ca.key("ed25519", "not-the-host-key-2");
      const cert = ca.sign(hostCa, other, { host: true, id: "wrong-w", principals: ["127.0.0.1"] });
      const r = new Revtun(args(await freePort(), cert));
      const { code } = await r.exited;
      assert.equal(code, 2, r.stderr);
      assert.match(
        r.stderr.trim(),
        /^revtun relay: host certificate "wrong-w" certifies SHA256:\S+, not the relay's host key/,
      );
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.doesNotMatch(r.stderr, /worker \d started/);
    });
  });
});
