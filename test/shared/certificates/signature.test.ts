import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import {
  parseCertificate,
  parseSignatureBlob,
  verifyCertificateSignature,
} from "../../../src/shared/certificates/index.js";
import { blobOf, type KeyKind, TestCa } from "../../helpers/ca.js";

describe("verifyCertificateSignature (node:crypto) on ssh-keygen -s output", () => {
  const ca = new TestCa();
  after(() => ca.close());
  const user = ca.key("ed25519", "user");

  const cases: Array<[KeyKind, string | undefined, string]> = [
    ["ed25519", undefined, "ssh-ed25519"],
    ["ecdsa256", undefined, "ecdsa-sha2-nistp256"],
    ["ecdsa384", undefined, "ecdsa-sha2-nistp384"],
    ["ecdsa521", undefined, "ecdsa-sha2-nistp521"],
    ["rsa", "rsa-sha2-512", "rsa-sha2-512"],
    ["rsa", "rsa-sha2-256", "rsa-sha2-256"],
    ["rsa", "ssh-rsa", "ssh-rsa"],
  ];
  const rsaCa = ca.key("rsa", "ca-rsa");
  for (const [kind, alg, expected] of cases) {
    it(`${kind} CA${alg ? ` (${alg})` : ""}: verifies, and a corrupted signature or body does not`, () => {
      const caKey = kind === "rsa" ? rsaCa : ca.key(kind, `ca-${kind}`);
      const cert = parseCertificate(
        blobOf(ca.sign(caKey, user, { principals: ["p"], ...(alg ? { signatureAlgorithm: alg } : {}) })),
      );
      assert.equal(parseSignatureBlob(cert.signature)?.algorithm, expected);
      assert.equal(verifyCertificateSignature(cert), true);
      // The last byte of the signature blob is signature material for every algorithm.
      const badSig = Buffer.from(cert.raw);
      badSig[badSig.length - 1] = (badSig[badSig.length - 1] as number) ^ 0x01;
      assert.equal(verifyCertificateSignature(parseCertificate(badSig)), false, "corrupted signature");
      // A changed key id (the signed body) must not verify either.
      const at = cert.raw.indexOf(Buffer.from("test-cert"));
      const badBody = Buffer.from(cert.raw);
      badBody[at] = "T".charCodeAt(0);
      assert.equal(parseCertificate(badBody).keyId, "Test-cert");
      assert.equal(verifyCertificateSignature(parseCertificate(badBody)), false, "changed body");
    });
  }

  it("a certificate re-labelled with another CA's key does not verify", () => {
    const a = parseCertificate(blobOf(ca.sign(ca.key("ed25519", "ca-a"), user, { principals: ["p"] })));
    const other = blobOf(`${ca.key("ed25519", "ca-b")}.pub`);
    assert.equal(verifyCertificateSignature({ ...a, signatureKey: other }), false);
  });
});
