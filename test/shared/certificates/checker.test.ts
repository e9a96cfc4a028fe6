import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { CertChecker, type CertPolicy, parseCertificate } from "../../../src/shared/certificates/index.js";
import { RevtunError } from "../../../src/shared/errors.js";
import { blobOf, TestCa } from "../../helpers/ca.js";

describe("CertChecker on ssh-keygen -s certificates", () => {
  const ca = new TestCa();
  after(() => ca.close());
  const caKey = ca.key("ed25519", "ca");
  const caBlob = blobOf(`${caKey}.pub`);
  const user = ca.key("ecdsa256", "user");
  const cert = (o: Parameters<TestCa["sign"]>[2] = {}) =>
    parseCertificate(
      blobOf(ca.sign(caKey, user, { id: "device42-2026", serial: 42, principals: ["device42"], ...o })),
    );
  const checker = (p: Partial<CertPolicy> = {}) =>
    new CertChecker({ certType: "user", isAuthority: (b) => b.equals(caBlob), ...p });

  /** The one-line message a refusal gives, which must name the certificate. */
  function refusal(fn: () => void): string {
    try {
      fn();
    } catch (err) {
      assert.ok(err instanceof RevtunError, String(err));
      assert.equal(err.code, "CERTIFICATE");
      assert.ok(!err.message.includes("\n"), err.message);
      assert.match(err.message, /^certificate "device42-2026" \(serial 42, CA SHA256:/);
      return err.message;
    }
    assert.fail("expected a refusal");
  }

  it("accepts a valid user certificate for its principal, or for any principal (undefined)", () => {
    checker().check(cert(), "device42");
    checker().check(cert(), undefined);
  });

  it("refuses a host certificate where a user certificate is needed, and the reverse", () => {
    assert.match(
      refusal(() => checker().check(cert({ host: true }), "device42")),
      /is a host certificate; a user certificate is needed/,
    );
    assert.match(
      refusal(() => checker({ certType: "host" }).check(cert(), "device42")),
      /is a user certificate; a host certificate is needed here \(ssh-keygen -s -h\)/,
    );
  });

  it("refuses a certificate from an unknown CA, naming the CA's fingerprint", () => {
    const other = ca.key("ed25519", "other-ca");
    const foreign = parseCertificate(blobOf(ca.sign(other, user, { id: "device42-2026", serial: 42 })));
    const msg = refusal(() => checker().check(foreign, "device42"));
    const fp = /SHA256:[A-Za-z0-9+/]+/.exec(msg)?.[0];
    assert.match(
      msg,
      new RegExp(`signed by a CA that is not trusted here \\(${fp?.replace(/[+/]/g, "\\$&")}\\)$`),
    );
  });

  it("refuses a corrupted CA signature", () => {
    const good = cert();
    const bad = Buffer.from(good.raw);
    bad[bad.length - 1] = (bad[bad.length - 1] as number) ^ 0x80;
    assert.match(
      refusal(() => checker().check(parseCertificate(bad), "device42")),
      /CA signature that does not verify/,
    );
  });

  it("refuses expired and not-yet-valid certificates with the instants, and honours a clock and skew", () => {
    assert.match(
      refusal(() => checker().check(cert({ validity: "20200101000000Z:20200102000000Z" }), "device42")),
      /expired at 2020-01-02T00:00:00Z \(it is 20\d\d-/,
    );
    const future = cert({ validity: "+1d:+2d" });
    assert.match(
      refusal(() => checker().check(future, "device42")),
      /is not valid yet: valid from 20\d\d-.*, and it is/,
    );
    const at = (s: bigint) => () => new Date(Number(s) * 1000);
    // valid after is inclusive, valid before exclusive (sshkey.c).
    checker({ clock: at(future.validAfter) }).check(future, "device42");
    refusal(() => checker({ clock: at(future.validBefore) }).check(future, "device42"));
    checker({ clock: at(future.validAfter - 30n), skewSeconds: 60 }).check(future, "device42");
    checker({ clock: at(future.validBefore + 30n), skewSeconds: 60 }).check(future, "device42");
  });

  it("refuses a principal the certificate does not list, naming both", () => {
    assert.match(
      refusal(() => checker().check(cert({ principals: ["device42", "ops"] }), "device43")),
      /is not valid for "device43": its principals are "device42", "ops"$/,
    );
    // No principals: any name, as sshd on a cert-authority line; refused when the policy requires one.
    checker().check(cert({ principals: [] }), "anyone");
    assert.match(
      refusal(() => checker({ requirePrincipal: true }).check(cert({ principals: [] }), "x")),
      /lists no principals/,
    );
  });

  it("refuses an unknown critical option and accepts a supported one", () => {
    const forced = cert({ options: ["force-command=/bin/true"] });
    assert.match(
      refusal(() => checker({ supportedCriticalOptions: ["source-address"] }).check(forced, "device42")),
      /has critical option "force-command", which is not supported here \(supported: source-address\); sign it again without -O force-command$/,
    );
    checker({ supportedCriticalOptions: ["source-address"] }).check(
      cert({ options: ["source-address=127.0.0.1"] }),
      "device42",
    );
  });

  it("refuses an ssh-rsa (SHA-1) CA signature by default, as sshd since 8.2", () => {
    const rsaCa = ca.key("rsa", "rsa-ca");
    const rsaBlob = blobOf(`${rsaCa}.pub`);
    const sha1 = parseCertificate(
      blobOf(ca.sign(rsaCa, user, { id: "device42-2026", serial: 42, signatureAlgorithm: "ssh-rsa" })),
    );
    const policy = { isAuthority: (b: Buffer) => b.equals(rsaBlob) };
    assert.match(
      refusal(() => checker(policy).check(sha1, "device42")),
      /signed with ssh-rsa \(RSA\/SHA-1\).*rsa-sha2-512$/,
    );
    checker({ ...policy, caSignatureAlgorithms: ["ssh-rsa"] }).check(sha1, "device42");
    const sha512 = parseCertificate(blobOf(ca.sign(rsaCa, user, { id: "device42-2026", serial: 42 })));
    checker(policy).check(sha512, "device42");
  });

  it("refuses a revoked certificate with the policy's reason", () => {
    const c = cert();
    assert.match(
      refusal(() =>
        checker({ isRevoked: (x) => (x.serial === 42n ? "serial 42 is revoked" : undefined) }).check(
          c,
          "device42",
        ),
      ),
      /is revoked \(serial 42 is revoked\)$/,
    );
  });
});
