import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  FOREVER,
  isCertificateType,
  parseCertificate,
  plainKeyType,
} from "../../../src/shared/certificates/index.js";
import { RevtunError } from "../../../src/shared/errors.js";
import { blobOf, type KeyKind, TestCa } from "../../helpers/ca.js";

describe("parseCertificate on ssh-keygen -s output", () => {
  const ca = new TestCa();
  let caKey: string;
  before(() => {
    caKey = ca.key("ed25519", "ca");
  });
  after(() => ca.close());

  const kinds: Array<[KeyKind, string, string]> = [
    ["ed25519", "ssh-ed25519-cert-v01@openssh.com", "ssh-ed25519"],
    ["ecdsa256", "ecdsa-sha2-nistp256-cert-v01@openssh.com", "ecdsa-sha2-nistp256"],
    ["ecdsa384", "ecdsa-sha2-nistp384-cert-v01@openssh.com", "ecdsa-sha2-nistp384"],
    ["ecdsa521", "ecdsa-sha2-nistp521-cert-v01@openssh.com", "ecdsa-sha2-nistp521"],
    ["rsa", "ssh-rsa-cert-v01@openssh.com", "ssh-rsa"],
  ];
  for (const [kind, type, keyType] of kinds) {
    it(`reads every field of a ${kind} user certificate`, () => {
      const key = ca.key(kind);
      const certFile = ca.sign(caKey, key, {
        id: `id for ${kind}`,
        principals: ["device42", "ops"],
        serial: 4_000_000_000_123n,
        validity: "20300101000000:20300201000000",
        options: ["source-address=127.0.0.1/32,::1", "no-pty"],
      });
      const cert = parseCertificate(blobOf(certFile));
      assert.equal(cert.type, type);
      assert.equal(cert.keyType, keyType);
      assert.equal(isCertificateType(type), true);
      assert.equal(plainKeyType(type), keyType);
      assert.deepEqual(cert.publicKey, blobOf(`${key}.pub`), "certified key = the key's own .pub blob");
      assert.deepEqual(cert.signatureKey, blobOf(`${caKey}.pub`));
      assert.equal(cert.serial, 4_000_000_000_123n);
      assert.equal(cert.certType, "user");
      assert.equal(cert.keyId, `id for ${kind}`);
      assert.deepEqual(cert.principals, ["device42", "ops"]);
      // ssh-keygen -V reads YYYYMMDDHHMMSS as local time.
      assert.equal(cert.validAfter, BigInt(new Date(2030, 0, 1).getTime() / 1000));
      assert.equal(cert.validBefore, BigInt(new Date(2030, 1, 1).getTime() / 1000));
      assert.deepEqual([...cert.criticalOptions], [["source-address", "127.0.0.1/32,::1"]]);
      assert.deepEqual([...cert.extensions.keys()].sort(), [
        "permit-X11-forwarding",
        "permit-agent-forwarding",
        "permit-port-forwarding",
        "permit-user-rc",
      ]);
      assert.equal(cert.nonce.length, 32);
      assert.deepEqual(cert.raw, blobOf(certFile));
      assert.deepEqual(cert.signedData, cert.raw.subarray(0, cert.raw.length - 4 - cert.signature.length));
    });
  }

  it("reads a host certificate, -O clear, and the defaults (serial 0, forever)", () => {
    const key = ca.key("ed25519");
    const host = parseCertificate(blobOf(ca.sign(caKey, key, { host: true, principals: ["relay.example"] })));
    assert.equal(host.certType, "host");
    assert.equal(host.serial, 0n);
    assert.equal(host.validAfter, 0n);
    assert.equal(host.validBefore, FOREVER);
    assert.equal(host.extensions.size, 0);
    const clear = parseCertificate(blobOf(ca.sign(caKey, key, { options: ["clear"] })));
    assert.equal(clear.extensions.size, 0);
    assert.deepEqual(clear.principals, []);
  });

  it("refuses a plain key, every truncation and trailing bytes, each with one line", () => {
    const key = ca.key("ed25519");
    const blob = blobOf(ca.sign(caKey, key, { principals: ["a"] }));
    assert.throws(
      () => parseCertificate(blobOf(`${key}.pub`)),
      (e: unknown) => e instanceof RevtunError && /"ssh-ed25519" is not a certificate type/.test(e.message),
    );
    for (let n = 0; n < blob.length; n += 7) {
      assert.throws(
        () => parseCertificate(blob.subarray(0, n)),
        (e: unknown) => e instanceof RevtunError && e.code === "CERTIFICATE" && !e.message.includes("\n"),
        `truncated to ${n}`,
      );
    }
    assert.throws(
      () => parseCertificate(Buffer.concat([blob, Buffer.from([0])])),
      /1 unexpected trailing bytes/,
    );
    // A NUL inside a principal (same length, so only the byte changes), as OpenSSH refuses it.
    const nul = Buffer.from(blob);
    const principals = blob.indexOf(Buffer.from([0, 0, 0, 5, 0, 0, 0, 1, 0x61]));
    assert.ok(principals > 0, "the principals field of [a]");
    nul[principals + 8] = 0;
    assert.throws(() => parseCertificate(nul), /certificate principals: principal contains a NUL byte/);
  });
});
