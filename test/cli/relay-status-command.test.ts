/**
 * `revtun relay status` against a relay's admin API with a real `ssh -R`
 * device, its exit codes, and `revtun relay --admin`'s refusal to serve
 * beyond loopback without a token.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { relayCommand } from "../../src/cli/relay-command.js";
import { relayDevicesCommand, relayStatusCommand } from "../../src/cli/relay-status-command.js";
import { type AdminServer, startAdminServer } from "../../src/relay/admin/admin-server.js";
import { Revtun, runInProcess } from "../helpers/cli.js";
import { bannerServer, listen, RelayFixture, withTimeout } from "../helpers/relay.js";
import { freePort } from "../helpers/sshd.js";

const withComment = (pub: string, comment: string) => `${pub.split(" ").slice(0, 2).join(" ")} ${comment}`;

describe("revtun relay status", () => {
  test("prints one row per session (table) or the inventory (--json); 255 with one line without the token", async () => {
    const f = new RelayFixture();
    let admin: AdminServer | undefined;
    const dir = mkdtempSync(join(tmpdir(), "revtun-status-"));
    try {
      const k = f.key();
      await f.start([withComment(k.pub, "pump-station-7")]);
      admin = await startAdminServer({ relay: f.relay, host: "127.0.0.1", port: 0, token: "tok-123" });
      const where = `127.0.0.1:${admin.address.port}`;
      const target = bannerServer("x");
      const targetPort = await listen(f.track(target.server));
      const ssh = f.ssh(k, ["-N", "-R", `0:127.0.0.1:${targetPort}`]);
      const port = Number((await ssh.waitStderr(/Allocated port (\d+)/, 10_000))[1]);

      const table = await runInProcess(relayStatusCommand, ["--admin", where], {
        REVTUN_ADMIN_TOKEN: "tok-123",
      });
      assert.equal(table.code, 0, table.stderr);
      const [sessionsPart, devicesPart] = table.stdout.split("\n\n");
      const lines = (sessionsPart ?? "").trimEnd().split("\n");
      assert.equal(lines.length, 2, table.stdout);
      // Then the fleet's devices (here, this relay's one).
      const dev = (devicesPart ?? "").trimEnd().split("\n");
      assert.equal(dev[0], "1 device(s): 1 online, 0 offline");
      assert.match(
        dev[1] ?? "",
        /^DEVICE\s+STATE\s+RELAY\s+LAST SEEN\s+KEY\s+FINGERPRINT\s+BINDINGS\s+CONNS\s+IN\s+OUT$/,
      );
      assert.match(
        dev[2] ?? "",
        new RegExp(`^-\\s+online\\s+\\S+\\s+now\\s+pump-station-7\\s+\\S+\\s+localhost:${port}\\s+0`),
      );

      // `relay devices`: the devices alone, filtered; and as JSON.
      const devices = await runInProcess(relayDevicesCommand, ["--admin", where, "--state", "offline"], {
        REVTUN_ADMIN_TOKEN: "tok-123",
      });
      assert.equal(devices.code, 0, devices.stderr);
      assert.equal(devices.stdout, "1 device(s): 1 online, 0 offline\nno devices\n");
      const dj = await runInProcess(relayCommand, ["devices", "--json", "--admin", where, "--name", "pump"], {
        REVTUN_ADMIN_TOKEN: "tok-123",
      });
      assert.equal(dj.code, 0, dj.stderr);
      const listed = JSON.parse(dj.stdout) as { keyComment: string; state: string; bindings: string[] }[];
      assert.deepEqual(
        listed.map((d) => [d.keyComment, d.state, d.bindings]),
        [["pump-station-7", "online", [`localhost:${port}`]]],
      );
      const badState = await runInProcess(relayDevicesCommand, ["--state", "gone"]);
      assert.equal(badState.code, 2);
      assert.match(badState.stderr, /^revtun relay devices: --state "gone": expected online or offline\n/);
      assert.match(lines[0] ?? "", /^KEY\s+FINGERPRINT\s+PEER\s+SINCE\s+BINDINGS\s+CONNS\s+IN\s+OUT$/);
      const fp = f.relay.authenticatedSessions()[0]?.fingerprint.slice(7, 19) ?? "?";
      assert.match(
        lines[1] ?? "",
        new RegExp(
          `^pump-station-7\\s+${fp.replace(/[+/]/g, "\\$&")}\\s+127\\.0\\.0\\.1:\\d+\\s+\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ\\s+localhost:${port}\\s+0\\s+0 B\\s+0 B$`,
        ),
      );

      const tokenFile = join(dir, "token");
      writeFileSync(tokenFile, "tok-123\n");
      const json = await runInProcess(relayStatusCommand, [
        "--json",
        "--admin",
        where,
        "--admin-token-file",
        tokenFile,
      ]);
      assert.equal(json.code, 0, json.stderr);
      const list = JSON.parse(json.stdout) as { keyComment: string; bindings: { port: number }[] }[];
      assert.deepEqual(
        list.map((s) => [s.keyComment, s.bindings.map((b) => b.port)]),
        [["pump-station-7", [port]]],
      );

      const refused = await runInProcess(relayStatusCommand, ["--admin", where]);
      assert.equal(refused.code, 255);
      assert.equal(
        refused.stderr,
        `revtun relay status: cannot read the relay's admin API at ${where}: a token is required (401): --admin-token-file or REVTUN_ADMIN_TOKEN\n`,
      );
      const wrong = await runInProcess(relayStatusCommand, ["--admin", where], {
        REVTUN_ADMIN_TOKEN: "nope",
      });
      assert.equal(wrong.code, 255);
      assert.match(wrong.stderr, /the token was refused \(401\)\n$/);
    } finally {
      await admin?.close();
      await f.cleanup();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("exit 255 with one line when nothing listens; 2 for bad flags", async () => {
    const port = await freePort();
    const down = await runInProcess(relayStatusCommand, ["--admin", `127.0.0.1:${port}`]);
    assert.equal(down.code, 255);
    assert.match(
      down.stderr,
      new RegExp(
        `^revtun relay status: cannot read the relay's admin API at 127\\.0\\.0\\.1:${port}: connect ECONNREFUSED[^\\n]*\\n$`,
      ),
    );
    for (const argv of [["--admin", "nope:x"], ["--bogus"], ["extra"]]) {
      const r = await runInProcess(relayStatusCommand, argv);
      assert.equal(r.code, 2, argv.join(" "));
      assert.match(r.stderr.split("\n")[0] ?? "", /^revtun relay status: /);
    }
    // node's parseArgs quotes a bad flag raw and over several lines: one escaped line here.
    const control = await runInProcess(relayStatusCommand, ["--x\n\u001b[31m"]);
    assert.equal(control.code, 2);
    assert.equal(
      control.stderr.split("\n")[0],
      "revtun relay status: Unknown option '--x\\n\\x1b[31m' (in \"--x\\n\\x1b[31m\")",
    );
    const viaRelay = await runInProcess(relayCommand, ["status", "--admin", "70000"]);
    assert.equal(viaRelay.code, 2);
    assert.match(viaRelay.stderr, /^revtun relay status: bad --admin "70000"/);
  });
});

describe("revtun relay --admin", () => {
  test("beyond loopback without a token it refuses to start: exit 2, one line naming the address", async () => {
    const dir = mkdtempSync(join(tmpdir(), "revtun-admin-cli-"));
    try {
      const base = [
        "--listen",
        "127.0.0.1:0",
        "--host-key",
        join(dir, "hk"),
        "--authorized-keys",
        join(dir, "ak"),
      ];
      for (const admin of ["0.0.0.0:0", ":0", "10.1.2.3:9466"]) {
        const r = await runInProcess(relayCommand, [...base, "--admin", admin]);
        assert.equal(r.code, 2, r.stderr);
        assert.match(
          r.stderr,
          /^revtun relay: --admin \S+ is beyond loopback: give a token with --admin-token-file FILE or REVTUN_ADMIN_TOKEN\n$/,
        );
      }
      const missing = await runInProcess(relayCommand, [
        ...base,
        "--admin",
        "0.0.0.0:0",
        "--admin-token-file",
        join(dir, "none"),
      ]);
      assert.equal(missing.code, 2);
      assert.match(missing.stderr, /cannot read secret file .*none/);
      const noAdmin = await runInProcess(relayCommand, [...base, "--admin-token-file", join(dir, "none")]);
      assert.equal(noAdmin.code, 2);
      assert.match(noAdmin.stderr, /--admin-token-file needs --admin/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("the relay process serves the admin API that `relay status` reads (token from the environment)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "revtun-admin-cli-"));
    const f = new RelayFixture();
    let relay: Revtun | undefined;
    try {
      const k = f.key();
      writeFileSync(join(dir, "ak"), `${withComment(k.pub, "cli-device")}\n`);
      const adminPort = await freePort();
      relay = new Revtun(
        [
          "relay",
          "--listen",
          "127.0.0.1:0",
          "--host-key",
          join(dir, "hk"),
          "--authorized-keys",
          join(dir, "ak"),
          "--admin",
          String(adminPort),
        ],
        { REVTUN_ADMIN_TOKEN: "env-token" },
      );
      await relay.waitFor(/admin page on http:\/\/127\.0\.0\.1:(\d+)\/ \(bearer token required\)/);
      const r = await runInProcess(relayStatusCommand, ["--admin", String(adminPort)], {
        REVTUN_ADMIN_TOKEN: "env-token",
      });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "no sessions\n\n0 device(s): 0 online, 0 offline\nno devices\n");
    } finally {
      if (relay?.proc.pid && relay.proc.exitCode === null) {
        relay.proc.kill("SIGTERM");
        await withTimeout(relay.exited, 10_000, "revtun relay to exit");
      }
      await f.cleanup();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
