// Runs every test/**/*.test.ts with Node's own test runner (tsx compiles on the fly).
// Node 20's runner does not search for .ts files itself, hence this list.
// A person at a terminal gets the spec reporter (one line a test, failures repeated at the end);
// anything else (CI) gets TAP, whose closing "# tests / # pass / # fail" lines CI reads.
// Usage: node scripts/run-tests.mjs [filter-substring ...]
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";

function walk(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name)) : e.name.endsWith(".test.ts") ? [join(dir, e.name)] : [],
  );
}

const filters = process.argv.slice(2);
const files = walk("test")
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .sort();
if (files.length === 0) {
  console.error(`no test files match ${filters.join(" ")}`);
  process.exit(1);
}
const reporter = process.stdout.isTTY ? "spec" : "tap";
const r = spawnSync(
  process.execPath,
  [
    "--import",
    "tsx",
    "--test",
    `--test-reporter=${reporter}`,
    "--test-concurrency=2",
    "--test-timeout=120000",
    ...files,
  ],
  { stdio: "inherit" },
);
process.exit(r.status ?? 1);
