/** What "tried nothing" says when the options, not a missing key, left nothing to offer. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Authenticator } from "../../src/agent/authenticator.js";

const failure = (o: ConstructorParameters<typeof Authenticator>[0]) =>
  new Authenticator(o, []).failure("u@[h]:22").message;

describe("Authenticator.failure with nothing tried", () => {
  it("keys allowed but none found: use -i", () => {
    assert.match(failure({ username: "u" }), /tried nothing \(no identity found; use -i\)$/);
  });
  it("only password methods and no password: names REVTUN_PASSWORD and --password-file", () => {
    assert.match(failure({ username: "u", methods: ["password"] }), /REVTUN_PASSWORD or --password-file/);
  });
  it("every method switched off: names the options, not -i", () => {
    const m = failure({ username: "u", methods: [], password: "x" });
    assert.match(m, /PreferredAuthentications and the \*Authentication=no options leave no method/);
    assert.doesNotMatch(m, /use -i/);
  });
});
