import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseTunnelsConfig } from "../../src/config/tunnels-file.js";
import { RevtunError } from "../../src/shared/errors.js";

const good = `tunnels:
  web:
    HostName: relay.example.net
    Port: 2222
    user: device
    IdentityFile: ~/.ssh/id_ed25519
    ServerAliveInterval: 10
    ExitOnForwardFailure: true
    RemoteForward:
      - "127.0.0.1:8080 127.0.0.1:80"    # ssh_config form
      - "0 localhost:22"
  db:
    HostName: other.example.net
    RemoteForward: "5432 127.0.0.1:5432"
`;

describe("parseTunnelsConfig", () => {
  it("maps ssh_config directive names, any case, to options", () => {
    const c = parseTunnelsConfig(good, "t.yaml");
    assert.deepEqual(
      c.tunnels.map((t) => t.name),
      ["web", "db"],
    );
    const web = c.tunnels[0]?.ssh;
    assert.equal(web?.hostName, "relay.example.net");
    assert.equal(web?.port, 2222);
    assert.equal(web?.user, "device");
    assert.equal(web?.serverAliveInterval, 10);
    assert.equal(web?.exitOnForwardFailure, true);
    assert.equal(web?.remoteForward?.length, 2);
  });

  it("takes CertificateFile as one path or a list", () => {
    const c = parseTunnelsConfig(
      "tunnels:\n  a:\n    CertificateFile: ~/c1-cert.pub\n    RemoteForward: '0 h:1'\n  b:\n    certificatefile: [~/c1-cert.pub, ~/c2-cert.pub]\n    RemoteForward: '0 h:1'\n",
      "c.yaml",
    );
    assert.deepEqual(c.tunnels[0]?.ssh.certificateFile, ["~/c1-cert.pub"]);
    assert.deepEqual(c.tunnels[1]?.ssh.certificateFile, ["~/c1-cert.pub", "~/c2-cert.pub"]);
  });

  it("gives equal fingerprints to equal definitions, whatever the key order or case", () => {
    const a = parseTunnelsConfig("tunnels:\n  x:\n    Port: 22\n    RemoteForward: '0 h:1'\n", "a");
    const b = parseTunnelsConfig("tunnels:\n  x:\n    remoteforward: '0 h:1'\n    port: 22\n", "b");
    const c = parseTunnelsConfig("tunnels:\n  x:\n    remoteforward: '0 h:2'\n    port: 22\n", "c");
    assert.equal(a.tunnels[0]?.fingerprint, b.tunnels[0]?.fingerprint);
    assert.notEqual(a.tunnels[0]?.fingerprint, c.tunnels[0]?.fingerprint);
  });

  const bad: [string, string, RegExp][] = [
    [
      "bad value",
      "tunnels:\n  web:\n    Port: http\n    RemoteForward: '0 h:1'\n",
      /^t\.yaml:3: tunnel "web", field Port: bad value for Port: "http"/,
    ],
    [
      "unknown directive",
      "tunnels:\n  web:\n    RemoteForward: '0 h:1'\n    Frobnicate: yes\n",
      /^t\.yaml:4: tunnel "web", field Frobnicate: unsupported directive/,
    ],
    [
      "bad forward",
      "tunnels:\n  web:\n    RemoteForward:\n      - '0 h:1'\n      - '80'\n",
      /^t\.yaml:3: tunnel "web", field RemoteForward: bad RemoteForward "80"/,
    ],
    ["no forward", "tunnels:\n  web:\n    Port: 22\n", /^t\.yaml:2: tunnel "web": no RemoteForward/],
    ["wrong type", "tunnels:\n  web:\n    Port: {a: 1}\n", /^t\.yaml:3: tunnel "web", field Port: /],
    ["unknown top-level key", "tunels:\n  web: {}\n", /t\.yaml:1: "tunels"|t\.yaml.*tunnels/],
    ["not YAML", "tunnels: [\n", /^t\.yaml:\d+: not valid YAML/],
  ];
  for (const [what, text, re] of bad) {
    it(`names tunnel, field and line: ${what}`, () => {
      assert.throws(
        () => parseTunnelsConfig(text, "t.yaml"),
        (e: unknown) => e instanceof RevtunError && e.code === "CONFIG" && re.test(e.message),
      );
    });
  }
});
