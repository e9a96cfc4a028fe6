/**
 * contrib/prometheus/revtun-alerts.yml: valid for Prometheus (`promtool
 * check rules`), each alert firing and staying quiet when it should
 * (`promtool test rules revtun-alerts.test.yml`, a case per alert), and
 * every revtun_* series the rules use served on a relay's /metrics.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { type AdminServer, startAdminServer } from "../../src/relay/admin/admin-server.js";
import { type Client, device, ed } from "../helpers/fleet.js";
import { RelayFixture } from "../helpers/relay.js";

const DIR = fileURLToPath(new URL("../../contrib/prometheus/", import.meta.url));
const PROMTOOL = "/usr/bin/promtool";

function promtool(args: string[]): { code: number | null; out: string } {
  const r = spawnSync(PROMTOOL, args, { cwd: DIR, encoding: "utf8", timeout: 20_000 });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

describe("contrib/prometheus alert rules", () => {
  const f = new RelayFixture();
  let admin: AdminServer | undefined;
  const clients: Client[] = [];
  after(async () => {
    for (const c of clients) c.end();
    await admin?.close();
    await f.cleanup();
  });

  test("promtool check rules and test rules pass, one case per alert", () => {
    const check = promtool(["check", "rules", "revtun-alerts.yml"]);
    assert.equal(check.code, 0, check.out);
    assert.match(check.out, /SUCCESS: 3 rules found/);
    const run = promtool(["test", "rules", "revtun-alerts.test.yml"]);
    assert.equal(run.code, 0, run.out);
    assert.match(run.out, /SUCCESS/);
    const rules = readFileSync(`${DIR}revtun-alerts.yml`, "utf8");
    const cases = readFileSync(`${DIR}revtun-alerts.test.yml`, "utf8");
    for (const alert of [...rules.matchAll(/- alert: (\w+)/g)].map((m) => m[1]))
      assert.match(
        cases,
        new RegExp(`alertname: ${alert}\\n\\s+exp_alerts:\\n\\s+- exp_labels`),
        `a firing case for ${alert}`,
      );
  });

  test("the series the rules use are served on /metrics", async () => {
    const dev = ed();
    await f.start([`restrict,port-forwarding,permitlisten="device42:22" ${dev.public} d`]);
    clients.push(await device(f.port, dev.private));
    admin = await startAdminServer({ relay: f.relay, host: "127.0.0.1", port: 0 });
    const text = await (await fetch(`http://127.0.0.1:${admin.address.port}/metrics`)).text();
    const rules = readFileSync(`${DIR}revtun-alerts.yml`, "utf8");
    const used = new Set([...rules.matchAll(/\b(revtun_[a-z_]+)\b/g)].map((m) => m[1]));
    assert.ok(used.size >= 2, [...used].join(", "));
    for (const name of used) assert.match(text, new RegExp(`^${name}\\{`, "m"), `${name} served`);
    assert.match(text, /^revtun_fleet_devices\{state="online"\} 1$/m);
    assert.match(
      text,
      /^revtun_fleet_device_last_seen_seconds\{device="device42",fingerprint="SHA256:[^"]+",relay="[^"]+"\} \d{10}$/m,
    );
  });
});
