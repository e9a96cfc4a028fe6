import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { exitCodeFor, readSecret, version } from "../../src/cli/process.js";
import { RevtunError } from "../../src/shared/errors.js";

describe("process concerns", () => {
  test("ssh's exit codes: 2 for usage and configuration, 255 for everything else", () => {
    assert.equal(exitCodeFor(new RevtunError("USAGE", "x")), 2);
    assert.equal(exitCodeFor(new RevtunError("CONFIG", "x")), 2);
    for (const code of ["AUTH", "CONNECT", "HOSTKEY_MISMATCH", "LISTEN", "FORWARD"] as const)
      assert.equal(exitCodeFor(new RevtunError(code, "x")), 255, code);
    assert.equal(exitCodeFor(new Error("x")), 255);
  });

  test("a secret comes from the first line of its file, else the environment", async () => {
    const dir = mkdtempSync(join(tmpdir(), "revtun-secret-"));
    try {
      writeFileSync(join(dir, "pw"), "s3cret\r\nsecond line\n");
      assert.equal(await readSecret(join(dir, "pw"), "from-env"), "s3cret");
      assert.equal(await readSecret(undefined, "from-env"), "from-env");
      await assert.rejects(
        readSecret(join(dir, "missing"), undefined),
        (e: unknown) =>
          e instanceof RevtunError && e.code === "USAGE" && e.message.includes(join(dir, "missing")),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("the version is package.json's", () => {
    assert.match(version(), /^\d+\.\d+\.\d+/);
  });
});
