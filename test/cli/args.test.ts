import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseArgs } from "../../src/cli/args.js";
import { parseUserHostPort } from "../../src/shared/address.js";

const parseDestination = (d: string) => parseUserHostPort(d, "destination", { allowPort: false });

describe("parseArgs", () => {
  it("reads ssh's flags: bundled, attached and separate values", () => {
    const a = parseArgs([
      "-Nv",
      "-p2222",
      "-l",
      "dev",
      "-i",
      "k1",
      "-ik2",
      "-oServerAliveInterval=5",
      "-R",
      "0:localhost:80",
      "-R8080:localhost:81",
      "relay",
    ]);
    assert.equal(a.verbose, 1);
    assert.equal(a.ssh.port, 2222);
    assert.equal(a.ssh.user, "dev");
    assert.deepEqual(a.ssh.identityFile, ["k1", "k2"]);
    assert.equal(a.ssh.serverAliveInterval, 5);
    assert.equal(a.forwards.length, 2);
    assert.equal(a.destination, "relay");
  });
  it("reads revtun's long options", () => {
    const a = parseArgs([
      "--metrics",
      "9100",
      "--log-format=json",
      "--grace",
      "3",
      "--max-backoff",
      "5",
      "-R",
      "0:h:1",
      "x",
    ]);
    assert.equal(a.metrics, "9100");
    assert.equal(a.logFormat, "json");
    assert.equal(a.graceSeconds, 3);
    assert.equal(a.maxBackoffSeconds, 5);
  });
  it("names the offending argument", () => {
    assert.throws(() => parseArgs(["-p"]), /option -p needs a value/);
    assert.throws(() => parseArgs(["-D", "1080", "h"]), /-D is an ssh option revtun does not support/);
    assert.throws(() => parseArgs(["--log-format", "xml"]), /bad --log-format "xml"/);
  });
});

describe("parseDestination", () => {
  it("splits user@host, ssh:// URIs and IPv6", () => {
    assert.deepEqual(parseDestination("root@127.0.0.1"), { user: "root", host: "127.0.0.1" });
    assert.deepEqual(parseDestination("host"), { host: "host" });
    assert.deepEqual(parseDestination("ssh://me@[::1]:2222"), { user: "me", host: "::1", port: 2222 });
    assert.deepEqual(parseDestination("a@b@host"), { user: "a@b", host: "host" });
    assert.throws(() => parseDestination("@host"), /bad destination "@host"/);
  });
});
