import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { parseCertificate, parseKrl, parseRevokedKeys } from "../../../src/shared/certificates/index.js";
import { RevtunError } from "../../../src/shared/errors.js";
import { blobOf, TestCa } from "../../helpers/ca.js";

/** OpenSSH's own answer: does `ssh-keygen -Q` find `file` in the KRL? */
function opensshRevokes(krl: string, file: string): boolean {
  try {
    execFileSync("ssh-keygen", ["-Q", "-f", krl, file], { stdio: "pipe" });
    return false;
  } catch {
    return true;
  }
}

describe("KRL parser on ssh-keygen -k output", () => {
  const ca = new TestCa();
  after(() => ca.close());
  const caKey = ca.key("ed25519", "ca");
  const otherCa = ca.key("ed25519", "other-ca");
  const key = ca.key("ed25519", "device");

  /** A certificate file for `key` with `serial` and `id`, signed by `by`. */
  function certFile(serial: number, id: string, by = caKey): string {
    const k = ca.key("ed25519", `k-${serial}-${id}-${by.endsWith("other-ca") ? "o" : "c"}`);
    return ca.sign(by, k, { serial, id, principals: ["p"] });
  }

  function krlOf(spec: string, withCa = true): string {
    const specFile = join(ca.dir, `spec-${Math.random().toString(36).slice(2)}`);
    writeFileSync(specFile, spec);
    const out = `${specFile}.krl`;
    ca.keygen(["-k", "-f", out, ...(withCa ? ["-s", `${caKey}.pub`] : []), specFile]);
    return out;
  }

  it("revokes by serial, serial range and a dense serial set (bitmap) exactly as ssh-keygen -Q", () => {
    const dense = Array.from({ length: 40 }, (_, i) => `serial: ${100 + 2 * i}`).join("\n");
    const file = krlOf(`serial: 5\nserial: 10-20\nserial: 1000-5000000\n${dense}\n`);
    const list = parseRevokedKeys(readFileSync(file));
    assert.equal(list.kind, "krl");
    // ssh-keygen wrote all three serial forms: 0x21 range, 0x22 bitmaps (0x20 lists are for sparse sets).
    const sections = parseKrl(readFileSync(file)).certificates[0];
    assert.ok(sections?.serials.some(([lo, hi]) => lo === 1000n && hi === 5_000_000n));
    for (const serial of [
      4, 5, 6, 9, 10, 15, 20, 21, 99, 100, 101, 102, 177, 178, 179, 180, 181, 999, 1000, 4_999_999, 5_000_000,
      5_000_001,
    ]) {
      const f = certFile(serial, `s${serial}`);
      const ours = list.isRevoked(parseCertificate(blobOf(f)));
      assert.equal(ours !== undefined, opensshRevokes(file, f), `serial ${serial}: ours ${ours}`);
      if (ours) assert.match(ours, new RegExp(`^serial ${serial} of CA SHA256:`));
    }
    // The same serial from another CA is not revoked by this CA's section.
    assert.equal(list.isRevoked(parseCertificate(blobOf(certFile(5, "o5", otherCa)))), undefined);
  });

  it("revokes by key id and by explicit key, for a certificate and for the plain key", () => {
    const file = krlOf(`id: device42-2026\n`);
    const list = parseRevokedKeys(readFileSync(file));
    assert.match(
      list.isRevoked(parseCertificate(blobOf(certFile(1, "device42-2026")))) ?? "",
      /^key id "device42-2026" is revoked$/,
    );
    assert.equal(list.isRevoked(parseCertificate(blobOf(certFile(2, "device43-2026")))), undefined);

    const byKey = ca.key("ed25519", "by-key");
    const keyKrl = join(ca.dir, "keys.krl");
    ca.keygen(["-k", "-f", keyKrl, `${byKey}.pub`]);
    const keys = parseRevokedKeys(readFileSync(keyKrl));
    assert.match(keys.isRevoked(blobOf(`${byKey}.pub`)) ?? "", /^key SHA256:\S+ is revoked$/);
    const cert = parseCertificate(blobOf(ca.sign(caKey, byKey, { principals: ["p"] })));
    assert.ok(keys.isRevoked(cert), "a certificate of a revoked key is revoked");
    assert.equal(keys.isRevoked(blobOf(`${key}.pub`)), undefined);
    assert.equal(opensshRevokes(keyKrl, `${byKey}.pub`), true);
  });

  it("revokes by SHA1 and SHA256 key hashes and by CA key", () => {
    const fp = execFileSync("ssh-keygen", ["-lf", `${key}.pub`], { encoding: "utf8" }).split(" ")[1];
    const file = krlOf(`hash: ${fp}\nsha1: ${readFileSync(`${otherCa}.pub`, "utf8")}`, false);
    const list = parseRevokedKeys(readFileSync(file));
    assert.ok(list.isRevoked(blobOf(`${key}.pub`)), "sha256 hash");
    assert.ok(list.isRevoked(blobOf(`${otherCa}.pub`)), "sha1 hash");
    const underRevokedCa = parseCertificate(blobOf(certFile(3, "x", otherCa)));
    assert.match(list.isRevoked(underRevokedCa) ?? "", /^its CA key SHA256:\S+ is revoked$/);
    assert.equal(list.isRevoked(blobOf(`${caKey}.pub`)), undefined);
  });

  it("refuses a malformed KRL with one line, and reads version and comment", () => {
    const good = readFileSync(krlOf("serial: 1\n"));
    const krl = parseKrl(good);
    assert.equal(krl.certificates.length, 1);
    for (let n = 8; n < good.length; n++) {
      const cut = good.subarray(0, n);
      try {
        parseKrl(cut);
      } catch (err) {
        assert.ok(err instanceof RevtunError && !err.message.includes("\n"), String(err));
      }
    }
    const unknown = Buffer.concat([good, Buffer.from([9, 0, 0, 0, 0])]);
    assert.throws(() => parseKrl(unknown), /KRL section type 9 is unknown/);
  });
});

describe("a plain revoked keys list", () => {
  const ca = new TestCa();
  after(() => ca.close());
  const a = ca.key("ed25519", "a");
  const b = ca.key("rsa", "b");
  const caKey = ca.key("ed25519", "ca");

  it("revokes listed keys, certificates of them, and certificates of a listed CA", () => {
    const text = `# revoked\n${readFileSync(`${a}.pub`, "utf8")}\n${readFileSync(`${caKey}.pub`, "utf8")}`;
    const list = parseRevokedKeys(Buffer.from(text), "revoked_keys");
    assert.equal(list.kind, "keys");
    assert.equal(list.size, 2);
    assert.match(list.isRevoked(blobOf(`${a}.pub`)) ?? "", /^key SHA256:\S+ is listed in revoked_keys$/);
    assert.equal(list.isRevoked(blobOf(`${b}.pub`)), undefined);
    const cert = parseCertificate(blobOf(ca.sign(caKey, b, { principals: ["p"] })));
    assert.match(list.isRevoked(cert) ?? "", /^its CA key SHA256:/);
  });

  it("refuses a line that is not a key, naming the file and line", () => {
    assert.throws(
      () =>
        parseRevokedKeys(Buffer.from(`${readFileSync(`${a}.pub`, "utf8")}\nssh-ed25519 AAAAnotakey\n`), "rk"),
      (e: unknown) =>
        e instanceof RevtunError && /^rk:3: not a public key or a KRL \(type "ssh-ed25519"\)/.test(e.message),
    );
  });
});
