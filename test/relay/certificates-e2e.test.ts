/**
 * User certificates at the relay, with stock OpenSSH on both ends and
 * certificates from `ssh-keygen -s`: one cert-authority line serves every
 * device (each binds only the names its certificate lists), an operator
 * with a certificate from another CA reaches a device with `ssh -J`, and
 * each kind of bad certificate is refused with one line naming why.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import ssh2, { type ParsedKey } from "ssh2";
import { formatTable } from "../../src/cli/relay-status-command.js";
import { Inventory } from "../../src/relay/admin/inventory.js";
import { describeRelayEvent } from "../../src/relay/events.js";
import { fingerprintSha256 } from "../../src/shared/keys.js";
import { certificateIdentity, signWithCertificates } from "../../src/ssh2/user-certificate.js";
import { blobOf, lineOf, type SignOptions, TestCa } from "../helpers/ca.js";
import { type Key, nextEvent, RelayFixture, SshProc } from "../helpers/relay.js";
import { Sshd } from "../helpers/sshd.js";

describe("user certificates at the relay, with stock ssh", () => {
  const fx = new RelayFixture();
  const ca = new TestCa();
  const fleetCa = ca.key("ed25519", "fleet-ca");
  const opsCa = ca.key("ecdsa256", "ops-ca");
  const strangerCa = ca.key("ed25519", "stranger-ca");
  let sshd: Sshd;
  let config = "";
  const procs: SshProc[] = [];
  const env = { ...process.env };
  delete env.SSH_AUTH_SOCK;

  /** A new key with a certificate beside it (`<key>-cert.pub`, which ssh loads with -i). */
  function certified(by: string, o: SignOptions, kind: "ed25519" | "ecdsa256" | "rsa" = "ed25519"): Key {
    const file = ca.key(kind);
    ca.sign(by, file, o);
    return { file, pub: lineOf(`${file}.pub`) };
  }
  const device = (key: Key, login: string, spec: string) =>
    fx.ssh(key, ["-N", "-l", login, "-o", "ExitOnForwardFailure=yes", "-R", spec]);

  /** Runs ssh with `key` as `login` and returns its exit and the relay's refusal for that certificate. */
  async function refused(key: Key, login: string) {
    const refusal = nextEvent(fx.relay, "auth-refused", (x) => x.certKeyId !== undefined);
    const ssh = fx.ssh(key, ["-N", "-l", login]);
    const code = await ssh.waitExit(10_000);
    const [record] = await refusal;
    assert.equal(code, 255);
    assert.match(ssh.stderr, /Permission denied \(publickey\)/);
    const line = describeRelayEvent("auth-refused", record).msg;
    assert.ok(!line.includes("\n"), line);
    return { record, line };
  }

  before(async () => {
    sshd = await Sshd.start();
    await fx.start(
      [
        `cert-authority,restrict,port-forwarding,permitlisten="*:22" ${lineOf(`${fleetCa}.pub`)}`,
        `cert-authority,restrict,principals="ops",permitopen="*:22" ${lineOf(`${opsCa}.pub`)}`,
      ],
      // Many refusals from one address in a row: no growing penalty, a short answer delay.
      { authPenaltyStepMs: 0, authFailureDelayMs: 50 },
    );
    const deviceKnownHosts = join(fx.dir, "devices_known_hosts");
    const [type, key] = sshd.hostKeyPub().split(/\s+/);
    writeFileSync(deviceKnownHosts, `device42 ${type} ${key}\n`);
    config = join(fx.dir, "ssh_config");
    const op = certified(
      opsCa,
      { id: "alice@ops", principals: ["ops"], serial: 9, validity: "-5m:+1h" },
      "ecdsa256",
    );
    writeFileSync(
      config,
      [
        "Host relay",
        "  HostName 127.0.0.1",
        `  Port ${fx.port}`,
        "  User ops",
        `  IdentityFile ${op.file}`,
        `  UserKnownHostsFile ${fx.knownHosts}`,
        "Host device42",
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
    await Promise.all(procs.map((p) => p.kill().catch(() => {})));
    await fx.cleanup();
    await sshd.close();
    ca.close();
  });

  test("ssh -R device42:22 with a device certificate binds through one cert-authority line; -J reaches it", async () => {
    const dev = certified(fleetCa, {
      id: "device42-2026",
      principals: ["device42"],
      serial: 42,
      validity: "-5m:+1h",
    });
    const opened = nextEvent(fx.relay, "session-opened", (x) => x.certKeyId === "device42-2026");
    const bound = nextEvent(fx.relay, "forward-bound", (x) => x.address === "device42" && x.port === 22);
    device(dev, "device42", `device42:22:127.0.0.1:${sshd.port}`);
    const [session] = await opened;
    await bound;
    // Records name the certificate beside the certified key's fingerprint (as sshd logs it).
    assert.equal(session.fingerprint, fingerprintSha256(blobOf(`${dev.file}.pub`)));
    assert.equal(session.certSerial, "42");
    assert.deepEqual(session.certPrincipals, ["device42"]);
    assert.equal(session.certCa, fingerprintSha256(blobOf(`${fleetCa}.pub`)));
    assert.match(
      describeRelayEvent("session-opened", session).msg,
      /^session \d+ opened: SHA256:\S+ \(certificate "device42-2026" serial 42, principals "device42", CA SHA256:\S+\) from 127\.0\.0\.1:\d+/,
    );

    // The admin inventory and `revtun relay status` name the device by its key id, not its CA line's comment.
    const inventory = new Inventory(fx.relay);
    const listed = inventory.sessions().find((x) => x.sessionId === session.sessionId);
    inventory.close();
    assert.equal(listed?.certKeyId, "device42-2026");
    assert.deepEqual(listed?.certPrincipals, ["device42"]);
    assert.match(formatTable(listed ? [listed] : []), /\ndevice42-2026 \(cert 42\) /);

    const audit = nextEvent(fx.relay, "tunnel-connection-closed", (x) => x.name === "device42");
    const op = new SshProc(
      spawn("ssh", ["-F", config, "-J", "relay", `${sshd.user}@device42`, "echo", "hello"], {
        stdio: ["ignore", "pipe", "pipe"],
        env,
      }),
    );
    procs.push(op);
    assert.equal(await op.waitExit(15_000), 0, op.stderr);
    assert.equal(op.stdout, "hello\n");
    const [rec] = await audit;
    assert.equal(rec.certKeyId, "alice@ops");
    assert.deepEqual(rec.certPrincipals, ["ops"]);
    assert.equal(rec.deviceFingerprint, session.fingerprint);
  });

  test("the same fleet line does not let device42's certificate bind device43:22", async () => {
    const dev = certified(fleetCa, { id: "device42-b", principals: ["device42"], validity: "-5m:+1h" });
    const refusal = nextEvent(fx.relay, "forward-refused", (x) => x.address === "device43");
    const ssh = device(dev, "device42", `device43:22:127.0.0.1:${sshd.port}`);
    const [r] = await refusal;
    assert.equal(r.reason, "tunnel name device43 is not a principal of this certificate (device42)");
    assert.equal(await ssh.waitExit(10_000), 255);
    assert.match(ssh.stderr, /remote port forwarding failed for listen port 22/);
  });

  test("an expired certificate is refused", async () => {
    const key = certified(fleetCa, { id: "old", principals: ["device42"], validity: "20200101:20200201" });
    const { record } = await refused(key, "device42");
    assert.match(
      record.reason,
      /^certificate "old" \(serial 0, CA SHA256:\S+\) expired at 2020-02-0\dT\d\d:00:00Z \(it is 20\d\d-/,
    );
  });

  test("a certificate not valid yet is refused", async () => {
    const key = certified(fleetCa, { id: "early", principals: ["device42"], validity: "+1d:+2d" });
    const { record } = await refused(key, "device42");
    assert.match(record.reason, /^certificate "early" .* is not valid yet: valid from 20\d\d-\d\d-\d\dT/);
  });

  test("a certificate for another principal is refused (the login name must be one of its principals)", async () => {
    const key = certified(fleetCa, { id: "dev43", principals: ["device43"], validity: "-5m:+1h" });
    const { record } = await refused(key, "device42");
    assert.match(
      record.reason,
      /^certificate "dev43" .* is not valid for "device42": its principals are "device43"$/,
    );
    // And on a principals= line: the ops line admits only certificates listing "ops".
    const notOps = certified(opsCa, { id: "bob", principals: ["dev"], validity: "-5m:+1h" });
    const ops = await refused(notOps, "ops");
    assert.match(
      ops.record.reason,
      /^certificate "bob" lists none of the principals of the cert-authority line 2 \(ops\); its principals are "dev"$/,
    );
  });

  test("a certificate from an unknown CA is refused, naming the CA", async () => {
    const key = certified(strangerCa, { id: "stranger", principals: ["device42"] });
    const { record } = await refused(key, "device42");
    const caFp = fingerprintSha256(blobOf(`${strangerCa}.pub`));
    assert.equal(
      record.reason,
      `certificate "stranger" (serial 0, CA ${caFp}) is signed by a CA that is not trusted here (${caFp}); a cert-authority line in authorized_keys with that CA's public key would admit it`,
    );
  });

  /**
   * Logs in with ssh2 and revtun's certificate hook, presenting `cert` (any
   * bytes) for `keyFile`: stock ssh will not send a host certificate, nor one
   * whose CA signature fails (it checks its own certificate on loading).
   */
  async function ssh2Login(keyFile: string, cert: Buffer, id: string) {
    const refusal = nextEvent(fx.relay, "auth-refused", (x) => x.certKeyId === id);
    const client = new ssh2.Client();
    const ended = new Promise<string>((resolve) => {
      client.on("ready", () => resolve("ready"));
      client.on("error", (e) => resolve(e.message));
    });
    const plain = ssh2.utils.parseKey(readFileSync(keyFile)) as ParsedKey;
    const identity = certificateIdentity(plain, cert);
    let tried = false;
    client.connect({
      host: "127.0.0.1",
      port: fx.port,
      username: "device42",
      hostVerifier: () => true,
      authHandler: (_methods, _partial, next) => {
        if (tried) return next(false as unknown as ssh2.AnyAuthMethod);
        tried = true;
        next({ type: "publickey", username: "device42", key: identity });
      },
    });
    assert.ok(signWithCertificates(client));
    const [record] = await refusal;
    assert.match(await ended, /All configured authentication methods failed/);
    client.end();
    return record;
  }

  test("ssh2 with revtun's certificate hook logs in with ed25519, ECDSA and RSA certificates", async () => {
    for (const kind of ["ed25519", "ecdsa256", "rsa"] as const) {
      const key = certified(
        fleetCa,
        { id: `hook-${kind}`, principals: ["device42"], validity: "-5m:+1h" },
        kind,
      );
      const opened = nextEvent(fx.relay, "session-opened", (x) => x.certKeyId === `hook-${kind}`);
      const client = new ssh2.Client();
      const ready = new Promise<string>((resolve) => {
        client.on("ready", () => resolve("ready"));
        client.on("error", (e) => resolve(e.message));
      });
      const plain = ssh2.utils.parseKey(readFileSync(key.file)) as ParsedKey;
      client.connect({
        host: "127.0.0.1",
        port: fx.port,
        username: "device42",
        hostVerifier: () => true,
        authHandler: [
          {
            type: "publickey",
            username: "device42",
            key: certificateIdentity(plain, blobOf(`${key.file}-cert.pub`)),
          },
        ] as unknown as ssh2.AuthenticationType[],
      });
      assert.ok(signWithCertificates(client));
      try {
        assert.equal(await ready, "ready", kind);
        await opened;
      } finally {
        client.end();
      }
    }
  });

  test("a host certificate is refused as a user certificate", async () => {
    const key = certified(fleetCa, { id: "a-host", principals: ["device42"], host: true });
    const record = await ssh2Login(key.file, blobOf(`${key.file}-cert.pub`), "a-host");
    assert.match(
      record.reason,
      /^certificate "a-host" .* is a host certificate; a user certificate is needed here/,
    );
  });

  test("a certificate with a corrupted CA signature, or a changed principal, is refused", async () => {
    const key = certified(fleetCa, { id: "forged", principals: ["device4x"] });
    const cert = blobOf(`${key.file}-cert.pub`);
    const flipped = Buffer.from(cert);
    flipped[flipped.length - 1] = (flipped[flipped.length - 1] as number) ^ 1;
    const bad = await ssh2Login(key.file, flipped, "forged");
    assert.match(
      bad.reason,
      /^certificate "forged" .* has a CA signature that does not verify \(corrupted or forged\)$/,
    );
    // A device that edits its own principal (device4x -> device42) to claim another name.
    const edited = Buffer.from(cert.toString("latin1").replace("device4x", "device42"), "latin1");
    const forged = await ssh2Login(key.file, edited, "forged");
    assert.deepEqual(forged.certPrincipals, ["device42"]);
    assert.match(forged.reason, /has a CA signature that does not verify/);
  });

  test("a certificate with an unknown critical option is refused", async () => {
    const key = certified(fleetCa, {
      id: "odd",
      principals: ["device42"],
      options: ["critical:no-such-option=1"],
    });
    const { record, line } = await refused(key, "device42");
    assert.match(
      record.reason,
      /has critical option "no-such-option", which is not supported here \(supported: force-command, source-address\); sign it again without -O no-such-option$/,
    );
    assert.match(
      line,
      /^refused publickey authentication for SHA256:\S+ from 127\.0\.0\.1:\d+: certificate "odd" \(serial 0, CA SHA256:\S+\) has critical option "no-such-option"/,
    );
  });

  test("a source-address the peer is not in is refused; one it is in is accepted", async () => {
    const far = certified(fleetCa, {
      id: "far",
      principals: ["device42"],
      options: ["source-address=10.9.9.0/24"],
    });
    const { record } = await refused(far, "device42");
    assert.equal(
      record.reason,
      'certificate "far" is not valid from 127.0.0.1 (source-address "10.9.9.0/24")',
    );
    const near = certified(fleetCa, {
      id: "near",
      principals: ["device42"],
      options: ["source-address=127.0.0.0/8"],
    });
    const opened = nextEvent(fx.relay, "session-opened", (x) => x.certKeyId === "near");
    fx.ssh(near, ["-N", "-l", "device42"]);
    await opened;
  });

  test("a certificate made with -O clear logs in but cannot forward, with the reason", async () => {
    const key = certified(fleetCa, { id: "cleared", principals: ["device42"], options: ["clear"] });
    const refusal = nextEvent(fx.relay, "forward-refused", (x) => x.certKeyId === "cleared");
    const ssh = device(key, "device42", `device42:22:127.0.0.1:${sshd.port}`);
    const [r] = await refusal;
    assert.equal(
      r.reason,
      'certificate "cleared" does not permit port forwarding (no permit-port-forwarding extension: signed with -O clear?)',
    );
    assert.equal(await ssh.waitExit(10_000), 255);
    assert.match(ssh.stderr, /remote port forwarding failed/);
  });

  test("an RSA certificate offered for ssh-rsa (SHA-1) signatures is refused, as sshd 8.8+ does", async () => {
    const key = certified(fleetCa, { id: "sha1", principals: ["device42"] }, "rsa");
    const refusal = nextEvent(fx.relay, "auth-refused", (x) => x.certKeyId === "sha1");
    const ssh = fx.ssh(key, [
      "-N",
      "-l",
      "device42",
      "-o",
      "PubkeyAcceptedAlgorithms=ssh-rsa-cert-v01@openssh.com",
    ]);
    const [r] = await refusal;
    assert.match(
      r.reason,
      /^certificate "sha1" was offered for ssh-rsa \(RSA\/SHA-1\) signatures, which sshd refuses since OpenSSH 8\.8/,
    );
    assert.equal(await ssh.waitExit(10_000), 255);
  });

  test("ECDSA and RSA device certificates log in (signatures as OpenSSH writes them)", async () => {
    for (const kind of ["ecdsa256", "rsa"] as const) {
      const id = `dev-${kind}`;
      const key = certified(fleetCa, { id, principals: ["device42"], validity: "-5m:+1h" }, kind);
      const opened = nextEvent(fx.relay, "session-opened", (x) => x.certKeyId === id);
      fx.ssh(key, ["-N", "-l", "device42"]);
      const [s] = await opened;
      assert.equal(
        s.keyType,
        kind === "rsa" ? "ssh-rsa-cert-v01@openssh.com" : "ecdsa-sha2-nistp256-cert-v01@openssh.com",
      );
    }
  });
});
