import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Backoff } from "../../src/agent/backoff.js";

describe("Backoff", () => {
  it("doubles the ceiling up to the cap, with full jitter", () => {
    const b = new Backoff({ baseMs: 1_000, capMs: 30_000, random: () => 1 });
    assert.deepEqual(
      Array.from({ length: 7 }, () => b.next()),
      [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000],
    );
    b.reset();
    assert.equal(b.next(), 1_000);
    const low = new Backoff({ baseMs: 1_000, capMs: 30_000, random: () => 0 });
    assert.equal(low.next(), 0);
  });
});
