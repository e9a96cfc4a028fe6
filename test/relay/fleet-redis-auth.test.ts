/**
 * The fleet's Redis with `requirepass`: the password comes from
 * --fleet-password-file (mode 600) or REVTUN_FLEET_PASSWORD, never argv; the
 * right one joins the fleet; a missing or wrong one stops the relay at
 * startup with one line naming the problem (never the password) and exit 2,
 * for one relay and for a --workers primary. Real redis-server, bin/revtun.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Redis } from "ioredis";
import { parseFleetKey } from "../../src/relay/fleet/fleet-key.js";
import { Relay } from "../../src/relay/relay.js";
import { Revtun, runRevtun } from "../helpers/cli.js";
import { ed } from "../helpers/fleet.js";
import { RedisServer } from "../helpers/redis.js";
import { freePort } from "../helpers/sshd.js";

const PASSWORD = "correct horse battery staple";
const WRONG = "Tr0ub4dor&3";

/** Whether something accepts TCP connections on 127.0.0.1:port. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: "127.0.0.1", port });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

describe("the fleet's Redis with a password (requirepass)", () => {
  let redis: RedisServer;
  let open: RedisServer;
  let dir: string;
  let keysFile: string;
  let fleetFile: string;
  let passwordFile: string;
  before(async () => {
    redis = await RedisServer.start({ password: PASSWORD });
    open = await RedisServer.start();
    dir = mkdtempSync(join(tmpdir(), "revtun-fleet-auth-"));
    keysFile = join(dir, "authorized_keys");
    writeFileSync(keysFile, `restrict,permitopen="*:22" ${ed().public} operator\n`);
    fleetFile = join(dir, "fleet_key");
    writeFileSync(fleetFile, ed().private, { mode: 0o600 });
    passwordFile = join(dir, "redis_password");
    writeFileSync(passwordFile, `${PASSWORD}\n`, { mode: 0o600 });
  });
  after(async () => {
    await redis.close();
    await open.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const relayArgs = (port: number, url: string, ...extra: string[]) => [
    "relay",
    "--listen",
    `127.0.0.1:${port}`,
    "--host-key",
    join(dir, "host_key"),
    "--authorized-keys",
    keysFile,
    "--fleet",
    url,
    "--fleet-key",
    fleetFile,
    ...extra,
  ];

  test("the Relay library: start() rejects a missing or wrong password (CONFIG) and leaves nothing listening", async () => {
    for (const [password, re] of [
      [undefined, /^fleet Redis 127\.0\.0\.1:\d+ requires a password \(NOAUTH\) and none was given$/],
      [WRONG, /^fleet Redis 127\.0\.0\.1:\d+ refused the password \(WRONGPASS\)$/],
    ] as const) {
      const port = await freePort();
      const r = new Relay({
        listen: { host: "127.0.0.1", port },
        hostKey: ed().private,
        authorizedKeysFile: keysFile,
        watchAuthorizedKeys: false,
        fleet: {
          redis: { host: "127.0.0.1", port: redis.port, db: 0, ...(password ? { password } : {}) },
          fleetKey: parseFleetKey(readFileSync(fleetFile, "utf8")),
          relayId: "lib",
          advertise: `127.0.0.1:${port}`,
        },
      });
      await assert.rejects(r.start(), (e: Error & { code?: string }) => {
        assert.equal(e.code, "CONFIG");
        assert.match(e.message, re);
        assert.ok(!e.message.includes(WRONG));
        return true;
      });
      assert.equal(await listening(port), false, "nothing listens after a refused password");
      await r.close();
    }
  });

  test("bin/revtun relay: no password, a wrong one, a file readable by others: exit 2 with one line; the password never shown", async () => {
    const port = await freePort();
    const loose = join(dir, "loose_password");
    writeFileSync(loose, `${PASSWORD}\n`, { mode: 0o644 });
    const wrongFile = join(dir, "wrong_password");
    writeFileSync(wrongFile, `${WRONG}\n`, { mode: 0o600 });
    const cases: [string[], NodeJS.ProcessEnv, RegExp][] = [
      [
        [],
        {},
        /^revtun relay: fleet Redis 127\.0\.0\.1:\d+ requires a password \(NOAUTH\) and none was given: give it with --fleet-password-file FILE or REVTUN_FLEET_PASSWORD$/,
      ],
      [
        [],
        { REVTUN_FLEET_PASSWORD: WRONG },
        /^revtun relay: fleet Redis 127\.0\.0\.1:\d+ refused the password \(WRONGPASS\) \(the password in REVTUN_FLEET_PASSWORD\)$/,
      ],
      [
        ["--fleet-password-file", wrongFile],
        {},
        /^revtun relay: fleet Redis 127\.0\.0\.1:\d+ refused the password \(WRONGPASS\) \(the password in --fleet-password-file .*wrong_password\)$/,
      ],
      [
        ["--fleet-password-file", loose],
        {},
        /^revtun relay: fleet password file .*loose_password is readable by group or others \(mode 644\): chmod 600 it$/,
      ],
      [
        ["--fleet-password-file", join(dir, "missing")],
        {},
        /^revtun relay: cannot read fleet password file .*missing: ENOENT/,
      ],
      // The --workers primary asks Redis once, before forking: one line, not one a worker.
      [
        ["--workers", "2"],
        { REVTUN_FLEET_PASSWORD: WRONG },
        /^revtun relay: fleet Redis 127\.0\.0\.1:\d+ refused the password \(WRONGPASS\) \(the password in REVTUN_FLEET_PASSWORD\)$/,
      ],
    ];
    for (const [extra, env, re] of cases) {
      const t0 = performance.now();
      const r = await runRevtun(relayArgs(port, redis.url, ...extra), 20_000, env);
      const what = `${extra.join(" ")} ${JSON.stringify(env)}`;
      assert.equal(r.code, 2, `${what}: ${r.stderr}`);
      const lines = r.stderr.split("\n").filter((l) => l !== "" && !/^\d\d:\d\d:\d\d\.\d{3} /.test(l));
      assert.equal(lines.length, 1, `${what}: one line: ${r.stderr}`);
      assert.match(lines[0] as string, re, what);
      assert.ok(
        !`${r.stderr}${r.stdout}`.includes(WRONG) && !`${r.stderr}${r.stdout}`.includes(PASSWORD),
        what,
      );
      assert.ok(
        performance.now() - t0 < 5000,
        `${what}: fails fast (${Math.round(performance.now() - t0)} ms)`,
      );
    }
  });

  test("the right password, from the file or the environment, joins the fleet (one relay and --workers 2)", async () => {
    const rc = new Redis({ host: "127.0.0.1", port: redis.port, password: PASSWORD, lazyConnect: true });
    await rc.connect();
    try {
      for (const [id, extra, env] of [
        ["by-file", ["--fleet-password-file", passwordFile], {}],
        ["by-env", [], { REVTUN_FLEET_PASSWORD: PASSWORD }],
        ["workers", ["--workers", "2"], { REVTUN_FLEET_PASSWORD: PASSWORD }],
      ] as const) {
        const port = await freePort();
        const p = new Revtun(relayArgs(port, redis.url, "--relay-id", id, ...extra), env);
        try {
          await p.waitFor(id === "workers" ? /all 2 workers ready/ : /relay listening/, 20_000);
          const ids = id === "workers" ? [`${id}-w0`, `${id}-w1`] : [id];
          for (const rid of ids)
            assert.equal(await rc.exists(`revtun:relay:${rid}`), 1, `${rid} is in the registry`);
          assert.doesNotMatch(p.stderr, /fleet registry unavailable|NOAUTH|WRONGPASS/);
        } finally {
          assert.equal(await p.stop(), 0, p.stderr);
        }
        assert.ok(!`${p.stderr}${p.stdout}`.includes(PASSWORD), `${id}: the password is never logged`);
      }
    } finally {
      rc.disconnect();
    }
  });

  test("a password for a Redis that needs none: not sent, one warning, and ioredis prints nothing", async () => {
    const port = await freePort();
    const p = new Revtun(relayArgs(port, open.url, "--relay-id", "spare"), {
      REVTUN_FLEET_PASSWORD: PASSWORD,
    });
    try {
      await p.waitFor(/relay listening/, 20_000);
      assert.match(
        p.stderr,
        /WARN {2}fleet Redis 127\.0\.0\.1:\d+ requires no password: the one given is not used/,
      );
    } finally {
      assert.equal(await p.stop(), 0);
    }
    assert.doesNotMatch(`${p.stdout}${p.stderr}`, /\[WARN\]/);
    assert.ok(!`${p.stderr}${p.stdout}`.includes(PASSWORD));
  });
});
