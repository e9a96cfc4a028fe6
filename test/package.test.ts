/**
 * The published package: `revtun` and `revtun/relay` import through package.json's
 * "exports" (a package may import itself by name, so this needs no install), internals
 * do not, and the tarball carries the built entry points.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

function importInChild(specifier: string): string {
  const code = `import(${JSON.stringify(specifier)}).then((m) => console.log(Object.keys(m).sort().join(",")), (e) => console.log("ERR " + e.code))`;
  return execFileSync(process.execPath, ["--input-type=module", "-e", code], {
    cwd: ROOT,
    encoding: "utf8",
  }).trim();
}

describe("package exports", () => {
  test("revtun exports the agent API and nothing internal", () => {
    assert.equal(
      importInChild("revtun"),
      "DEFAULT_TUNNEL_OPTIONS,RevtunError,Tunnel,enroll,isPermanent,openTunnel,parseRemoteForward",
    );
  });

  test("revtun/relay exports the relay API", () => {
    assert.equal(
      importInChild("revtun/relay"),
      "DEFAULT_CERT_VALIDITY_MS,DEFAULT_LIMITS,RELAY_EVENT_NAMES,RedisStore,Relay,RevtunError,StateDirStore,describeRelayEvent,loadCertificateAuthority",
    );
  });

  test("internal modules are not importable", () => {
    assert.equal(importInChild("revtun/dist/agent/session.js"), "ERR ERR_PACKAGE_PATH_NOT_EXPORTED");
  });

  test("the tarball holds both entry points with their types, the CLI, and no tests", () => {
    const out = execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], {
      cwd: ROOT,
      encoding: "utf8",
    });
    const files = (JSON.parse(out) as { files: { path: string }[] }[])[0]?.files.map((f) => f.path) ?? [];
    for (const f of [
      "dist/index.js",
      "dist/index.d.ts",
      "dist/relay/index.js",
      "dist/relay/index.d.ts",
      "bin/revtun",
    ]) {
      assert.ok(files.includes(f), `${f} in the tarball`);
    }
    assert.deepEqual(
      files.filter((f) => f.startsWith("test/") || f.startsWith("src/")),
      [],
    );
  });
});
