/**
 * The Tunnel's state machine against a real OpenSSH sshd: connecting → up →
 * backoff → connecting → up after the server kills the session; stopped,
 * never retried, on a host key mismatch; start() once; and the constructor's
 * option validation, whose message names the option, what was expected and
 * what was received.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import type net from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  parseRemoteForward,
  RevtunError,
  Tunnel,
  type TunnelOptions,
  type TunnelState,
} from "../../src/index.js";
import { echoServer, exchange, type Listening, random, sha256, withTimeout } from "../helpers/net.js";
import { keygen, Sshd } from "../helpers/sshd.js";

let sshd: Sshd;
let echo: Listening<net.Server>;
before(async () => {
  sshd = await Sshd.start();
  echo = await echoServer();
});
after(async () => {
  await echo?.close();
  await sshd?.close();
});

const forward = () => parseRemoteForward(`127.0.0.1:0:127.0.0.1:${echo.port}`);

describe("Tunnel states", () => {
  test("connecting → up → backoff → connecting → up when sshd kills the session", {
    timeout: 10_000,
  }, async () => {
    const t = new Tunnel({ ...sshd.tunnelLogin(), forwards: [forward()], maxBackoffMs: 500 });
    // The state as status() reports it at each event.
    const seen: TunnelState[] = [];
    const note = () => {
      const s = t.status().state;
      if (seen.at(-1) !== s) seen.push(s);
    };
    t.on("connecting", note);
    t.on("disconnected", note);
    t.on("retrying", note);
    const ports: number[] = [];
    t.on("forward-bound", (e) => {
      note();
      ports.push(e.port ?? 0);
    });
    const bound = (n: number) =>
      withTimeout(
        new Promise<void>((resolve) => {
          const check = () => (ports.length >= n ? resolve() : t.once("forward-bound", check));
          check();
        }),
        5_000,
        `forward bound ${n} time(s)`,
      );
    try {
      await t.start();
      await bound(1);
      assert.equal(t.status().state, "up");
      assert.equal(t.healthy(), true);
      const p = random(1000);
      assert.equal(sha256(await exchange(ports[0] ?? 0, p)), sha256(p), "bytes flow over the first session");

      sshd.killSessions();
      await bound(2);
      assert.deepEqual(seen, ["connecting", "up", "backoff", "connecting", "up"]);
      assert.equal(t.status().forwards[0]?.state, "bound");
      assert.equal(sha256(await exchange(ports[1] ?? 0, p)), sha256(p), "bytes flow over the second session");
    } finally {
      await t.close(0);
    }
    assert.equal(t.status().state, "stopped");
    assert.equal(await t.done, undefined, "closed by the caller: no error");
  });

  test("a host key mismatch stops it with the error, after exactly one attempt", {
    timeout: 10_000,
  }, async () => {
    const other = join(sshd.dir, "other_host");
    const [type, key] = keygen(other).split(" ");
    const wrongKnownHosts = join(sshd.dir, "known_hosts_wrong");
    writeFileSync(wrongKnownHosts, `[127.0.0.1]:${sshd.port} ${type} ${key}\n`);
    const t = new Tunnel({
      ...sshd.tunnelLogin(),
      knownHostsFiles: [wrongKnownHosts],
      forwards: [forward()],
      maxBackoffMs: 100,
    });
    let attempts = 0;
    t.on("connecting", () => attempts++);
    let retried = false;
    t.on("retrying", () => (retried = true));
    const stopped = new Promise<Error | undefined>((r) => t.once("stopped", (e) => r(e.error)));
    const errors: Error[] = [];
    t.on("error", (e) => errors.push(e));
    try {
      await t.start();
      const err = await withTimeout(stopped, 5_000, "stopped");
      assert.ok(err instanceof RevtunError, String(err));
      assert.equal(err.code, "HOSTKEY_MISMATCH");
      assert.equal(await t.done, err, "done resolves with the same error");
      assert.deepEqual(errors, [err], "'error' emitted once with it");
      assert.equal(t.status().state, "stopped");
      assert.equal(t.status().lastError, err.message);
      // Longer than several backoff periods (100 ms): still no second attempt.
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(attempts, 1, "exactly one connect attempt");
      assert.equal(retried, false, "never retried");
    } finally {
      await t.close(0);
    }
  });

  test("start() twice rejects with USAGE", { timeout: 10_000 }, async () => {
    const t = new Tunnel({ ...sshd.tunnelLogin(), forwards: [forward()] });
    try {
      await t.start();
      await assert.rejects(t.start(), (e: unknown) => {
        assert.ok(e instanceof RevtunError);
        assert.equal(e.code, "USAGE");
        assert.match(e.message, /already started/);
        return true;
      });
    } finally {
      await t.close(0);
    }
  });
});

describe("Tunnel options are validated by the constructor", () => {
  const good = (): TunnelOptions => ({
    host: "127.0.0.1",
    username: "u",
    forwards: [parseRemoteForward("0:127.0.0.1:1")],
  });
  // [option, value, the message's "expected ..., got ..." part]
  const cases: [string, unknown, string][] = [
    ["connectTimeoutMs", -1, "a whole number of milliseconds above 0, got `-1` (number)"],
    ["connectTimeoutMs", 0, "a whole number of milliseconds above 0, got `0` (number)"],
    ["maxBackoffMs", 1.5, "a whole number of milliseconds above 0, got `1.5` (number)"],
    ["serverAliveIntervalMs", "15s", "a whole number of milliseconds (0 or more), got `15s` (string)"],
    ["stableAfterMs", -5, "a whole number of milliseconds (0 or more), got `-5` (number)"],
    [
      "targetConnectTimeoutMs",
      2 ** 31,
      "a whole number of milliseconds (0 or more), got `2147483648` (number)",
    ],
    ["host", "", "a non-empty string, got `` (string)"],
    ["username", 7, "a non-empty string, got `7` (number)"],
    ["port", 0, "an integer from 1 to 65535, got `0` (number)"],
    ["port", "22", "an integer from 1 to 65535, got `22` (string)"],
    ["port", 65536, "an integer from 1 to 65535, got `65536` (number)"],
    ["forwards", [], "a non-empty array of forward specs (parseRemoteForward), got `[]` (array)"],
    ["serverAliveCountMax", 0, "an integer from 1 to 1000, got `0` (number)"],
    ["strictHostKeyChecking", "maybe", "yes, no, ask or accept-new, got `maybe` (string)"],
    ["addressFamily", "inet7", "any, inet or inet6, got `inet7` (string)"],
    [
      "authMethods",
      ["telepathy"],
      'a list of agent, publickey, keyboard-interactive, password, got `["telepathy"]` (array)',
    ],
    ["identityFiles", "~/.ssh/id", "an array of file paths, got `~/.ssh/id` (string)"],
    ["knownHostsFiles", [1], "an array of file paths, got `[1]` (array)"],
    ["jumpHosts", [{ host: "j" }], 'an array of { host, port, username }, got `{"host":"j"}` (object)'],
    ["dial", "tcp", "a function, got `tcp` (string)"],
    ["confirmHostKey", true, "a function, got `true` (boolean)"],
  ];
  for (const [name, value, rest] of cases) {
    test(`${name} = ${JSON.stringify(value)}`, () => {
      assert.throws(
        () => new Tunnel({ ...good(), [name]: value } as TunnelOptions),
        (e: unknown) => {
          assert.ok(e instanceof RevtunError, String(e));
          assert.equal(e.code, "USAGE");
          assert.equal(e.message, `Expected the \`${name}\` option to be ${rest}`);
          return true;
        },
      );
    });
  }

  test("undefined means the default; good options build a tunnel that is not started", () => {
    const t = new Tunnel({
      ...good(),
      connectTimeoutMs: undefined,
      port: undefined,
    } as unknown as TunnelOptions);
    assert.equal(t.options.connectTimeoutMs, 15_000);
    assert.equal(t.port, 22);
    assert.equal(t.status().state, "connecting");
  });

  test("options that are not an object", () => {
    assert.throws(
      () => new Tunnel(null as unknown as TunnelOptions),
      (e: unknown) =>
        e instanceof RevtunError &&
        e.message === "Expected the `options` option to be an object, got `null` (null)",
    );
  });
});
