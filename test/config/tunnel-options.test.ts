/** authMethods: ssh's authentication switches to the library's method list (issue 12 item 5). */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { authMethods } from "../../src/config/tunnel-options.js";

describe("authMethods", () => {
  it("defaults to ssh's order", () => {
    assert.deepEqual(authMethods({}), ["agent", "publickey", "keyboard-interactive", "password"]);
  });
  it("each switch removes its own method only", () => {
    assert.deepEqual(authMethods({ passwordAuthentication: false }), [
      "agent",
      "publickey",
      "keyboard-interactive",
    ]);
    assert.deepEqual(authMethods({ kbdInteractiveAuthentication: false }), [
      "agent",
      "publickey",
      "password",
    ]);
    assert.deepEqual(authMethods({ pubkeyAuthentication: false }), ["keyboard-interactive", "password"]);
  });
  it("PreferredAuthentications orders, skips unknown names and repeats, and the switches still apply", () => {
    assert.deepEqual(authMethods({ preferredAuthentications: ["password", "publickey"] }), [
      "password",
      "agent",
      "publickey",
    ]);
    assert.deepEqual(
      authMethods({ preferredAuthentications: ["gssapi-with-mic", "hostbased", "Password", "password"] }),
      ["password"],
    );
    assert.deepEqual(
      authMethods({ preferredAuthentications: ["password", "publickey"], passwordAuthentication: false }),
      ["agent", "publickey"],
    );
  });
});
