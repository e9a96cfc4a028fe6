/**
 * The agent with OpenSSH certificates, against real sshd and certificates
 * from real `ssh-keygen -s`: logging in with ed25519, ECDSA and RSA user
 * certificates (src/agent/identities.ts: -cert.pub beside the key,
 * CertificateFile in -o and ssh_config), and checking sshd's host
 * certificate against known_hosts @cert-authority lines
 * (src/agent/known-hosts.ts): each refusal one line and exit 255.
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { parseRemoteForward } from "../../src/agent/forward-spec.js";
import { openTunnel } from "../../src/agent/tunnel.js";
import { loadOrCreateHostKey } from "../../src/shared/keys.js";
import { agentArgs, Revtun, runRevtun } from "../helpers/cli.js";
import { echoServer, type Listening, waitFor } from "../helpers/net.js";
import { nextEvent, RelayFixture } from "../helpers/relay.js";
import { SshCa } from "../helpers/ssh-ca.js";
import { Sshd } from "../helpers/sshd.js";

let dir = "";
let home = "";
let echo: Listening<net.Server>;
let userCa: SshCa;
let hostCa: SshCa;
/** Host certificate for "localhost" (not 127.0.0.1), user certificates from userCa. */
let sshd: Sshd;
/** Its host certificate expired in 2020. */
let expired: Sshd;
const userKeys = new Map<string, string>();

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "revtun-certs-"));
  home = join(dir, "home");
  mkdirSync(home);
  echo = await echoServer();
  userCa = new SshCa(dir, "user_ca");
  hostCa = new SshCa(dir, "host_ca", "ecdsa");
  const trust = `TrustedUserCAKeys ${userCa.key}.pub`;
  [sshd, expired] = await Promise.all([
    Sshd.start({
      prepare: (s) => [
        `HostCertificate ${hostCa.sign(s.hostKeys[0] ?? "", { host: true, principals: ["localhost"], id: "sshd-localhost" })}`,
        trust,
      ],
    }),
    Sshd.start({
      prepare: (s) => [
        `HostCertificate ${hostCa.sign(s.hostKeys[0] ?? "", { host: true, principals: ["127.0.0.1"], validity: "20200101:20200102", id: "sshd-expired" })}`,
        trust,
      ],
    }),
  ]);
  for (const t of ["ed25519", "ecdsa", "rsa"]) {
    const key = SshCa.newKey(dir, `id_${t}`, t);
    userCa.sign(key, { principals: [sshd.user], id: `agent-${t}`, serial: 40 });
    userKeys.set(t, key);
  }
});
after(async () => {
  await Promise.all([sshd?.close(), expired?.close(), echo?.close()]);
  rmSync(dir, { recursive: true, force: true });
});

/**
 * Runs the agent until its forward is bound (then stops it), or until it
 * exits; returns what it printed and its exit code. `knownHosts` replaces the
 * server's own known_hosts file.
 */
async function agent(server: Sshd, host: string, knownHosts: string | undefined, ...extra: string[]) {
  const args = agentArgs(
    { port: server.port, knownHosts: knownHosts ?? server.knownHosts },
    server.user,
    echo.port,
    ...extra,
  );
  args[args.length - 1] = `${server.user}@${host}`;
  const r = new Revtun(args, { HOME: home });
  const bound = await Promise.race([
    r.waitFor(/Allocated port \d+ for remote forward/, 15_000).then(
      () => true,
      () => false,
    ),
    r.exited.then(() => false),
  ]);
  const code = bound ? await r.stop() : (await r.exited).code;
  return { bound, code, stderr: r.stderr };
}

/** The error lines a person reads: exactly one for a refusal. */
const errorLines = (stderr: string) => stderr.split("\n").filter((l) => l.startsWith("revtun: "));

