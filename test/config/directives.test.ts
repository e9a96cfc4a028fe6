import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { applyDashO, parseDashO, type SshOptions, setOption } from "../../src/config/directives.js";

describe("options", () => {
  it("accepts Name=value, Name value and Name = value, case-insensitively", () => {
    assert.deepEqual(parseDashO("ServerAliveInterval=5"), { name: "ServerAliveInterval", value: "5" });
    assert.deepEqual(parseDashO("serveraliveinterval 5"), { name: "serveraliveinterval", value: "5" });
    assert.deepEqual(parseDashO("Port = 2222"), { name: "Port", value: "2222" });
    const o: SshOptions = {};
    applyDashO(o, "STRICTHOSTKEYCHECKING=accept-new");
    applyDashO(o, "exitonforwardfailure=yes");
    assert.equal(o.strictHostKeyChecking, "accept-new");
    assert.equal(o.exitOnForwardFailure, true);
  });

  it("keeps the first value, as ssh does, but accumulates IdentityFile and RemoteForward", () => {
    const o: SshOptions = {};
    assert.equal(setOption(o, "Port", "2222"), "set");
    assert.equal(setOption(o, "Port", "22"), "kept");
    setOption(o, "IdentityFile", "~/.ssh/a");
    setOption(o, "IdentityFile", "~/.ssh/b");
    setOption(o, "RemoteForward", "8080 localhost:80");
    setOption(o, "RemoteForward", "8081 localhost:81");
    assert.equal(o.port, 2222);
    assert.deepEqual(o.identityFile, ["~/.ssh/a", "~/.ssh/b"]);
    assert.equal(o.remoteForward?.length, 2);
  });

  it("CertificateFile: accepted by -o, and accumulates like IdentityFile", () => {
    const o: SshOptions = {};
    applyDashO(o, "CertificateFile=~/.ssh/a-cert.pub");
    applyDashO(o, "certificatefile ~/.ssh/b-cert.pub");
    assert.deepEqual(o.certificateFile, ["~/.ssh/a-cert.pub", "~/.ssh/b-cert.pub"]);
  });

  it("parses every StrictHostKeyChecking spelling", () => {
    for (const [v, want] of [
      ["yes", "yes"],
      ["accept-new", "accept-new"],
      ["no", "no"],
      ["off", "no"],
      ["ask", "ask"],
    ]) {
      const o: SshOptions = {};
      setOption(o, "StrictHostKeyChecking", v ?? "");
      assert.equal(o.strictHostKeyChecking, want);
    }
  });

  it("accepts options meaningless for a forward-only session, and rejects unknown ones naming them", () => {
    const o: SshOptions = {};
    applyDashO(o, "RequestTTY=no");
    assert.deepEqual(o, {});
    assert.throws(
      () => applyDashO(o, "Compression=yes"),
      /unsupported option "Compression" in -o Compression=yes/,
    );
    assert.throws(
      () => applyDashO(o, "Port=http"),
      /bad value for Port: "http" \(expected a whole number from 1 to 65535\)/,
    );
    assert.throws(
      () => applyDashO(o, "ExitOnForwardFailure=maybe"),
      /ExitOnForwardFailure: "maybe" \(expected yes or no\)/,
    );
    assert.throws(() => applyDashO(o, "Port"), /bad -o argument "Port"/);
  });
});
