/**
 * The state directory store: one winner among racing redemptions, "used"
 * and "expired" told apart from "unknown", device records as files that a
 * second store on the same directory (a restarted relay) reads back, and a
 * revocation by another process noticed through the directory watch.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { StateDirStore } from "../../../src/relay/enrollment/state-dir-store.js";
import { waitFor } from "../../helpers/net.js";

const hash = (c: string) => c.repeat(64);

test("of 20 racing redemptions exactly one wins; then used, expired and unknown are told apart", async () => {
  const dir = mkdtempSync(join(tmpdir(), "revtun-state-"));
  try {
    const store = await StateDirStore.open(dir);
    const now = Date.now();
    await store.addToken({ hash: hash("a"), name: "device42", createdAt: now, expiresAt: now + 60_000 });
    await store.addToken({ hash: hash("b"), name: "device43", createdAt: now, expiresAt: now + 1_000 });
    const outcomes = await Promise.all(Array.from({ length: 20 }, () => store.redeem(hash("a"), now)));
    assert.equal(outcomes.filter((o) => o.ok).length, 1);
    assert.ok(outcomes.every((o) => o.ok || o.reason === "used"));
    assert.deepEqual(await store.redeem(hash("b"), now + 2_000), { ok: false, reason: "expired" });
    assert.deepEqual(await store.redeem(hash("c"), now), { ok: false, reason: "unknown" });
    assert.deepEqual(await store.redeem("../../etc/passwd", now), { ok: false, reason: "unknown" });
    // Only the hash is stored, in files only the relay's user can read.
    assert.equal(statSync(join(dir, "used", `${hash("a")}.json`)).mode & 0o077, 0);
    assert.equal(statSync(join(dir, "tokens")).mode & 0o077, 0);
    await store.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("device records survive a new store on the directory, and a revocation by another process is noticed", async () => {
  const dir = mkdtempSync(join(tmpdir(), "revtun-state-"));
  try {
    const a = await StateDirStore.open(dir);
    await a.putDevice({
      name: "device42",
      fingerprint: "SHA256:x",
      serial: "7",
      validBefore: 1,
      enrolledAt: 1,
    });
    const b = await StateDirStore.open(dir);
    const seen: string[] = [];
    b.onChange((c) => seen.push(`${c.kind} ${c.name}`));
    assert.equal((await b.getDevice("device42"))?.serial, "7");
    await a.revoke("device42", 5);
    await waitFor(() => seen.includes("revoked device42"), "the other store noticing the revocation", 5_000);
    assert.equal((await b.devices())[0]?.revokedAt, 5);
    assert.equal(await a.revoke("nobody", 5), undefined);
    // No temporary files left behind by the atomic writes.
    assert.deepEqual(readdirSync(join(dir, "devices")), ["device42.json"]);
    await a.close();
    await b.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