describe("user certificates: the agent logs in to sshd (TrustedUserCAKeys)", () => {
  for (const t of ["ed25519", "ecdsa", "rsa"]) {
    test(`${t}: the -cert.pub beside the identity file is used, and sshd logs the certificate accepted`, async () => {
      const r = await agent(sshd, "127.0.0.1", undefined, "-i", userKeys.get(t) ?? "");
      assert.ok(r.bound, `forward not bound: ${r.stderr}`);
      await waitFor(
        () => sshd.log.includes(`Accepted certificate ID "agent-${t}" (serial 40)`),
        `sshd accepted agent-${t}`,
        5000,
      );
      if (t === "rsa") assert.match(sshd.log, /Accepted publickey for \S+ from .* RSA-CERT /);
    });
  }

  test("CertificateFile in -o and in ssh_config, for a certificate not beside its key", async () => {
    const key = join(dir, "moved_key");
    copyFileSync(userKeys.get("ed25519") ?? "", key);
    const cert = join(dir, "elsewhere-cert.pub");
    copyFileSync(`${userKeys.get("ed25519")}-cert.pub`, cert);
    // Without it, the key alone is refused (it is in no authorized_keys).
    const plain = await runRevtun(agentArgs(sshd, sshd.user, echo.port, "-i", key), 15_000, { HOME: home });
    assert.equal(plain.code, 255);
    assert.match(plain.stderr, /permission denied/);
    const viaDashO = await agent(sshd, "127.0.0.1", undefined, "-i", key, "-o", `CertificateFile=${cert}`);
    assert.ok(viaDashO.bound, `-o CertificateFile: ${viaDashO.stderr}`);
    const config = join(dir, "ssh_config");
    writeFileSync(config, `Host 127.0.0.1\n  IdentityFile ${key}\n  CertificateFile ${cert}\n`);
    const args = agentArgs(sshd, sshd.user, echo.port).filter(
      (a, i, all) => a !== "none" || all[i - 1] !== "-F",
    );
    args.splice(args.indexOf("-F") + 1, 0, config);
    const r = new Revtun(args, { HOME: home });
    await r.waitFor(/Allocated port \d+ for remote forward/);
    await r.stop();
  });

  test("with no -i, ssh's default ~/.ssh/id_ed25519 and its -cert.pub are used", async () => {
    const myHome = join(dir, "home_default");
    mkdirSync(join(myHome, ".ssh"), { recursive: true });
    copyFileSync(userKeys.get("ed25519") ?? "", join(myHome, ".ssh", "id_ed25519"));
    copyFileSync(`${userKeys.get("ed25519")}-cert.pub`, join(myHome, ".ssh", "id_ed25519-cert.pub"));
    const r = new Revtun(agentArgs(sshd, sshd.user, echo.port), { HOME: myHome });
    await r.waitFor(/Allocated port \d+ for remote forward/);
    await r.stop();
  });

  test("an expired certificate: the refusal names it among what was tried, with its expiry", async () => {
    const key = SshCa.newKey(dir, "id_expired");
    userCa.sign(key, { principals: [sshd.user], id: "agent-expired", validity: "20200101:20200102" });
    const r = await runRevtun(agentArgs(sshd, sshd.user, echo.port, "-i", key), 15_000, { HOME: home });
    assert.equal(r.code, 255);
    assert.equal(errorLines(r.stderr).length, 1, r.stderr);
    assert.match(
      r.stderr,
      /permission denied for .*tried key .*id_expired \(ssh-ed25519 SHA256:\S+\), key .*id_expired-cert\.pub \(ssh-ed25519-cert-v01@openssh\.com SHA256:\S+ ID "agent-expired" serial 0, expired 2020-\S+\)/,
    );
  });

  test("a certificate renewed on disk is used at the next reconnect, without a restart", async () => {
    const key = SshCa.newKey(dir, "id_renewed");
    userCa.sign(key, { principals: [sshd.user], id: "renew-1" });
    const r = new Revtun(agentArgs(sshd, sshd.user, echo.port, "-i", key), { HOME: home });
    try {
      await r.waitFor(/Allocated port \d+ for remote forward/);
      await waitFor(() => sshd.log.includes('Accepted certificate ID "renew-1"'), "renew-1 accepted", 5000);
      userCa.sign(key, { principals: [sshd.user], id: "renew-2" });
      sshd.killSessions();
      await waitFor(() => sshd.log.includes('Accepted certificate ID "renew-2"'), "renew-2 accepted", 15_000);
    } finally {
      await r.stop();
    }
  });

  test("a CertificateFile for a key no identity file holds is one line naming both, exit 255, nothing sent", async () => {
    const r = await runRevtun(
      agentArgs(
        sshd,
        sshd.user,
        echo.port,
        "-i",
        userKeys.get("ed25519") ?? "",
        "-o",
        `CertificateFile=${userKeys.get("ecdsa")}-cert.pub`,
      ),
      15_000,
      { HOME: home },
    );
    assert.equal(r.code, 255);
    assert.equal(errorLines(r.stderr).length, 1, r.stderr);
    assert.match(
      r.stderr,
      /certificate file .*id_ecdsa-cert\.pub certifies ecdsa-sha2-nistp256 SHA256:\S+, which no identity file holds; name its private key with -i or IdentityFile/,
    );
  });
});

