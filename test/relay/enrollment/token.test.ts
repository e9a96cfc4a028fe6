/** The token line: round trip, and every malformed one refused with a phrase (never a throw). */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import {
  decodeToken,
  encodeToken,
  newToken,
  TOKEN_PREFIX,
  tokenHash,
} from "../../../src/relay/enrollment/token.js";

const fp = (c: string) => `SHA256:${c.repeat(43)}`;

test("a token round-trips on one line; the relay keeps only the secret's hash", () => {
  const t = newToken({
    name: "Device42",
    ttlMs: 3600_000,
    caFingerprint: fp("C"),
    hostKeyFingerprints: [fp("A"), fp("A"), fp("B")],
  });
  const line = encodeToken(t);
  assert.match(line, /^revtun-enroll-1\.[A-Za-z0-9_-]+$/);
  const back = decodeToken(` ${line}\n`);
  assert.ok(!(back instanceof Error));
  assert.equal(back.name, "device42");
  assert.deepEqual(back.hostKeyFingerprints, [fp("A"), fp("B")]);
  assert.equal(back.expiresAt.getTime(), t.expiresAt.getTime());
  assert.match(tokenHash(t.secret), /^[0-9a-f]{64}$/);
  assert.ok(!tokenHash(t.secret).includes(t.secret));
});

test("malformed tokens are refused with a phrase", () => {
  const body = (o: unknown) => TOKEN_PREFIX + Buffer.from(JSON.stringify(o)).toString("base64url");
  const good = { n: "device42", s: randomBytes(32).toString("base64url"), x: 2e9, c: fp("C"), h: [fp("A")] };
  const cases: [string, RegExp][] = [
    ["nope", /does not start with/],
    [`${TOKEN_PREFIX}!!!`, /not base64url JSON/],
    [body({ ...good, n: "bad name!" }), /bad name/],
    [body({ ...good, s: "short" }), /bad secret/],
    [body({ ...good, x: "soon" }), /bad expiry/],
    [body({ ...good, c: "md5:xx" }), /bad CA fingerprint/],
    [body({ ...good, h: [] }), /bad host key fingerprints/],
    [TOKEN_PREFIX + "A".repeat(9000), /longer than/],
  ];
  for (const [text, re] of cases) {
    const r = decodeToken(text);
    assert.ok(r instanceof Error, text.slice(0, 40));
    assert.match(r.message, re);
  }
  for (let i = 0; i < 500; i++) {
    const junk = TOKEN_PREFIX + randomBytes(Math.floor(Math.random() * 300)).toString("base64url");
    assert.ok(decodeToken(junk) instanceof Error);
  }
});
