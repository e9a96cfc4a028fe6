import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  parseConfigRemoteForward,
  parseRemoteForward,
  wireBindAddress,
} from "../../src/agent/forward-spec.js";
import { RevtunError } from "../../src/shared/errors.js";

describe("parseRemoteForward", () => {
  const cases: [string, unknown, unknown][] = [
    [
      "8080:localhost:80",
      { kind: "tcp", address: undefined, port: 8080 },
      { kind: "tcp", host: "localhost", port: 80 },
    ],
    [
      "0:127.0.0.1:80",
      { kind: "tcp", address: undefined, port: 0 },
      { kind: "tcp", host: "127.0.0.1", port: 80 },
    ],
    [
      "0.0.0.0:8080:web:8000",
      { kind: "tcp", address: "0.0.0.0", port: 8080 },
      { kind: "tcp", host: "web", port: 8000 },
    ],
    ["*:8080:web:8000", { kind: "tcp", address: "*", port: 8080 }, { kind: "tcp", host: "web", port: 8000 }],
    [":8080:web:8000", { kind: "tcp", address: "", port: 8080 }, { kind: "tcp", host: "web", port: 8000 }],
    [
      "[::1]:8080:[::1]:80",
      { kind: "tcp", address: "::1", port: 8080 },
      { kind: "tcp", host: "::1", port: 80 },
    ],
    [
      "[fe80::1]:0:[2001:db8::2]:443",
      { kind: "tcp", address: "fe80::1", port: 0 },
      { kind: "tcp", host: "2001:db8::2", port: 443 },
    ],
    [
      "8080:/run/app.sock",
      { kind: "tcp", address: undefined, port: 8080 },
      { kind: "unix", path: "/run/app.sock" },
    ],
    [
      "/tmp/remote.sock:localhost:80",
      { kind: "unix", path: "/tmp/remote.sock" },
      { kind: "tcp", host: "localhost", port: 80 },
    ],
    ["/tmp/r.sock:/tmp/l.sock", { kind: "unix", path: "/tmp/r.sock" }, { kind: "unix", path: "/tmp/l.sock" }],
  ];
  for (const [spec, bind, target] of cases) {
    it(`parses ${spec}`, () => {
      const f = parseRemoteForward(spec);
      assert.deepEqual(f.bind, bind);
      assert.deepEqual(f.target, target);
      assert.equal(f.text, spec);
    });
  }

  const bad: [string, RegExp][] = [
    ["", /is empty/],
    ["8080", /expected \[bind_address:\]port:host:hostport/],
    ["8080:localhost", /expected \[bind_address:\]port:host:hostport/],
    ["a:b:c:d:e", /too many/],
    ["70000:localhost:80", /port 70000 is out of range/],
    ["80:localhost:0", /hostport 0 is out of range/],
    ["x:localhost:80", /port "x" is not a port number/],
    ["80::80", /target host is empty/],
  ];
  for (const [spec, re] of bad) {
    it(`rejects "${spec}" naming it`, () => {
      assert.throws(
        () => parseRemoteForward(spec),
        (e: unknown) =>
          e instanceof RevtunError &&
          e.code === "USAGE" &&
          re.test(e.message) &&
          e.message.includes(`"${spec}"`),
      );
    });
  }
});

describe("parseConfigRemoteForward", () => {
  it("takes ssh_config's two-field form", () => {
    const f = parseConfigRemoteForward("127.0.0.1:8080 localhost:80");
    assert.deepEqual(f.bind, { kind: "tcp", address: "127.0.0.1", port: 8080 });
    assert.deepEqual(f.target, { kind: "tcp", host: "localhost", port: 80 });
  });
  it("rejects one field", () => {
    assert.throws(() => parseConfigRemoteForward("8080:localhost:80"), /two fields/);
  });
});

describe("wireBindAddress", () => {
  it("follows OpenSSH's channel_rfwd_bind_host", () => {
    assert.equal(wireBindAddress(undefined), "localhost");
    assert.equal(wireBindAddress("*"), "");
    assert.equal(wireBindAddress(""), "");
    assert.equal(wireBindAddress("0.0.0.0"), "0.0.0.0");
    assert.equal(wireBindAddress("::1"), "::1");
  });
});

describe("tunnel names as bind addresses", () => {
  it("-R and RemoteForward take a name and send it as given (the relay echoes it back)", () => {
    const r = parseRemoteForward("device42:22:localhost:22");
    assert.deepEqual(r.bind, { kind: "tcp", address: "device42", port: 22 });
    assert.equal(wireBindAddress("device42"), "device42");
    assert.equal(wireBindAddress("Device42.Fleet"), "Device42.Fleet");
    const c = parseConfigRemoteForward("device42:22 localhost:22");
    assert.deepEqual(c.bind, r.bind);
    assert.deepEqual(c.target, r.target);
    assert.equal(c.text, "device42:22 localhost:22");
  });
});
