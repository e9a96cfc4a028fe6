import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { isFleetKey, loadFleetKey } from "../../src/relay/fleet/fleet-key.js";
import { FLEET_DEFAULTS, fleetTimings, parseFleetUrl } from "../../src/relay/fleet/fleet-options.js";
import { RevtunError } from "../../src/shared/errors.js";
import { generateEd25519, parsePublicKey } from "../../src/shared/keys.js";
import { keygen } from "../helpers/sshd.js";

describe("fleet options", () => {
  test("redis://host:port[/db]", () => {
    assert.deepEqual(parseFleetUrl("redis://10.0.0.5:6379"), { host: "10.0.0.5", port: 6379, db: 0 });
    assert.deepEqual(parseFleetUrl("redis://redis.internal:6380/3"), {
      host: "redis.internal",
      port: 6380,
      db: 3,
    });
    assert.deepEqual(parseFleetUrl("redis://[::1]:6379/"), { host: "::1", port: 6379, db: 0 });
  });

  test("rediss://, an ACL user name, redis+sentinel://", () => {
    assert.deepEqual(parseFleetUrl("rediss://revtun@redis.internal:6380/2"), {
      host: "redis.internal",
      port: 6380,
      db: 2,
      username: "revtun",
      tls: {},
    });
    assert.deepEqual(parseFleetUrl("redis+sentinel://10.0.0.1:26379,[::1]:26380/fleet-primary/1"), {
      host: "10.0.0.1",
      port: 26379,
      db: 1,
      sentinel: {
        name: "fleet-primary",
        sentinels: [
          { host: "10.0.0.1", port: 26379 },
          { host: "::1", port: 26380 },
        ],
      },
    });
    assert.deepEqual(parseFleetUrl("rediss+sentinel://ops@s1:26379/p").tls, {});
    assert.equal(parseFleetUrl("rediss+sentinel://ops@s1:26379/p").username, "ops");
  });

  test("bad values: one line naming the value and where it came from", () => {
    const bad: [string, RegExp][] = [
      ["", /empty/],
      ["10.0.0.5:6379", /scheme must be redis:\/\/|not a URL/],
      ["http://h:1", /scheme must be redis:\/\/, rediss:\/\/ or redis\+sentinel:\/\/, not http:\/\//],
      ["rediss://h", /no port/],
      ["redis+sentinel://h:1", /a sentinel URL is redis\+sentinel:\/\/host:port/],
      ["redis+sentinel://h:1,g/mymaster", /the sentinel g has no port/],
      ["redis+sentinel://h:1/my master", /the primary name my master is not/],
      ["redis+sentinel://u:***@h:1/m", /credentials/],
      ["redis://us%20er@h:1", /the user name is not/],
      ["redis://h", /no port/],
      ["redis://h:0", /out of range/],
      ["redis://h:1/x", /database x is not a number/],
      ["redis://h:1/1/2", /database 1\/2 is not a number/],
      ["redis://user:***@h:1", /credentials/],
      ["redis://h:1?db=2", /query strings/],
    ];
    for (const [text, re] of bad) {
      assert.throws(
        () => parseFleetUrl(text, "REVTUN_FLEET"),
        (e: unknown) =>
          e instanceof RevtunError &&
          e.code === "USAGE" &&
          e.message.startsWith(`REVTUN_FLEET \`${text}\` (string): `) &&
          re.test(e.message) &&
          !e.message.includes("\n"),
        text,
      );
    }
  });

  test("a password in the URL is refused and not repeated in the message", () => {
    assert.throws(
      () => parseFleetUrl("redis://user:s3cret@h:1/2", "--fleet"),
      (e: unknown) =>
        e instanceof RevtunError &&
        e.message.startsWith(
          "--fleet `redis://user:***@h:1/2` (string): credentials in the URL are not supported",
        ) &&
        !e.message.includes("s3cret"),
    );
    assert.throws(
      () => parseFleetUrl("redis://:s3cret@h:1"),
      (e: Error) => !e.message.includes("s3cret"),
    );
  });

  test("timings: defaults, overrides, and the relations that keep a live relay's lease", () => {
    assert.deepEqual(fleetTimings(), FLEET_DEFAULTS);
    assert.equal(FLEET_DEFAULTS.leaseTtlMs, 3000);
    assert.equal(FLEET_DEFAULTS.renewIntervalMs, 1000);
    assert.equal(fleetTimings({ leaseTtlMs: 5000 }).leaseTtlMs, 5000);
    assert.throws(
      () => fleetTimings({ leaseTtlMs: 1500 }),
      /leaseTtlMs 1500 must be at least twice renewIntervalMs 1000/,
    );
    assert.throws(() => fleetTimings({ commandTimeoutMs: 1000 }), /commandTimeoutMs 1000 must be below/);
    assert.throws(() => fleetTimings({ peerIdleMs: -1 }), /peerIdleMs `-1` \(number\)/);
  });

  test("fleet key: an ed25519 private key, mode 600; anything else is refused naming the file", async () => {
    const dir = mkdtempSync(join(tmpdir(), "revtun-fleetkey-"));
    try {
      const file = join(dir, "fleet");
      const pair = generateEd25519();
      writeFileSync(file, pair.private, { mode: 0o600 });
      const key = await loadFleetKey(file);
      assert.equal(key.publicKey, pair.public.split(" ").slice(0, 2).join(" "));
      assert.ok(isFleetKey(key, parsePublicKey(pair.public)?.blob as Buffer));
      assert.ok(!isFleetKey(key, parsePublicKey(generateEd25519().public)?.blob as Buffer));
      chmodSync(file, 0o644);
      await assert.rejects(
        loadFleetKey(file),
        new RegExp(`fleet key ${file} is readable by group or others \\(mode 644\\)`),
      );
      const rsa = join(dir, "rsa");
      keygen(rsa, "rsa");
      await assert.rejects(loadFleetKey(rsa), /is ssh-rsa; the fleet key must be ed25519/);
      writeFileSync(join(dir, "pub"), pair.public, { mode: 0o600 });
      await assert.rejects(loadFleetKey(join(dir, "pub")), /is a public key/);
      await assert.rejects(loadFleetKey(join(dir, "missing")), /cannot read fleet key .*missing: ENOENT/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
