/**
 * Files revtun must refuse up front, with exit 2 and one line naming the
 * file (issue 12 item 12), through the real bin/revtun.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { runRevtun } from "../helpers/cli.js";
import { keygen } from "../helpers/sshd.js";

let dir = "";
before(() => {
  dir = mkdtempSync(join(tmpdir(), "revtun-refusals-"));
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe("refused files", () => {
  it('a YAML "billion laughs" --config file: exit 2, one line naming the file, at once', async () => {
    // 9 levels of 9 aliases: 9^9 = 387 million strings if expanded.
    const lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
    for (let i = 1; i < 9; i++) {
      const prev = String.fromCharCode(97 + i - 1);
      lines.push(
        `${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(9).fill(`*${prev}`).join(",")}]`,
      );
    }
    lines.push("tunnels: *i");
    const file = join(dir, "laughs.yaml");
    writeFileSync(file, `${lines.join("\n")}\n`);
    const t0 = Date.now();
    const r = await runRevtun(["--config", file], 10_000);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr.trimEnd().split("\n").length, 1, r.stderr);
    assert.ok(r.stderr.includes(`${file}: refused:`), r.stderr);
    assert.match(r.stderr, /alias/);
    assert.ok(Date.now() - t0 < 5_000, "refused without expanding");
  });

  it("relay --host-key FILE.pub: exit 2, says it is a public key and names the private one, no fingerprint", async () => {
    const key = join(dir, "host_ed25519");
    keygen(key);
    writeFileSync(join(dir, "authorized_keys"), "");
    const r = await runRevtun(
      [
        "relay",
        "--listen",
        "127.0.0.1:0",
        "--host-key",
        `${key}.pub`,
        "--authorized-keys",
        join(dir, "authorized_keys"),
      ],
      10_000,
    );
    assert.equal(r.code, 2, r.stderr);
    assert.equal(
      r.stderr,
      `revtun relay: host key ${key}.pub is a public key; give the private key file (${key})\n`,
    );
  });
});
