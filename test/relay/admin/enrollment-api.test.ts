/**
 * The admin API's enrollment calls: the bearer token, JSON only on POST (a
 * web page cannot send it without asking), one-line errors for a bad name,
 * an unknown device and a relay without --ca-key; and `revtun relay token`
 * / `devices` / `revoke` against it.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { relayDevicesCommand } from "../../../src/cli/relay-devices-command.js";
import { relayRevokeCommand } from "../../../src/cli/relay-revoke-command.js";
import { relayTokenCommand } from "../../../src/cli/relay-token-command.js";
import { startAdminServer } from "../../../src/relay/admin/admin-server.js";
import { loadCertificateAuthority } from "../../../src/relay/enrollment/certificate-authority.js";
import { StateDirStore } from "../../../src/relay/enrollment/state-dir-store.js";
import { runInProcess } from "../../helpers/cli.js";
import { withFixture } from "../../helpers/relay.js";
import { keygen } from "../../helpers/sshd.js";

async function call(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: string,
) {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method, headers, ...(body ? { body } : {}) });
  return { status: res.status, text: await res.text() };
}

test("POST /api/tokens, GET /api/enrollments, POST /api/enrollments/NAME/revoke: token, JSON, errors", () =>
  withFixture(async (f) => {
    keygen(join(f.dir, "ca"));
    const relay = await f.start([], {
      enrollment: {
        ca: await loadCertificateAuthority(join(f.dir, "ca")),
        store: await StateDirStore.open(join(f.dir, "state")),
      },
    });
    const admin = await startAdminServer({ relay, host: "127.0.0.1", port: 0, token: "tok" });
    try {
      const port = admin.address.port;
      const auth = { authorization: "Bearer tok", "content-type": "application/json" };
      assert.equal(
        (await call(port, "POST", "/api/tokens", { "content-type": "application/json" }, "{}")).status,
        401,
      );
      const plain = await call(
        port,
        "POST",
        "/api/tokens",
        { authorization: "Bearer tok", "content-type": "text/plain" },
        '{"name":"device42"}',
      );
      assert.equal(plain.status, 415);
      const bad = await call(port, "POST", "/api/tokens", auth, '{"name":"bad name!"}');
      assert.equal(bad.status, 400);
      assert.match(JSON.parse(bad.text).error, /^name "bad name!": a tunnel name is DNS labels/);
      const ttl = await call(port, "POST", "/api/tokens", auth, '{"name":"device42","ttl":"8d"}');
      assert.equal(ttl.status, 400);
      const ok = await call(port, "POST", "/api/tokens", auth, '{"name":"Device42","ttl":"10m"}');
      assert.equal(ok.status, 200);
      const body = JSON.parse(ok.text);
      assert.equal(body.name, "device42");
      assert.match(body.token, /^revtun-enroll-1\./);
      assert.ok(Math.abs(Date.parse(body.expiresAt) - Date.now() - 600_000) < 5_000);
      assert.deepEqual(JSON.parse((await call(port, "GET", "/api/enrollments", auth)).text), { devices: [] });
      assert.equal((await call(port, "POST", "/api/enrollments/nobody/revoke", auth, "{}")).status, 404);

      const env = { REVTUN_ADMIN_TOKEN: "tok" };
      const where = ["--admin", `127.0.0.1:${port}`];
      const token = await runInProcess(relayTokenCommand, ["--name", "device7", ...where], env);
      assert.equal(token.code, 0, token.stderr);
      assert.match(token.stdout, /^revtun-enroll-1\.\S+\n$/);
      const devices = await runInProcess(relayDevicesCommand, [...where, "--json"], env);
      assert.equal(devices.stdout, "[]\n");
      const empty = await runInProcess(relayDevicesCommand, where, env);
      assert.equal(empty.stdout, "no enrolled devices\n");
      const revoke = await runInProcess(relayRevokeCommand, ["nobody", ...where], env);
      assert.equal(revoke.code, 2);
      assert.equal(revoke.stderr, "revtun relay revoke: no such device (HTTP 404)\n");
      const noToken = await runInProcess(relayTokenCommand, ["--name", "device7", ...where], {});
      assert.equal(noToken.code, 255);
      assert.match(noToken.stderr, /a token is required \(401\)/);
      const noName = await runInProcess(relayTokenCommand, where, env);
      assert.equal(noName.code, 2);
      assert.match(noName.stderr, /^revtun relay token: --name NAME is required\n/);
    } finally {
      await admin.close();
    }
  }));

test("a relay without --ca-key answers 409, and relay token says so in one line", () =>
  withFixture(async (f) => {
    const relay = await f.start([]);
    const admin = await startAdminServer({ relay, host: "127.0.0.1", port: 0 });
    try {
      const r = await runInProcess(relayTokenCommand, [
        "--name",
        "device42",
        "--admin",
        `127.0.0.1:${admin.address.port}`,
      ]);
      assert.equal(r.code, 255);
      assert.equal(
        r.stderr,
        "revtun relay token: this relay enrolls no devices: start it with --ca-key (HTTP 409)\n",
      );
    } finally {
      await admin.close();
    }
  }));