describe("host certificates: the agent checks sshd's against @cert-authority", () => {
  /** A known_hosts file with `text`, then the options of a strict agent logging in with sshd's user key. */
  const knownHosts = (name: string, text: string): [string, ...string[]] => {
    const f = join(dir, name);
    writeFileSync(f, text);
    return [f, "-o", "StrictHostKeyChecking=yes", "-i", sshd.userKey];
  };

  test("only an @cert-authority line for the host: connects (StrictHostKeyChecking=yes)", async () => {
    const r = await agent(sshd, "localhost", ...knownHosts("kh_ok", hostCa.knownHostsLine("[localhost]:*")));
    assert.ok(r.bound, `forward not bound: ${r.stderr}`);
  });

  test("HostKeyAlias names the principal and the known_hosts entry", async () => {
    const r = await agent(
      sshd,
      "127.0.0.1",
      ...knownHosts("kh_alias", hostCa.knownHostsLine("localhost")),
      "-o",
      "HostKeyAlias=localhost",
    );
    assert.ok(r.bound, `forward not bound: ${r.stderr}`);
  });

  test("a certificate from another CA: one line naming both CAs, exit 255", async () => {
    const other = new SshCa(dir, "other_ca");
    const r = await agent(
      sshd,
      "localhost",
      ...knownHosts("kh_wrong", other.knownHostsLine("[localhost]:*")),
    );
    assert.equal(r.bound, false);
    assert.equal(r.code, 255);
    assert.equal(errorLines(r.stderr).length, 1, r.stderr);
    assert.match(
      r.stderr,
      /host certificate for \[localhost\]:\d+ \(ID "sshd-localhost", serial 0, CA ecdsa-sha2-nistp256 SHA256:\S+\) is signed by an unknown CA: the @cert-authority lines for \[localhost\]:\d+ trust SHA256:\S+ at .*kh_wrong:1; if you trust CA ecdsa-sha2-nistp256 SHA256:\S+, add an @cert-authority line for it/,
    );
  });

  test("a host name the certificate does not name: one line naming the principals and the fix, exit 255", async () => {
    const r = await agent(
      sshd,
      "127.0.0.1",
      ...knownHosts("kh_principal", hostCa.knownHostsLine("[127.0.0.1]:*")),
    );
    assert.equal(r.code, 255);
    assert.equal(errorLines(r.stderr).length, 1, r.stderr);
    assert.match(
      r.stderr,
      /host certificate for \[127\.0\.0\.1\]:\d+, trusted by .*kh_principal:1, is refused: certificate "sshd-localhost" \(serial 0, CA SHA256:\S+\) is not valid for "127\.0\.0\.1": its principals are "localhost"; connect by one of its names, set HostKeyAlias to one, or have the CA re-sign the host key with -n 127\.0\.0\.1/,
    );
  });

  test("an expired certificate: one line saying so, exit 255, not retried", async () => {
    const connections = () => expired.log.match(/Connection from 127\.0\.0\.1/g)?.length ?? 0;
    const before = connections();
    const r = await agent(
      expired,
      "127.0.0.1",
      ...knownHosts("kh_expired", hostCa.knownHostsLine("[127.0.0.1]:*")),
    );
    assert.equal(r.code, 255);
    assert.equal(errorLines(r.stderr).length, 1, r.stderr);
    assert.match(
      r.stderr,
      /host certificate for \[127\.0\.0\.1\]:\d+, trusted by .*kh_expired:1, is refused: certificate "sshd-expired" \(serial 0, CA SHA256:\S+\) expired at 2020-\S+ \(it is \S+ here\); have the CA re-sign the host key/,
    );
    // A host key failure is never retried: one connection attempt in sshd's log.
    assert.equal(connections() - before, 1, expired.log);
  });

  test("an @revoked CA: refused as revoked, exit 255", async () => {
    const r = await agent(
      sshd,
      "localhost",
      ...knownHosts("kh_revoked", `${hostCa.knownHostsLine("[localhost]:*")}@revoked * ${hostCa.pub}\n`),
    );
    assert.equal(r.code, 255);
    assert.equal(errorLines(r.stderr).length, 1, r.stderr);
    assert.match(r.stderr, /: its CA is marked @revoked in .*kh_revoked:2; refusing to connect/);
  });
});

