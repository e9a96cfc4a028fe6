/** bin/revtun reading ssh_config as ssh does: -F, ~/.ssh/config, -o over the file, ProxyJump from the file. */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import type http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Revtun, runRevtun } from "../helpers/cli.js";
import { httpGet, httpServer, type Listening } from "../helpers/net.js";
import { freePort, Sshd } from "../helpers/sshd.js";

describe("revtun with ssh_config", () => {
  let sshd: Sshd;
  let web: Listening<http.Server>;
  let dir = "";
  let home = "";
  let n = 0;

  before(async () => {
    sshd = await Sshd.start();
    web = await httpServer("configured\n");
    dir = mkdtempSync(join(tmpdir(), "revtun-cfg-"));
    home = join(dir, "home");
    mkdirSync(join(home, ".ssh"), { recursive: true });
  });
  after(async () => {
    await web.close();
    await sshd.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A config whose `Host myalias` block has everything needed to connect, plus `lines`. */
  function config(lines: string[], port: number | string = sshd.port): string {
    const file = join(dir, `config-${++n}`);
    writeFileSync(
      file,
      [
        "Host myalias",
        ...lines.map((l) => `  ${l}`),
        "  HostName 127.0.0.1",
        `  Port ${port}`,
        `  User ${sshd.user}`,
        `  IdentityFile ${sshd.userKey}`,
        `  UserKnownHostsFile ${sshd.knownHosts}`,
        "  StrictHostKeyChecking yes",
        `  RemoteForward 127.0.0.1:0 127.0.0.1:${web.port}`,
        "",
      ].join("\n"),
    );
    return file;
  }

  async function serves(args: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
    const r = new Revtun(args, { HOME: home, ...env });
    try {
      const m = await r.waitFor(/Allocated port (\d+) for remote forward to 127\.0\.0\.1:(\d+)/);
      assert.equal(Number(m[2]), web.port);
      const res = await httpGet(Number(m[1]));
      assert.equal(res.status, 200);
      assert.equal(res.body, "configured\n");
    } finally {
      assert.equal(await r.stop("SIGTERM"), 0, r.stderr);
    }
    return r.stderr;
  }

  it("-F file: HostName, Port, User, IdentityFile, UserKnownHostsFile and RemoteForward from Host myalias", async () => {
    const stderr = await serves([
      "-v",
      "-N",
      "-F",
      config(["LocalForward 8080 localhost:80", "ForwardAgent yes"]),
      "myalias",
    ]);
    // Directives revtun cannot act on are noted at debug level, never fatal.
    assert.match(stderr, /ssh_config: LocalForward ignored/);
    assert.doesNotMatch(stderr, /ForwardAgent ignored/);
  });

  it("-o and -p override the file's values", async () => {
    const dead = await freePort();
    await serves(["-N", "-F", config([], dead), "-o", `Port=${sshd.port}`, "myalias"]);
    await serves(["-N", "-F", config([], dead), "-p", String(sshd.port), "myalias"]);
  });

  it("reads ~/.ssh/config by default, with its Include and tokens; -F none reads nothing", async () => {
    writeFileSync(join(home, ".ssh", "known_hosts"), sshd.knownHostsLines());
    writeFileSync(
      join(home, ".ssh", "alias.conf"),
      [
        "Host myalias",
        "  HostName 127.0.0.1",
        `  Port ${sshd.port}`,
        `  User ${sshd.user}`,
        `  IdentityFile ${sshd.userKey}`,
        "  UserKnownHostsFile %d/.ssh/known_hosts",
        `  RemoteForward 127.0.0.1:0 127.0.0.1:${web.port}`,
        "",
      ].join("\n"),
    );
    writeFileSync(join(home, ".ssh", "config"), "Include alias.conf\nHost *\n  Port 1\n");
    await serves(["-N", "-o", "StrictHostKeyChecking=yes", "myalias"]);
    // Without the config, "myalias" is just a host name on port 22.
    const r = new Revtun(["-N", "-F", "none", "-R", "0:127.0.0.1:1", "myalias"], { HOME: home });
    try {
      await r.waitFor(/connecting to myalias port 22/);
    } finally {
      await r.stop("SIGTERM");
    }
  });

  it("a missing -F file exits 2 naming it", async () => {
    const missing = join(dir, "no-such-config");
    const r = await runRevtun(["-N", "-F", missing, "myalias"], 20_000, { HOME: home });
    assert.equal(r.code, 2, r.stderr);
    assert.ok(r.stderr.includes(missing), r.stderr);
  });

  it("ProxyJump from the file goes through the jump host (sshd as its own bastion)", async () => {
    const before = sshd.log.split("Accepted publickey").length;
    await serves(["-N", "-F", config([`ProxyJump ${sshd.user}@127.0.0.1:${sshd.port}`]), "myalias"]);
    // One login for the hop, one for the target through it.
    assert.ok(sshd.log.split("Accepted publickey").length >= before + 2, sshd.log.slice(-2000));
  });
});
