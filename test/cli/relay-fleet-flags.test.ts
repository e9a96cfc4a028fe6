/**
 * `revtun relay`'s fleet flags through bin/revtun: each bad value is exit 2
 * and one line naming it (the usage text follows a USAGE error); REVTUN_FLEET
 * in the environment stands in for --fleet, and a bad one is named as
 * REVTUN_FLEET.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Redis } from "ioredis";
import { RELAY_USAGE } from "../../src/cli/relay-command.js";
import { Revtun, runRevtun } from "../helpers/cli.js";
import { ed } from "../helpers/fleet.js";
import { RedisServer } from "../helpers/redis.js";
import { freePort } from "../helpers/sshd.js";

const count = (text: string, re: RegExp) => text.match(new RegExp(re.source, "g"))?.length ?? 0;

describe("revtun relay fleet flags", () => {
  let dir: string;
  let fleetKey: string;
  let keysFile: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "revtun-fleet-flags-"));
    fleetKey = join(dir, "fleet_key");
    writeFileSync(fleetKey, ed().private, { mode: 0o600 });
    keysFile = join(dir, "authorized_keys");
    writeFileSync(keysFile, "");
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const base = () => [
    "relay",
    "--listen",
    "127.0.0.1:2222",
    "--host-key",
    join(dir, "hk"),
    "--authorized-keys",
    keysFile,
  ];

  test("bad values: exit 2, one line naming the flag (or variable) and the value", async () => {
    const emptyPw = join(dir, "empty_pw");
    writeFileSync(emptyPw, "\n", { mode: 0o600 });
    const fleet = ["--fleet", "redis://127.0.0.1:1", "--fleet-key", fleetKey];
    const cases: [string[], NodeJS.ProcessEnv, RegExp, "usage" | "config"][] = [
      [
        ["--fleet", "http://h:1"],
        {},
        /--fleet `http:\/\/h:1` \(string\): the scheme must be redis:\/\/, rediss:\/\/ or redis\+sentinel:\/\/, not http:\/\//,
        "usage",
      ],
      [["--fleet", "redis://h"], {}, /--fleet `redis:\/\/h` \(string\): no port/, "usage"],
      [
        ["--fleet", "redis://h:1/x"],
        {},
        /--fleet `redis:\/\/h:1\/x` \(string\): the database x is not a number/,
        "usage",
      ],
      [
        ["--fleet", "redis://u:hunter2@h:1"],
        {},
        /--fleet `redis:\/\/u:\*\*\*@h:1` \(string\): credentials in the URL/,
        "usage",
      ],
      [["--fleet", "redis://127.0.0.1:1"], {}, /^revtun relay: --fleet needs --fleet-key FILE/, "usage"],
      [
        ["--fleet-key", fleetKey],
        {},
        /^revtun relay: --fleet-key needs --fleet \(or REVTUN_FLEET\)$/,
        "usage",
      ],
      [[], { REVTUN_FLEET: "nope" }, /^revtun relay: REVTUN_FLEET `nope` \(string\): not a URL/, "usage"],
      [
        ["--fleet-key", fleetKey],
        { REVTUN_FLEET: "redis://h" },
        /^revtun relay: REVTUN_FLEET `redis:\/\/h` \(string\): no port/,
        "usage",
      ],
      [
        [],
        { REVTUN_FLEET: "redis://127.0.0.1:1" },
        /^revtun relay: REVTUN_FLEET needs --fleet-key FILE/,
        "usage",
      ],
      [["--workers", "0"], {}, /^revtun relay: bad --workers "0": expected 1 to 64$/, "usage"],
      [["--workers", "abc"], {}, /^revtun relay: bad --workers "abc": expected 1 to 64$/, "usage"],
      [["--workers", "65", ...fleet], {}, /^revtun relay: bad --workers "65": expected 1 to 64$/, "usage"],
      [["--workers", "2"], {}, /^revtun relay: --workers 2 needs --fleet: /, "usage"],
      [
        ["--fleet-name", "alpha"],
        {},
        /^revtun relay: --fleet-name needs --fleet \(or REVTUN_FLEET\)$/,
        "usage",
      ],
      [
        [...fleet, "--fleet-name", "a b"],
        {},
        /^revtun relay: bad --fleet-name "a b": expected 1-32 of A-Z a-z 0-9 \. _ -$/,
        "usage",
      ],
      [
        [...fleet, "--fleet-name", "x".repeat(33)],
        {},
        /^revtun relay: bad --fleet-name "x{33}": expected 1-32/,
        "usage",
      ],
      [[...fleet, "--fleet-name", "a:b"], {}, /^revtun relay: bad --fleet-name "a:b"/, "usage"],
      [
        ["--fleet-password-file", emptyPw],
        {},
        /^revtun relay: --fleet-password-file needs --fleet \(or REVTUN_FLEET\)$/,
        "usage",
      ],
      [
        [...fleet, "--fleet-password-file", emptyPw],
        {},
        /^revtun relay: fleet password file .*empty_pw is empty: its first line is the password$/,
        "config",
      ],
      [[...fleet, "--relay-id", "a/b"], {}, /^revtun relay: bad --relay-id "a\/b"/, "usage"],
      [
        [...fleet, "--workers", "2", "--admin", "0"],
        {},
        /^revtun relay: --admin port 0 with --workers 2: give a port \(worker i serves port \+ i\)$/,
        "usage",
      ],
      [
        [...fleet, "--workers", "2", "--admin", "9000", "--metrics", "9001"],
        {},
        /^revtun relay: --admin ports 9000-9001 and --metrics ports 9001-9002 overlap/,
        "usage",
      ],
      [
        [...fleet, "--workers", "3", "--metrics", "65534"],
        {},
        /^revtun relay: --metrics port 65534 with --workers 3: worker 2 would need port 65536$/,
        "usage",
      ],
      [
        [...fleet, "--workers", "2", "--metrics", "2221"],
        {},
        /^revtun relay: --metrics ports 2221-2222 \(one a worker\) include the --listen port 2222$/,
        "usage",
      ],
    ];
    for (const [extra, env, re, kind] of cases) {
      const r = await runRevtun([...base(), ...extra], 20_000, { REVTUN_FLEET: "", ...env });
      const what = `${extra.join(" ")} ${JSON.stringify(env)}`;
      assert.equal(r.code, 2, `${what}: ${r.stderr}`);
      const [first, ...rest] = r.stderr.split("\n");
      assert.match(first as string, re, what);
      assert.match(first as string, /^revtun relay: /, what);
      // A USAGE error is followed by the usage text and nothing else; a CONFIG error by nothing.
      assert.equal(rest.join("\n"), kind === "usage" ? RELAY_USAGE : "", what);
      assert.ok(!r.stderr.includes("hunter2"), what);
    }
  });

  test("--workers 2 whose workers cannot start: the primary exits 2, it does not fork them again and again", async () => {
    const t0 = performance.now();
    const args = [...base(), "--fleet", "redis://127.0.0.1:1", "--fleet-key", fleetKey, "--workers", "2"];
    args[args.indexOf(keysFile)] = join(dir, "missing_keys");
    const r = await runRevtun(args, 20_000, { REVTUN_FLEET: "" });
    const ms = performance.now() - t0;
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /revtun relay: cannot read authorized keys .*missing_keys/);
    assert.match(r.stderr, /worker \d \(pid \d+\) exited with code 2 before it was ready: stopping/);
    assert.ok(count(r.stderr, /worker \d started/) <= 2, r.stderr);
    assert.ok(ms < 10_000, `${ms} ms`);
  });

  test("REVTUN_FLEET in the environment works like --fleet", async () => {
    const redis = await RedisServer.start();
    const port = await freePort();
    const p = new Revtun(
      [
        ...base().slice(0, 2),
        `127.0.0.1:${port}`,
        ...base().slice(3),
        "--fleet-key",
        fleetKey,
        "--relay-id",
        "env",
      ],
      { REVTUN_FLEET: redis.url },
    );
    const rc = new Redis({ host: "127.0.0.1", port: redis.port, lazyConnect: true });
    try {
      await p.waitFor(/relay listening on 127\.0\.0\.1:\d+; fleet peers dial 127\.0\.0\.1:\d+/);
      await rc.connect();
      assert.equal(await rc.hget("revtun:relay:env", "address"), `127.0.0.1:${port}`);
    } finally {
      rc.disconnect();
      assert.equal(await p.stop(), 0, p.stderr);
      await redis.close();
    }
  });
});
