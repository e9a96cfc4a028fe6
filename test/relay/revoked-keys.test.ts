/**
 * --revoked-keys (sshd's RevokedKeys) at the relay: a KRL from
 * `ssh-keygen -k` (by serial, key id or key) or a plain key list refuses
 * keys and certificates, and a live session whose key or certificate is
 * revoked is closed when the file changes (sshd leaves it running).
 */
import assert from "node:assert/strict";
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import ssh2, { type ParsedKey } from "ssh2";
import { Relay } from "../../src/relay/index.js";
import { RevtunError } from "../../src/shared/errors.js";
import { loadOrCreateHostKey } from "../../src/shared/keys.js";
import { certificateIdentity, signWithCertificates } from "../../src/ssh2/user-certificate.js";
import { blobOf, lineOf, TestCa } from "../helpers/ca.js";
import { connect } from "../helpers/fleet.js";
import { type Key, nextEvent, RelayFixture } from "../helpers/relay.js";

describe("--revoked-keys at the relay", () => {
  const fx = new RelayFixture();
  const ca = new TestCa();
  const fleetCa = ca.key("ed25519", "fleet-ca");
  const revoked = join(fx.dir, "revoked.krl");
  let plain: Key;

  function certified(o: { id: string; serial: number }): Key {
    const file = ca.key("ed25519");
    ca.sign(fleetCa, file, { ...o, principals: ["device42"], validity: "-5m:+1h" });
    return { file, pub: lineOf(`${file}.pub`) };
  }

  /** Writes a KRL from `spec` (ssh-keygen -k) and renames it over the watched file. */
  function writeKrl(spec: string): void {
    const specFile = join(ca.dir, "spec");
    writeFileSync(specFile, spec);
    const tmp = join(ca.dir, "new.krl");
    ca.keygen(["-k", "-f", tmp, "-s", `${fleetCa}.pub`, specFile]);
    renameSync(tmp, revoked);
  }

  before(async () => {
    writeKrl("serial: 1000\n");
    plain = fx.key();
    await fx.start(
      [
        `cert-authority,permitlisten="*:22" ${lineOf(`${fleetCa}.pub`)}`,
        `permitlisten="device43:22" ${plain.pub}`,
      ],
      { revokedKeysFile: revoked, watchAuthorizedKeys: true, authPenaltyStepMs: 0, authFailureDelayMs: 50 },
    );
  });
  after(async () => {
    await fx.cleanup();
    ca.close();
  });

  test("a certificate revoked by serial is refused, one line naming the serial", async () => {
    const key = certified({ id: "dev-1000", serial: 1000 });
    const refusal = nextEvent(fx.relay, "auth-refused", (x) => x.certKeyId === "dev-1000");
    const ssh = fx.ssh(key, ["-N", "-l", "device42"]);
    const [r] = await refusal;
    assert.match(
      r.reason,
      /^certificate "dev-1000" \(serial 1000, CA SHA256:\S+\) is revoked \(serial 1000 of CA SHA256:\S+ is revoked\)$/,
    );
    assert.equal(await ssh.waitExit(10_000), 255);
  });

  test("a live certificate session is closed within 2 s of the KRL revoking its key id", async () => {
    const key = certified({ id: "device42-live", serial: 7 });
    const bound = nextEvent(fx.relay, "forward-bound", (x) => x.certKeyId === "device42-live");
    const ssh = fx.ssh(key, [
      "-N",
      "-l",
      "device42",
      "-o",
      "ExitOnForwardFailure=yes",
      "-R",
      "device42:22:127.0.0.1:9",
    ]);
    await bound;
    const closed = nextEvent(fx.relay, "session-closed", (x) => x.certKeyId === "device42-live");
    const at = Date.now();
    writeKrl("serial: 1000\nid: device42-live\n");
    const [c] = await closed;
    const ms = Date.now() - at;
    assert.match(
      c.reason,
      /^certificate no longer authorized \(certificate "device42-live" .* is revoked \(key id "device42-live" is revoked\)\)$/,
    );
    await ssh.waitExit(2_000);
    assert.ok(
      Date.now() - at < 2_000,
      `ssh ended ${Date.now() - at} ms after the KRL changed (relay closed it at ${ms} ms)`,
    );
    assert.equal(fx.relay.forwards().length, 0);
  });

  test("a plain key revoked in the KRL (ssh-keygen -k KEY.pub) is refused, and its live session closed", async () => {
    const opened = nextEvent(fx.relay, "session-opened", (x) =>
      x.keyComment.endsWith(plain.pub.split(" ")[2] ?? ""),
    );
    const ssh = fx.ssh(plain, ["-N"]);
    await opened;
    const closed = nextEvent(
      fx.relay,
      "session-closed",
      (x) => x.reason === "key no longer authorized (revoked)",
    );
    const at = Date.now();
    writeKrl(`serial: 1000\nid: device42-live\nkey: ${plain.pub}\n`);
    await closed;
    await ssh.waitExit(2_000);
    assert.ok(Date.now() - at < 2_000);
    const refusal = nextEvent(fx.relay, "auth-refused", (x) => x.reason === "revoked");
    const again = fx.ssh(plain, ["-N"]);
    await refusal;
    assert.equal(await again.waitExit(10_000), 255);
  });

  test("a broken revoked keys file on reload keeps the revocations loaded before, and says so", async () => {
    const failed = nextEvent(fx.relay, "revoked-keys-reload-failed");
    writeFileSync(`${revoked}.tmp`, "SSHKRL\n\0garbage");
    renameSync(`${revoked}.tmp`, revoked);
    const [f] = await failed;
    const metrics = await fx.relay.registry.metrics();
    assert.match(metrics, /revtun_relay_revoked_keys_reloads_total\{result="failed"\} 1/);
    // The list before stays in force, and is what the gauge counts: serial 1000, key id, key.
    assert.match(metrics, /\nrevtun_relay_revoked_keys 3\n/);
    assert.match(f.error, /revoked.krl: KRL format version \d+ is not 1$/);
    const key = certified({ id: "dev-1000-again", serial: 1000 });
    const refusal = nextEvent(fx.relay, "auth-refused", (x) => x.certKeyId === "dev-1000-again");
    fx.ssh(key, ["-N", "-l", "device42"]);
    assert.match((await refusal)[0].reason, /is revoked \(serial 1000/);
  });

  test("a reload also closes a certificate session whose certificate has expired since login", async () => {
    let clock = Date.now();
    const hostKey = await loadOrCreateHostKey(join(fx.dir, "host_ed25519"));
    const relay = new Relay({
      listen: { host: "127.0.0.1", port: 0 },
      hostKey: hostKey.privateKey,
      authorizedKeysFile: fx.authorizedKeys,
      watchAuthorizedKeys: false,
      now: () => new Date(clock),
    });
    const { port } = await relay.start();
    try {
      const key = ca.key("ed25519");
      ca.sign(fleetCa, key, { id: "short", principals: ["device42"], validity: "-5m:+1h" });
      const client = new ssh2.Client();
      const ready = new Promise<void>((resolve, reject) => {
        client.once("ready", () => resolve());
        client.once("error", reject);
      });
      const ended = new Promise<void>((resolve) => client.once("end", () => resolve()));
      client.connect({
        host: "127.0.0.1",
        port,
        username: "device42",
        hostVerifier: () => true,
        authHandler: [
          {
            type: "publickey",
            username: "device42",
            key: certificateIdentity(
              ssh2.utils.parseKey(readFileSync(key)) as ParsedKey,
              blobOf(`${key}-cert.pub`),
            ),
          },
        ] as unknown as ssh2.AuthenticationType[],
      });
      assert.ok(signWithCertificates(client));
      await ready;
      const closed = nextEvent(relay, "session-closed", (x) => x.certKeyId === "short");
      clock += 2 * 3600_000;
      await relay.reloadAuthorizedKeys("SIGHUP");
      assert.match(
        (await closed)[0].reason,
        /^certificate no longer authorized \(certificate "short" .* expired at /,
      );
      await ended;
    } finally {
      await relay.close();
    }
  });

  test("a plain key list works too, and an unreadable file stops the relay at start (CONFIG, one line)", async () => {
    const list = join(fx.dir, "revoked_keys");
    writeFileSync(list, `# revoked\n${plain.pub}\n`);
    const hostKey = await loadOrCreateHostKey(join(fx.dir, "host_ed25519"));
    const relay = new Relay({
      listen: { host: "127.0.0.1", port: 0 },
      hostKey: hostKey.privateKey,
      authorizedKeysFile: fx.authorizedKeys,
      revokedKeysFile: list,
      watchAuthorizedKeys: false,
    });
    const loaded = nextEvent(relay, "revoked-keys-loaded");
    const { port } = await relay.start();
    assert.deepEqual((await loaded)[0], { file: list, kind: "keys", entries: 1, reason: "startup" });
    // Without a watcher, SIGHUP's reload (reloadAuthorizedKeys) rereads the list and closes what it revokes.
    const other = fx.key();
    fx.writeKeys([`permitlisten="device43:22" ${plain.pub}`, other.pub]);
    await relay.reloadAuthorizedKeys("SIGHUP");
    const client = await connect(port, readFileSync(other.file, "utf8"));
    const gone = new Promise((resolve) => client.once("end", () => resolve(undefined)));
    writeFileSync(list, `${plain.pub}\n${other.pub}\n`);
    const closed = nextEvent(relay, "session-closed");
    await relay.reloadAuthorizedKeys("SIGHUP");
    assert.equal((await closed)[0].reason, "key no longer authorized (revoked)");
    await gone;
    await relay.close();
    writeFileSync(list, "ssh-ed25519 AAAAbroken\n");
    const broken = new Relay({
      listen: { host: "127.0.0.1", port: 0 },
      hostKey: hostKey.privateKey,
      authorizedKeysFile: fx.authorizedKeys,
      revokedKeysFile: list,
      watchAuthorizedKeys: false,
    });
    await assert.rejects(
      broken.start(),
      (e: unknown) =>
        e instanceof RevtunError &&
        e.code === "CONFIG" &&
        e.message ===
          `${list}:1: not a public key or a KRL (type "ssh-ed25519"); make a KRL with ssh-keygen -k -f FILE KEY.pub`,
    );
  });
});