describe("the agent and the relay: a user certificate in, the relay's host certificate checked", () => {
  const fx = new RelayFixture();
  let relayCa: SshCa;
  let knownHosts = "";
  before(async () => {
    relayCa = new SshCa(fx.dir, "relay_host_ca");
    // The fixture makes its host key on start; make it first, to certify it.
    const hostKey = join(fx.dir, "host_ed25519");
    await loadOrCreateHostKey(hostKey);
    const cert = relayCa.sign(hostKey, { host: true, principals: ["127.0.0.1"], id: "relay-1" });
    await fx.start([`cert-authority,permitlisten="*:22" ${userCa.pub}`], {
      hostCertificate: readFileSync(cert, "utf8"),
    });
    knownHosts = join(fx.dir, "kh_relay");
    writeFileSync(knownHosts, relayCa.knownHostsLine("[127.0.0.1]:*"));
  });
  after(() => fx.cleanup());

  for (const t of ["ed25519", "ecdsa", "rsa"]) {
    test(`${t}: the device certificate for "device42" binds device42:22 and nothing else`, async () => {
      const key = SshCa.newKey(fx.dir, `device_${t}`, t);
      userCa.sign(key, { principals: ["device42"], id: `device42-${t}`, serial: 42 });
      const opened = nextEvent(fx.relay, "session-opened", (s) => s.certKeyId === `device42-${t}`);
      const bound = nextEvent(fx.relay, "forward-bound", (f) => f.address === "device42");
      const tunnel = await openTunnel({
        host: "127.0.0.1",
        port: fx.port,
        // Without principals= on the line, the login name must be a principal, as in sshd.
        username: "device42",
        identityFiles: [key],
        home,
        knownHostsFiles: [knownHosts],
        strictHostKeyChecking: "yes",
        forwards: [parseRemoteForward(`device42:22:127.0.0.1:${echo.port}`)],
      });
      tunnel.on("error", () => {});
      try {
        const [session] = await opened;
        assert.equal(session.certSerial, "42");
        assert.deepEqual(session.certPrincipals, ["device42"]);
        await bound;
      } finally {
        await tunnel.close(0);
      }
      // The same certificate asking for another name is refused by the relay.
      const refused = nextEvent(fx.relay, "forward-refused", (f) => f.address === "device43");
      const other = await openTunnel({
        host: "127.0.0.1",
        port: fx.port,
        username: "device42",
        identityFiles: [key],
        home,
        knownHostsFiles: [knownHosts],
        strictHostKeyChecking: "yes",
        forwards: [parseRemoteForward(`device43:22:127.0.0.1:${echo.port}`)],
      });
      other.on("error", () => {});
      try {
        await refused;
      } finally {
        await other.close(0);
      }
    });
  }
});
