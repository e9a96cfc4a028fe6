import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  expandTilde,
  formatEndpoint,
  formatHostPort,
  parseUserHostPort,
  sshHostName,
} from "../../src/shared/address.js";
import { RevtunError } from "../../src/shared/errors.js";

describe("address formatting", () => {
  test("IPv6 hosts in brackets, ssh's [host]:port names", () => {
    assert.equal(formatHostPort("10.0.0.1", 22), "10.0.0.1:22");
    assert.equal(formatHostPort("::1", 8080), "[::1]:8080");
    assert.equal(sshHostName("relay", 22), "relay");
    assert.equal(sshHostName("relay", 2222), "[relay]:2222");
    assert.equal(formatEndpoint({ kind: "unix", path: "/run/x.sock" }), "/run/x.sock");
    assert.equal(formatEndpoint({ kind: "tcp", host: "fe80::1", port: 80 }), "[fe80::1]:80");
  });

  test("~ expands against the given home only at the start", () => {
    assert.equal(expandTilde("~", "/home/u"), "/home/u");
    assert.equal(expandTilde("~/.ssh/id", "/home/u"), "/home/u/.ssh/id");
    assert.equal(expandTilde("/etc/~x", "/home/u"), "/etc/~x");
    assert.equal(expandTilde("~other/x", "/home/u"), "~other/x");
  });
});

describe("parseUserHostPort", () => {
  test("user, host and port in every spelling ssh takes", () => {
    assert.deepEqual(parseUserHostPort("me@b:2200", "jump host"), { user: "me", host: "b", port: 2200 });
    assert.deepEqual(parseUserHostPort("[::1]:22", "jump host"), { host: "::1", port: 22 });
    assert.deepEqual(parseUserHostPort("ssh://u@c:2/", "jump host"), { user: "u", host: "c", port: 2 });
    assert.deepEqual(parseUserHostPort("x@y@d", "jump host"), { user: "x@y", host: "d" });
  });

  test("a destination reads a colon as part of the host, as ssh does, unless ssh://", () => {
    assert.deepEqual(parseUserHostPort("::1", "destination", { allowPort: false }), { host: "::1" });
    assert.deepEqual(parseUserHostPort("ssh://h:2222", "destination", { allowPort: false }), {
      host: "h",
      port: 2222,
    });
  });

  test("bad input is a USAGE error that names the value and the problem", () => {
    const cases: [string, RegExp][] = [
      ["", /bad jump host "": it is empty/],
      ["@h", /bad jump host "@h": the user before @ is empty/],
      ["u@", /bad jump host "u@": the host is empty/],
      ["h:99999", /bad jump host "h:99999": port "99999" is not 1-65535/],
      ["a:b:c", /write an IPv6 address in brackets/],
    ];
    for (const [text, re] of cases) {
      assert.throws(
        () => parseUserHostPort(text, "jump host"),
        (e: unknown) => e instanceof RevtunError && e.code === "USAGE" && re.test(e.message),
        text,
      );
    }
  });
});
