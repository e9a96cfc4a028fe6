/**
 * `revtun relay` as a process: flags, host key generation, logs, metrics,
 * SIGHUP reload and SIGTERM shutdown.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { relayCommand } from "../../src/cli/relay-command.js";
import { BIN, runInProcess } from "../helpers/cli.js";
import { SshProc, sleep, withTimeout } from "../helpers/relay.js";
import { freePort, keygen } from "../helpers/sshd.js";

describe("revtun relay flags", () => {
  test("bad values exit 2 with one line naming the value", async () => {
    const base = ["--host-key", "/nonexistent/k", "--authorized-keys", "/nonexistent/a"];
    const cases: Array<[string[], RegExp]> = [
      [["--listen", "nope", ...base], /bad --listen "nope"/],
      [["--listen", "2222", "--log-format", "xml", ...base], /bad --log-format "xml"/],
      [["--listen", "2222", "--metrics", "70000", ...base], /bad --metrics "70000"/],
      [["--listen", "2222", "--max-channels", "0", ...base], /bad --max-channels "0"/],
      [["--listen", "2222", "--max-channels", "many", ...base], /bad --max-channels "many"/],
      [["--listen", "2222", "--bogus", ...base], /--bogus/],
      [["--listen", "2222", "--authorized-keys", "/a"], /--host-key is required/],
      [["--listen", "2222", "--revoked-keys", "", ...base], /--revoked-keys needs a file name/],
      [["--listen", "2222", "--host-certificate", " ", ...base], /--host-certificate needs a file name/],
    ];
    for (const [argv, re] of cases) {
      const r = await runInProcess(relayCommand, argv);
      assert.equal(r.code, 2, argv.join(" "));
      const first = r.stderr.split("\n")[0] ?? "";
      assert.match(first, re);
      assert.match(first, /^revtun relay: /);
    }
  });

  test("an unreadable authorized_keys file fails to start with exit 2 (a configuration error)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "revtun-relay-cli-"));
    try {
      const r = await runInProcess(relayCommand, [
        "--listen",
        `127.0.0.1:${await freePort()}`,
        "--host-key",
        join(dir, "hk"),
        "--authorized-keys",
        join(dir, "missing"),
      ]);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /cannot read authorized keys .*missing/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("revtun relay process", () => {
  const dir = mkdtempSync(join(tmpdir(), "revtun-relay-cli-"));
  const children: ChildProcess[] = [];
  const sshs: SshProc[] = [];
  after(async () => {
    for (const s of sshs) await s.kill().catch(() => {});
    for (const c of children)
      if (c.exitCode === null && c.signalCode === null && c.pid) process.kill(c.pid, "SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });

  let lastOutput = "";
  function startRelay(args: string[]): { proc: ChildProcess; out: () => string; err: () => string } {
    const proc = spawn(process.execPath, [BIN, "relay", ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    children.push(proc);
    let out = "";
    let err = "";
    proc.stdout?.setEncoding("utf8").on("data", (d: string) => {
      out += d;
    });
    proc.stderr?.setEncoding("utf8").on("data", (d: string) => {
      err += d;
    });
    proc.once("exit", (code, signal) => {
      lastOutput = `relay exited ${code ?? signal}; stdout: ${out}; stderr: ${err}`;
    });
    lastOutput = "";
    return { proc, out: () => out, err: () => err };
  }

  async function until<T>(what: string, ms: number, probe: () => T | null | undefined): Promise<T> {
    const deadline = Date.now() + ms;
    for (;;) {
      const v = probe();
      if (v !== undefined && v !== null) return v;
      if (Date.now() > deadline)
        throw new Error(`timed out waiting for ${what} (${lastOutput || "relay running"})`);
      await sleep(25);
    }
  }

  // Complete lines only: the last one may still be arriving.
  const records = (text: string) =>
    text
      .split("\n")
      .slice(0, -1)
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Record<string, unknown>);

  test("generates a 0600 host key, prints its fingerprint, serves metrics, reloads on SIGHUP, exits 0 on SIGTERM", async () => {
    const k1 = join(dir, "id_1");
    const k2 = join(dir, "id_2");
    const pub1 = keygen(k1);
    const pub2 = keygen(k2);
    const ak = join(dir, "authorized_keys");
    writeFileSync(ak, `${pub1}\n${pub2}\n`);
    const hostKey = join(dir, "keys", "relay_host_key");
    const port = await freePort();
    const mport = await freePort();
    const args = ["--listen", `127.0.0.1:${port}`, "--host-key", hostKey, "--authorized-keys", ak];
    const r = startRelay([...args, "--metrics", `127.0.0.1:${mport}`, "--log-format", "json"]);

    const printed = await until("fingerprint on stdout", 15_000, () =>
      /host key (SHA256:\S+) \(generated/.exec(r.out()),
    );
    assert.equal(statSync(hostKey).mode & 0o777, 0o600);
    const keygenFp = execFileSync("ssh-keygen", ["-lf", `${hostKey}.pub`], { encoding: "utf8" }).split(
      " ",
    )[1];
    assert.equal(printed[1], keygenFp);
    await until("listening record", 10_000, () => records(r.err()).find((x) => x.event === "listening"));

    const health = await fetch(`http://127.0.0.1:${mport}/healthz`);
    assert.equal(health.status, 200);
    assert.equal(((await health.json()) as { ok: boolean }).ok, true);

    const kh = join(dir, "known_hosts");
    writeFileSync(
      kh,
      `[127.0.0.1]:${port} ${execFileSync("cut", ["-d", " ", "-f1,2", `${hostKey}.pub`], { encoding: "utf8" })}`,
    );
    const ssh = (key: string) => {
      const env = { ...process.env };
      delete env.SSH_AUTH_SOCK;
      const p = new SshProc(
        spawn(
          "ssh",
          [
            ...["-F", "/dev/null", "-o", `UserKnownHostsFile=${kh}`, "-o", "StrictHostKeyChecking=yes"],
            ...["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", key, "-p", String(port)],
            ...["-N", "-R", "0:127.0.0.1:9", "127.0.0.1"],
          ],
          { stdio: ["ignore", "pipe", "pipe"], env },
        ),
      );
      sshs.push(p);
      return p;
    };
    const s1 = ssh(k1);
    const s2 = ssh(k2);
    await s1.waitStderr(/Allocated port/, 10_000);
    await s2.waitStderr(/Allocated port/, 10_000);
    const metrics = await (await fetch(`http://127.0.0.1:${mport}/metrics`)).text();
    assert.match(metrics, /revtun_relay_sessions 2/);
    assert.match(metrics, /revtun_relay_forwards_bound 2/);
    const opened = records(r.err()).filter((x) => x.event === "session-opened");
    assert.equal(opened.length, 2);
    assert.ok(opened.every((x) => String(x.fingerprint).startsWith("SHA256:") && typeof x.msg === "string"));

    writeFileSync(ak, `${pub2}\n`);
    r.proc.kill("SIGHUP");
    await s1.waitExit(5_000);
    await until("SIGHUP reload record", 5_000, () =>
      records(r.err()).find((x) => x.event === "keys-loaded" && x.reason === "SIGHUP"),
    );
    assert.equal(s2.exitCode, undefined, "the remaining key's session stays");

    const exited = new Promise<number | null>((resolve) => r.proc.once("exit", resolve));
    r.proc.kill("SIGTERM");
    assert.equal(await withTimeout(exited, 5_000, "relay exit after SIGTERM"), 0);
    assert.notEqual(await s2.waitExit(5_000), null);
    assert.ok(records(r.err()).some((x) => x.event === "closed"));

    // A second start reuses the key: same fingerprint, nothing generated.
    const again = startRelay(args);
    const line = await until("fingerprint on stdout", 15_000, () =>
      /host key (SHA256:\S+)(.*)/.exec(again.out()),
    );
    assert.equal(line[1], keygenFp);
    assert.doesNotMatch(line[2] ?? "", /generated/);
    await until("listening line", 10_000, () => (/relay listening/.test(again.err()) ? true : undefined));
    const exited2 = new Promise<number | null>((resolve) => again.proc.once("exit", resolve));
    again.proc.kill("SIGINT");
    assert.equal(await withTimeout(exited2, 5_000, "relay exit after SIGINT"), 0);
  });
});
