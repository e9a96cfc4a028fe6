import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { classify } from "../../src/agent/failures.js";
import { RevtunError } from "../../src/shared/errors.js";

const err = (props: { code?: string; level?: string }, message = "x") =>
  Object.assign(new Error(message), props);

describe("classify", () => {
  test("errno codes", () => {
    assert.equal(classify(err({ code: "ECONNREFUSED" })), "refused");
    assert.equal(classify(err({ code: "ECONNRESET" })), "reset");
    assert.equal(classify(err({ code: "EPIPE" })), "reset");
    assert.equal(classify(err({ code: "ENOTFOUND" })), "dns");
    assert.equal(classify(err({ code: "EHOSTUNREACH" })), "unreachable");
  });

  test("ssh2's two timeouts share a level; the session's state tells them apart, not the message", () => {
    // ssh2 lib/client.js: readyTimeout before the session is ready, the keepalive after.
    assert.equal(classify(err({ level: "client-timeout" }, "Keepalive timeout"), false), "timeout");
    assert.equal(classify(err({ level: "client-timeout" }, "anything"), true), "keepalive-timeout");
    assert.equal(classify(err({}, "keepalive in the message means nothing"), true), "error");
  });

  test("ssh2 levels and RevtunError reasons", () => {
    assert.equal(classify(err({ level: "client-authentication" })), "auth");
    assert.equal(classify(err({ level: "protocol" })), "protocol");
    assert.equal(classify(err({ level: "client-dns" })), "dns");
    assert.equal(classify(new RevtunError("CONNECT", "m", { reason: "refused" })), "refused");
    assert.equal(classify(new RevtunError("HOSTKEY_MISMATCH", "m")), "hostkey_mismatch");
  });

  test("a prefixed RevtunError keeps its code and reason", () => {
    const e = new RevtunError("CONNECT", "cannot connect", { reason: "timeout" }).prefixed(
      "jump host a@b:22",
    );
    assert.equal(e.message, "jump host a@b:22: cannot connect");
    assert.equal(e.code, "CONNECT");
    assert.equal(e.reason, "timeout");
  });
});
