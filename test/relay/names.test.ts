import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { isTunnelName, parseTunnelName, tunnelKey } from "../../src/relay/names.js";

describe("tunnel names", () => {
  test("addresses are not names; anything else is", () => {
    for (const a of ["", "*", "localhost", "LocalHost", "127.0.0.1", "::1", "0.0.0.0", "::"])
      assert.equal(isTunnelName(a), false, a);
    for (const n of ["device42", "Device42.fleet", "a", "x-1"]) assert.equal(isTunnelName(n), true, n);
  });

  test("valid names are lowercased DNS names", () => {
    assert.deepEqual(parseTunnelName("Device42.Fleet"), { name: "device42.fleet" });
    assert.deepEqual(parseTunnelName("a-b"), { name: "a-b" });
    assert.deepEqual(parseTunnelName(`${"a".repeat(63)}.b`), { name: `${"a".repeat(63)}.b` });
  });

  test("invalid names are refused with the reason", () => {
    const bad: [string, RegExp][] = [
      ["-x", /DNS labels/],
      ["x-", /DNS labels/],
      ["a..b", /DNS labels/],
      ["a_b", /DNS labels/],
      ["a\nb", /DNS labels/],
      [`${"a".repeat(64)}`, /DNS labels/],
      [`${"a.".repeat(127)}a`, /at most 253/],
      ["1.2.3", /not all digits/],
    ];
    for (const [text, re] of bad) {
      const r = parseTunnelName(text);
      assert.ok("error" in r && re.test(r.error), `${JSON.stringify(text)}: ${JSON.stringify(r)}`);
    }
  });

  test("the key is name:port, case-folded", () => {
    assert.equal(tunnelKey("Device42", 22), "device42:22");
  });
});
