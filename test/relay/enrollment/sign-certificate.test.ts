/**
 * Certificates the relay's CA signs are OpenSSH's: `ssh-keygen -L` reads them
 * back (it verifies the CA signature while parsing), and a real sshd with
 * TrustedUserCAKeys lets stock ssh log in with one, for ed25519, ECDSA and
 * RSA CA keys.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { parseCertificateAuthority } from "../../../src/relay/enrollment/certificate-authority.js";
import { certificateLine, signCertificate } from "../../../src/relay/enrollment/sign-certificate.js";
import { parsePublicKey } from "../../../src/shared/keys.js";
import { waitFor } from "../../helpers/net.js";
import { keygen, Sshd } from "../../helpers/sshd.js";

function withDir(fn: (dir: string) => Promise<void> | void) {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), "revtun-sign-"));
    try {
      await fn(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

function certify(dir: string, caType: string, certType: "user" | "host", principals: string[]) {
  keygen(join(dir, `ca_${caType}`), caType);
  const ca = parseCertificateAuthority(readFileSync(join(dir, `ca_${caType}`), "utf8"));
  const pub = keygen(join(dir, "id"));
  const blob = parsePublicKey(pub)?.blob;
  assert.ok(blob);
  const now = Date.now();
  const cert = signCertificate(ca, {
    publicKey: blob,
    certType,
    keyId: "revtun:device42:7",
    principals,
    validAfter: new Date(now - 300_000),
    validBefore: new Date(now + 3_600_000),
    serial: 0xfedcba9876543210n,
    extensions: certType === "user" ? ["permit-port-forwarding", "permit-pty"] : [],
  });
  writeFileSync(join(dir, "id-cert.pub"), `${certificateLine(cert, "device42")}\n`);
  return { ca, certFile: join(dir, "id-cert.pub") };
}

for (const caType of ["ed25519", "ecdsa", "rsa"]) {
  test(
    `ssh-keygen -L reads a user certificate signed by an ${caType} CA`,
    withDir((dir) => {
      const { ca } = certify(dir, caType, "user", ["device42"]);
      const out = execFileSync("ssh-keygen", ["-L", "-f", join(dir, "id-cert.pub")], { encoding: "utf8" });
      assert.match(out, /Type: ssh-ed25519-cert-v01@openssh.com user certificate/);
      assert.ok(
        out.includes(`Signing CA: ${caType === "rsa" ? "RSA" : caType.toUpperCase()} ${ca.fingerprint}`),
        out,
      );
      if (caType === "rsa") assert.match(out, /\(using rsa-sha2-512\)/);
      assert.match(out, /Key ID: "revtun:device42:7"/);
      assert.match(out, /Serial: 18364758544493064720/);
      assert.match(out, /Principals: \n\s+device42\n/);
      assert.match(out, /Critical Options: \(none\)/);
      assert.match(out, /Extensions: \n\s+permit-port-forwarding\n\s+permit-pty\n/);
    }),
  );
}

test(
  "a host certificate reads back as one, for its name",
  withDir((dir) => {
    certify(dir, "ed25519", "host", ["device42"]);
    const out = execFileSync("ssh-keygen", ["-L", "-f", join(dir, "id-cert.pub")], { encoding: "utf8" });
    assert.match(out, /host certificate/);
    assert.match(out, /Principals: \n\s+device42\n/);
  }),
);

test(
  "a flipped bit in the signed part is refused by ssh-keygen",
  withDir((dir) => {
    const { certFile } = certify(dir, "ed25519", "user", ["device42"]);
    const [type, b64, comment] = readFileSync(certFile, "utf8").trim().split(" ");
    const blob = Buffer.from(b64 ?? "", "base64");
    blob[100] = (blob[100] ?? 0) ^ 1; // inside the nonce/key fields
    writeFileSync(certFile, `${type} ${blob.toString("base64")} ${comment}\n`);
    assert.throws(() => execFileSync("ssh-keygen", ["-L", "-f", certFile], { stdio: "pipe" }));
  }),
);

test("stock ssh logs in to sshd (TrustedUserCAKeys) with a certificate the CA signed", async () => {
  const sshd = await Sshd.start();
  try {
    const dir = sshd.dir;
    const { ca } = certify(dir, "ecdsa", "user", [sshd.user]);
    writeFileSync(join(dir, "user_ca.pub"), `${ca.publicKey}\n`);
    writeFileSync(join(dir, "authorized_keys"), "");
    sshd.opts.config = [...(sshd.opts.config ?? []), `TrustedUserCAKeys ${join(dir, "user_ca.pub")}`];
    await sshd.restart();
    const out = execFileSync(
      "ssh",
      [
        ...sshd.clientArgs({ key: join(dir, "id") }),
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        `CertificateFile=${join(dir, "id-cert.pub")}`,
        `${sshd.user}@127.0.0.1`,
        "echo certified",
      ],
      { encoding: "utf8", timeout: 15_000 },
    );
    assert.equal(out.trim(), "certified");
    await waitFor(() => /Accepted publickey/.test(sshd.log), "sshd's log line", 5_000);
    assert.match(
      sshd.log,
      /Accepted publickey for .* ED25519-CERT SHA256:\S+ ID revtun:device42:7 \(serial 18364758544493064720\) CA ECDSA/,
    );
  } finally {
    await sshd.close();
  }
});
