/**
 * Enrollment in a fleet of two relays on a real redis-server: a token made
 * through relay A is redeemed at relay B (its host key is in the token,
 * read from the fleet registry), a token redeemed at A and B at once
 * succeeds exactly once, and `revtun relay revoke` through B closes the
 * device's session on A within 5 s and refuses its next login there.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { enrollCommand } from "../../../src/cli/enroll-command.js";
import { relayRevokeCommand } from "../../../src/cli/relay-revoke-command.js";
import { startAdminServer } from "../../../src/relay/admin/admin-server.js";
import { loadCertificateAuthority } from "../../../src/relay/enrollment/certificate-authority.js";
import { RedisStore } from "../../../src/relay/enrollment/redis-store.js";
import { parseFleetKey } from "../../../src/relay/fleet/fleet-key.js";
import { Relay } from "../../../src/relay/relay.js";
import { runInProcess } from "../../helpers/cli.js";
import { ed } from "../../helpers/fleet.js";
import { RedisServer } from "../../helpers/redis.js";
import { nextEvent, RelayFixture } from "../../helpers/relay.js";
import { freePort, keygen } from "../../helpers/sshd.js";

test("a fleet of two: token from A redeemed at B, one winner of a race, revoke via B closes the session on A", async (t) => {
  const redis = await RedisServer.start();
  const dir = mkdtempSync(join(tmpdir(), "revtun-fleet-enroll-"));
  const relays: Relay[] = [];
  const f = new RelayFixture();
  try {
    keygen(join(dir, "ca"));
    writeFileSync(join(dir, "authorized_keys"), "");
    const fleetKey = parseFleetKey(ed().private);
    const start = async (id: string) => {
      const port = await freePort();
      const hostKey = ed();
      const redisTarget = { host: "127.0.0.1", port: redis.port, db: 0 };
      const r = new Relay({
        listen: { host: "127.0.0.1", port },
        hostKey: hostKey.private,
        authorizedKeysFile: join(dir, "authorized_keys"),
        watchAuthorizedKeys: false,
        authFailureDelayMs: 100,
        fleet: { redis: redisTarget, fleetKey, relayId: id, advertise: `127.0.0.1:${port}`, prefix: "t:" },
        enrollment: {
          ca: await loadCertificateAuthority(join(dir, "ca")),
          store: await RedisStore.open(redisTarget, "t:"),
          certValidityMs: 3600_000,
        },
      });
      relays.push(r);
      await r.start();
      return { relay: r, port, hostKeyLine: `[127.0.0.1]:${port} ${hostKey.public}` };
    };
    const a = await start("relay-a");
    const b = await start("relay-b");
    const enrollAt = (port: number, id: string, token: string) =>
      runInProcess(
        enrollCommand,
        ["-i", join(dir, id), "-p", String(port), "-o", `UserKnownHostsFile=${join(dir, "kh")}`, "127.0.0.1"],
        { REVTUN_ENROLL_TOKEN: token },
      );

    const { token } = (await a.relay.enrollment?.issueToken("device42")) ?? { token: "" };
    const atB = await enrollAt(b.port, "dev", token);
    assert.equal(atB.code, 0, atB.stderr);
    assert.match(atB.stdout, /^enrolled as device42/);

    // Redeemed at both relays at once: exactly one wins.
    const { token: raced } = (await b.relay.enrollment?.issueToken("device43")) ?? { token: "" };
    const results = await Promise.all([enrollAt(a.port, "r1", raced), enrollAt(b.port, "r2", raced)]);
    assert.deepEqual(results.map((r) => r.code).sort(), [0, 255]);
    assert.match(results.find((r) => r.code === 255)?.stderr ?? "", /it has been used already/);

    // The device logs in at A with the certificate B signed.
    f.relay = a.relay;
    writeFileSync(f.knownHosts, `${a.hostKeyLine}\n`);
    const bound = nextEvent(a.relay, "forward-bound", (e) => e.address === "device42");
    const ssh = f.ssh({ file: join(dir, "dev"), pub: "" }, [
      "-N",
      "-o",
      `UserKnownHostsFile=${join(dir, "kh")}`,
      "-R",
      "device42:22:127.0.0.1:9",
    ]);
    await bound;

    const admin = await startAdminServer({ relay: b.relay, host: "127.0.0.1", port: 0 });
    try {
      const closed = nextEvent(a.relay, "session-closed", (e) => /revoked/.test(e.reason), 5_000);
      const t0 = Date.now();
      const revoked = await runInProcess(relayRevokeCommand, [
        "device42",
        "--admin",
        `127.0.0.1:${admin.address.port}`,
      ]);
      assert.equal(revoked.code, 0, revoked.stderr);
      assert.match(revoked.stdout, /^revoked device42 \(SHA256:\S+\)\n$/);
      await closed;
      const ms = Date.now() - t0;
      assert.ok(ms < 5_000, `closed on A ${ms} ms after the revoke on B`);
      t.diagnostic(
        `session on A closed ${ms} ms after relay revoke through B (CLI, admin API, Redis pub/sub)`,
      );
      assert.equal(await ssh.waitExit(5_000), 255);
      const refused = nextEvent(a.relay, "auth-refused", (e) => e.reason === "device42 is revoked");
      const again = f.ssh({ file: join(dir, "dev"), pub: "" }, [
        "-N",
        "-o",
        `UserKnownHostsFile=${join(dir, "kh")}`,
        "-R",
        "device42:22:127.0.0.1:9",
      ]);
      await refused;
      assert.equal(await again.waitExit(10_000), 255);

      // The name is free again: a new token enrolls a new key for it.
      const { token: fresh } = (await a.relay.enrollment?.issueToken("device42")) ?? { token: "" };
      const reenrolled = await enrollAt(a.port, "dev2", fresh);
      assert.equal(reenrolled.code, 0, reenrolled.stderr);
    } finally {
      await admin.close();
    }
  } finally {
    f.relay = undefined as unknown as Relay;
    await f.cleanup();
    await Promise.all(relays.map((r) => r.close()));
    await redis.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
