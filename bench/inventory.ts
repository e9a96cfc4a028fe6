/**
 * `npm run bench -- --inventory [N]`: issue 22's done-when at full size
 * (test/relay/fleet-inventory-e2e.test.ts with N devices, default 1,000):
 * three relays (one with --workers 2) on a real Redis, N ssh2 device
 * sessions, a tenth leaving, every relay and worker's /api/devices, OpenSSH
 * -W, relay status, /metrics and the page in Chromium. The suite runs it with
 * 200: 1,000 handshakes alone take ~27 s on a 2-core machine (measured:
 * 49 s for the whole file). Prints the test's figures line.
 */
import { spawnSync } from "node:child_process";

export function inventory(argv: string[]): void {
  const n = argv.find((a) => /^\d+$/.test(a)) ?? "1000";
  const r = spawnSync(process.execPath, ["scripts/run-tests.mjs", "test/relay/fleet-inventory-e2e"], {
    env: { ...process.env, REVTUN_INVENTORY_DEVICES: n },
    encoding: "utf8",
    timeout: 600_000,
  });
  const out = `${r.stdout}${r.stderr}`;
  for (const line of out.split("\n"))
    if (/inventory e2e|^# (pass|fail)/.test(line)) process.stdout.write(`${line}\n`);
  if (r.status !== 0) {
    process.stdout.write(out);
    throw new Error(`the inventory scenario with ${n} devices failed (exit ${r.status})`);
  }
}
