/**
 * Enrollment against an in-process relay with --ca-key and a state
 * directory: `revtun enroll` (in process) gets a certificate and a host
 * certificate, stock ssh logs in with it and binds its name (and no other),
 * every kind of bad token is refused with its own line and exit 255, a relay
 * the token does not name is refused before the token is sent, and a
 * revocation closes the session at once and refuses the next login.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { enrollCommand } from "../../../src/cli/enroll-command.js";
import { loadCertificateAuthority } from "../../../src/relay/enrollment/certificate-authority.js";
import { StateDirStore } from "../../../src/relay/enrollment/state-dir-store.js";
import { encodeToken, newToken } from "../../../src/relay/enrollment/token.js";
import { fingerprintSha256, parsePublicKey } from "../../../src/shared/keys.js";
import { runInProcess } from "../../helpers/cli.js";
import { nextEvent, type RelayFixture, withFixture } from "../../helpers/relay.js";
import { keygen } from "../../helpers/sshd.js";

let skewMs = 0;

async function startEnrollingRelay(f: RelayFixture, certValidity = 3600_000) {
  const caFile = join(f.dir, "ca");
  keygen(caFile);
  const ca = await loadCertificateAuthority(caFile);
  const store = await StateDirStore.open(join(f.dir, "state"));
  const relay = await f.start([], {
    enrollment: { ca, store, certValidityMs: certValidity },
    now: () => new Date(Date.now() + skewMs),
  });
  const enrollment = relay.enrollment;
  assert.ok(enrollment);
  return { relay, enrollment, ca };
}

function enrollArgs(f: RelayFixture, id: string, ...extra: string[]): string[] {
  return [
    "-i",
    join(f.dir, id),
    "-p",
    String(f.port),
    "-o",
    `UserKnownHostsFile=${join(f.dir, "device_known_hosts")}`,
    ...extra,
    "127.0.0.1",
  ];
}

test("a device enrolls with a token, logs in with its certificate and binds its own name only", () =>
  withFixture(async (f) => {
    const { relay, enrollment, ca } = await startEnrollingRelay(f);
    const { token } = await enrollment.issueToken("device42");
    writeFileSync(join(f.dir, "token"), `${token}\n`);
    keygen(join(f.dir, "ssh_host_ed25519_key"));
    const r = await runInProcess(
      enrollCommand,
      enrollArgs(
        f,
        "dev",
        "--token-file",
        join(f.dir, "token"),
        "--host-key",
        join(f.dir, "ssh_host_ed25519_key.pub"),
      ),
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^enrolled as device42 at 127\.0\.0\.1/m);
    assert.match(
      r.stdout,
      new RegExp(
        `revtun -N -i \\S+/dev -p ${f.port} -o UserKnownHostsFile=\\S+ -R device42:22:localhost:22 127\\.0\\.0\\.1`,
      ),
    );
    // The key was made here, mode 600.
    assert.equal((readFileSync(join(f.dir, "dev"), "utf8").match(/OPENSSH PRIVATE KEY/g) ?? []).length, 2);
    const user = execFileSync("ssh-keygen", ["-L", "-f", join(f.dir, "dev-cert.pub")], { encoding: "utf8" });
    assert.match(user, /user certificate/);
    assert.match(user, /Principals: \n\s+device42\n/);
    assert.ok(user.includes(`Signing CA: ED25519 ${ca.fingerprint}`));
    const host = execFileSync("ssh-keygen", ["-L", "-f", join(f.dir, "ssh_host_ed25519_key-cert.pub")], {
      encoding: "utf8",
    });
    assert.match(host, /host certificate/);
    assert.match(host, /Principals: \n\s+device42\n/);
    // The relay's host key was recorded where the tunnel will check it.
    const kh = readFileSync(join(f.dir, "device_known_hosts"), "utf8");
    assert.ok(kh.includes(`[127.0.0.1]:${f.port} ssh-ed25519 `));

    const device = { file: join(f.dir, "dev"), pub: "" };
    const bound = nextEvent(relay, "forward-bound", (e) => e.address === "device42");
    const ssh = f.ssh(device, ["-N", "-o", "ExitOnForwardFailure=yes", "-R", "device42:22:127.0.0.1:9"]);
    await bound;
    const other = f.ssh(device, ["-N", "-o", "ExitOnForwardFailure=yes", "-R", "device43:22:127.0.0.1:9"]);
    assert.equal(await other.waitExit(10_000), 255);
    assert.match(other.stderr, /remote port forwarding failed for listen port 22/);
    const loopback = f.ssh(device, ["-N", "-o", "ExitOnForwardFailure=yes", "-R", "8022:127.0.0.1:9"]);
    assert.equal(await loopback.waitExit(10_000), 255);

    // Revocation: the session is closed at once, the next login refused.
    const t0 = Date.now();
    const closed = nextEvent(relay, "session-closed", (e) => /revoked/.test(e.reason), 5_000);
    await enrollment.revoke("device42");
    await closed;
    assert.ok(Date.now() - t0 < 5_000);
    assert.equal(await ssh.waitExit(5_000), 255);
    const refused = nextEvent(relay, "auth-refused", (e) => e.reason === "device42 is revoked");
    const again = f.ssh(device, ["-N", "-R", "device42:22:127.0.0.1:9"]);
    await refused;
    assert.equal(await again.waitExit(10_000), 255);
    const devices = await enrollment.devices();
    assert.equal(devices.length, 1);
    assert.ok(devices[0]?.revokedAt);
    // Renewal is refused too.
    const keyBlob = parsePublicKey(readFileSync(join(f.dir, "dev.pub"), "utf8"))?.blob ?? Buffer.alloc(0);
    const renewal = await enrollment.renew("device42", keyBlob, "test");
    assert.equal(renewal.ok ? "renewed" : renewal.reason, "revoked");
  }));

test("used, expired, made-up and other-relay tokens are each refused with exit 255 and their own line", () =>
  withFixture(async (f) => {
    const { relay, enrollment } = await startEnrollingRelay(f);
    const env = (token: string) => ({ REVTUN_ENROLL_TOKEN: token });
    const { token } = await enrollment.issueToken("device7");
    assert.equal((await runInProcess(enrollCommand, enrollArgs(f, "a"), env(token))).code, 0);

    const logged = nextEvent(relay, "enrollment", (e) => e.action === "refused" && e.reason === "used");
    const used = await runInProcess(enrollCommand, enrollArgs(f, "b"), env(token));
    assert.equal(used.code, 255);
    assert.equal(used.stderr, "revtun enroll: token refused: it has been used already; ask for a new one\n");
    // The relay logs the refusal with the name, never the token.
    const [record] = await logged;
    assert.equal(record?.name, "device7");
    assert.ok(!JSON.stringify(record).includes(token.slice(20, 60)));

    const { token: late } = await enrollment.issueToken("device8", 60_000);
    skewMs = 120_000;
    try {
      const expired = await runInProcess(enrollCommand, enrollArgs(f, "c"), env(late));
      assert.equal(expired.code, 255);
      assert.equal(expired.stderr, "revtun enroll: token refused: it has expired; ask for a new one\n");
    } finally {
      skewMs = 0;
    }

    const hostFp = fingerprintSha256(
      parsePublicKey(readFileSync(join(f.dir, "host_ed25519.pub"), "utf8"))?.blob ?? Buffer.alloc(0),
    );
    const caFp = enrollment.ca.fingerprint;
    const madeUp = encodeToken(
      newToken({ name: "device9", ttlMs: 3600_000, caFingerprint: caFp, hostKeyFingerprints: [hostFp] }),
    );
    const unknown = await runInProcess(enrollCommand, enrollArgs(f, "d"), env(madeUp));
    assert.equal(unknown.code, 255);
    assert.match(unknown.stderr, /^revtun enroll: token refused: the relay does not know it/);

    const otherCa = `SHA256:${"A".repeat(43)}`;
    const foreign = encodeToken(
      newToken({ name: "device9", ttlMs: 3600_000, caFingerprint: otherCa, hostKeyFingerprints: [hostFp] }),
    );
    const other = await runInProcess(enrollCommand, enrollArgs(f, "e"), env(foreign));
    assert.equal(other.code, 255);
    assert.match(other.stderr, /^revtun enroll: token refused: it was made for a relay with another CA/);

    const garbage = await runInProcess(enrollCommand, enrollArgs(f, "g"), env("not-a-token"));
    assert.equal(garbage.code, 255);
    assert.match(garbage.stderr, /not a revtun enrollment token/);
  }));

test("a relay whose host key the token does not name is refused before the token is sent", () =>
  withFixture(async (f) => {
    const { relay, enrollment } = await startEnrollingRelay(f);
    const { token } = await enrollment.issueToken("device42");
    // The same token, naming another host key: this relay is now the man in the middle.
    const body = JSON.parse(Buffer.from(token.slice("revtun-enroll-1.".length), "base64url").toString());
    body.h = [`SHA256:${"B".repeat(43)}`];
    const forged = `revtun-enroll-1.${Buffer.from(JSON.stringify(body)).toString("base64url")}`;
    let enrollRecords = 0;
    relay.on("enrollment", () => enrollRecords++);
    const r = await runInProcess(enrollCommand, enrollArgs(f, "m"), { REVTUN_ENROLL_TOKEN: forged });
    assert.equal(r.code, 255);
    assert.match(
      r.stderr,
      /^revtun enroll: relay host key SHA256:\S+ at 127\.0\.0\.1:\d+ is not one the token names/,
    );
    assert.equal(enrollRecords, 0);
    // The token is still good: nothing reached the relay.
    const ok = await runInProcess(enrollCommand, enrollArgs(f, "n"), { REVTUN_ENROLL_TOKEN: token });
    assert.equal(ok.code, 0, ok.stderr);
  }));
