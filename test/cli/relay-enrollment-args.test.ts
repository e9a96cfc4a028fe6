/** `revtun relay`'s enrollment flags: each mistake is exit 2 and one line naming the flag. */
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { relayCommand } from "../../src/cli/relay-command.js";
import { runInProcess } from "../helpers/cli.js";
import { keygen } from "../helpers/sshd.js";

test("--ca-key, --cert-validity and --state-dir refuse bad combinations and a CA key readable by others", async () => {
  const dir = mkdtempSync(join(tmpdir(), "revtun-enroll-args-"));
  try {
    keygen(join(dir, "ca"));
    writeFileSync(join(dir, "authorized_keys"), "");
    const base = [
      "--listen",
      "127.0.0.1:0",
      "--host-key",
      join(dir, "host"),
      "--authorized-keys",
      join(dir, "authorized_keys"),
    ];
    const run = (...extra: string[]) => runInProcess(relayCommand, [...base, ...extra]);
    const firstLine = (s: string) => s.split("\n")[0];

    let r = await run("--ca-key", join(dir, "ca"));
    assert.equal(r.code, 2);
    assert.equal(
      firstLine(r.stderr),
      "revtun relay: --ca-key needs --state-dir DIR (or --fleet): where tokens and devices are kept",
    );
    // --state-dir alone is the inventory's (device records): no --ca-key needed; --cert-validity is enrollment's.
    r = await run("--cert-validity", "1h");
    assert.equal(firstLine(r.stderr), "revtun relay: --cert-validity needs --ca-key");
    r = await run("--ca-key", join(dir, "ca"), "--state-dir", dir, "--cert-validity", "5s");
    assert.equal(r.code, 2);
    assert.equal(
      firstLine(r.stderr),
      'revtun relay: bad --cert-validity "5s": expected a duration of at least 10s (30s, 12h, 30d)',
    );
    chmodSync(join(dir, "ca"), 0o644);
    r = await run("--ca-key", join(dir, "ca"), "--state-dir", join(dir, "state"));
    assert.equal(r.code, 2);
    assert.match(
      r.stderr,
      /^revtun relay: CA key \S+ is readable by group or others \(mode 644\): chmod 600 it\n$/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
