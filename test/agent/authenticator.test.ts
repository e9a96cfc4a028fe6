/**
 * Authentication and host keys against real OpenSSH: a real ssh-agent, an
 * encrypted identity, password and keyboard-interactive logins for a user the
 * suite creates, hashed known_hosts and accept-new. Secrets must never show
 * up in revtun's output, even with -v.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  appendFileSync,
  copyFileSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import type net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { openTunnel, parseRemoteForward, type TunnelOptions } from "../../src/index.js";
import { agentArgs, Revtun, runRevtun } from "../helpers/cli.js";
import { echoServer, exchange, type Listening, random, sha256, waitFor } from "../helpers/net.js";
import { keygen, Sshd } from "../helpers/sshd.js";

const isRoot = process.getuid?.() === 0;

let dir = "";
/** A HOME without ~/.ssh, so no default identity is ever offered by accident. */
let emptyHome = "";
let echo: Listening<net.Server>;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "revtun-auth-"));
  emptyHome = join(dir, "home");
  execFileSync("mkdir", ["-p", emptyHome]);
  echo = await echoServer();
});
after(async () => {
  await echo.close();
  rmSync(dir, { recursive: true, force: true });
});

const works = async (port: number, size = 64 * 1024) => {
  const p = random(size);
  return sha256(await exchange(port, p, "127.0.0.1", 10_000)) === sha256(p);
};

/** Opens a tunnel with the library and resolves with its allocated port, or rejects with why it stopped. */
async function libraryTunnel(sshd: Sshd, extra: Partial<TunnelOptions>) {
  const t = await openTunnel({
    host: "127.0.0.1",
    port: sshd.port,
    username: sshd.user,
    identityFiles: [],
    home: emptyHome,
    knownHostsFiles: [sshd.knownHosts],
    strictHostKeyChecking: "yes",
    forwards: [parseRemoteForward(`127.0.0.1:0:127.0.0.1:${echo.port}`)],
    ...extra,
  });
  const hostKey: string[] = [];
  t.on("host-key", (e) => hostKey.push(e.status));
  t.on("error", () => {});
  const port = await Promise.race([
    new Promise<number>((resolve) => t.once("forward-bound", (e) => resolve(e.port ?? 0))),
    t.done.then((err) => {
      throw err ?? new Error("tunnel stopped");
    }),
  ]);
  return { t, port, hostKey };
}

/** Common CLI arguments (verbose): a forward to the echo service on a port the server picks. */
function cliArgs(sshd: Sshd, user: string, ...extra: string[]): string[] {
  return agentArgs(sshd, user, echo.port, "-v", ...extra);
}

/** Runs the CLI until it serves, checks data flows, stops it; returns all it printed. */
async function cliServes(args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  const r = new Revtun(args, { HOME: emptyHome, ...env });
  try {
    const m = await r.waitFor(/Allocated port (\d+) for remote forward/);
    assert.ok(await works(Number(m[1])), "data flows through the tunnel");
  } finally {
    assert.equal(await r.stop("SIGTERM"), 0, r.stderr);
  }
  return r.stdout + r.stderr;
}

describe("ssh-agent", () => {
  let sshd: Sshd;
  let agent: ChildProcess;
  let sock = "";

  before(async () => {
    sshd = await Sshd.start();
    sock = join(dir, "agent.sock");
    agent = spawn("ssh-agent", ["-D", "-a", sock], { stdio: "ignore" });
    await waitFor(() => existsSync(sock), "ssh-agent's socket");
    execFileSync("ssh-add", ["-q", sshd.userKey], {
      env: { ...process.env, SSH_AUTH_SOCK: sock },
      stdio: "ignore",
    });
  });
  after(async () => {
    if (agent.exitCode === null && agent.signalCode === null) {
      const exited = new Promise((r) => agent.once("exit", r));
      agent.kill("SIGTERM");
      await exited;
    }
    await sshd.close();
  });

  it("authenticates with the agent's key alone (library, agent option)", async () => {
    const { t, port } = await libraryTunnel(sshd, { agent: sock });
    try {
      assert.ok(await works(port));
      // The agent's key, and no other, is what got us in.
      const fp = execFileSync("ssh-keygen", ["-lf", `${sshd.userKey}.pub`], { encoding: "utf8" }).split(
        /\s+/,
      )[1];
      assert.match(sshd.log, new RegExp(`Accepted publickey for ${sshd.user} .*${escapeRe(fp ?? "?")}`));
    } finally {
      await t.close(0);
    }
  });

  it("the CLI takes SSH_AUTH_SOCK, and IdentityAgent overrides it", async () => {
    await cliServes(cliArgs(sshd, sshd.user), { SSH_AUTH_SOCK: sock });
    await cliServes(cliArgs(sshd, sshd.user, "-o", `IdentityAgent=${sock}`), { SSH_AUTH_SOCK: "" });
  });
});

describe("encrypted identity", () => {
  let sshd: Sshd;
  let key = "";
  const passphrase = `pass-${randomBytes(8).toString("hex")}`;

  before(async () => {
    sshd = await Sshd.start();
    key = join(dir, "id_encrypted");
    appendFileSync(join(sshd.dir, "authorized_keys"), `${keygen(key, "ed25519", passphrase)}\n`);
  });
  after(() => sshd.close());

  it("works with REVTUN_PASSPHRASE, which never appears in the output", async () => {
    const out = await cliServes(cliArgs(sshd, sshd.user, "-i", key), { REVTUN_PASSPHRASE: passphrase });
    assert.ok(!out.includes(passphrase), "the passphrase is not printed");
  });

  it("works with --passphrase-file", async () => {
    const file = join(dir, "passphrase");
    writeFileSync(file, `${passphrase}\n`, { mode: 0o600 });
    const out = await cliServes(cliArgs(sshd, sshd.user, "-i", key, "--passphrase-file", file), {});
    assert.ok(!out.includes(passphrase));
  });

  it("a wrong passphrase exits 255 naming the file and the passphrase", async () => {
    const wrong = `wrong-${randomBytes(6).toString("hex")}`;
    const r = await runRevtun(cliArgs(sshd, sshd.user, "-i", key), 20_000, {
      HOME: emptyHome,
      REVTUN_PASSPHRASE: wrong,
    });
    assert.equal(r.code, 255, r.stderr);
    assert.ok(r.stderr.includes(key), r.stderr);
    assert.match(r.stderr, /passphrase/);
    assert.ok(!(r.stdout + r.stderr).includes(wrong), "the wrong passphrase is not printed either");
  });

  it("no passphrase given exits 255 naming REVTUN_PASSPHRASE and --passphrase-file", async () => {
    const r = await runRevtun(cliArgs(sshd, sshd.user, "-i", key), 20_000, { HOME: emptyHome });
    assert.equal(r.code, 255, r.stderr);
    assert.ok(r.stderr.includes(key), r.stderr);
    assert.match(r.stderr, /REVTUN_PASSPHRASE/);
    assert.match(r.stderr, /--passphrase-file/);
  });
});

describe("password and keyboard-interactive", { skip: !isRoot && "needs root to create a test user" }, () => {
  const user = `revtun-test-${randomBytes(4).toString("hex")}`;
  const password = `pw-${randomBytes(10).toString("hex")}`;
  let passwordSshd: Sshd;
  let kbdSshd: Sshd;

  before(async () => {
    execFileSync("useradd", ["-m", "-s", "/bin/sh", user]);
    execFileSync("chpasswd", { input: `${user}:${password}\n` });
    [passwordSshd, kbdSshd] = await Promise.all([
      // Without PAM, sshd checks the password against /etc/shadow itself.
      Sshd.start({ first: ["PasswordAuthentication yes"] }),
      // Keyboard-interactive needs a challenge source, which on Linux is PAM.
      Sshd.start({ first: ["UsePAM yes", "KbdInteractiveAuthentication yes", "PasswordAuthentication no"] }),
    ]);
  });
  after(async () => {
    await Promise.all([passwordSshd?.close(), kbdSshd?.close()]);
    try {
      execFileSync("userdel", ["-r", user], { stdio: "ignore" });
    } catch {
      // useradd failed in before(): nothing to remove
    }
  });

  it("REVTUN_PASSWORD logs in with password; the password never appears in the output", async () => {
    const out = await cliServes(cliArgs(passwordSshd, user), { REVTUN_PASSWORD: password });
    assert.match(passwordSshd.log, new RegExp(`Accepted password for ${user}`));
    assert.ok(!out.includes(password));
  });

  it("--password-file logs in too", async () => {
    const file = join(dir, "password");
    writeFileSync(file, `${password}\n`, { mode: 0o600 });
    const out = await cliServes(cliArgs(passwordSshd, user, "--password-file", file), {});
    assert.ok(!out.includes(password));
  });

  it("a wrong password exits 255 with permission denied, naming the methods tried", async () => {
    const wrong = `wrong-${randomBytes(6).toString("hex")}`;
    const r = await runRevtun(cliArgs(passwordSshd, user), 30_000, {
      HOME: emptyHome,
      REVTUN_PASSWORD: wrong,
    });
    assert.equal(r.code, 255, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`permission denied for ${user}@\\[127\\.0\\.0\\.1\\]:${passwordSshd.port}`),
    );
    assert.match(r.stderr, /server allows: publickey,password/);
    // ssh2 opens with the first method queued, before the server has listed what it allows.
    assert.match(r.stderr, /tried (keyboard-interactive, )?password; the password may be wrong/);
    assert.ok(!(r.stdout + r.stderr).includes(wrong));
  });

  it("keyboard-interactive (PAM) answers the prompt with REVTUN_PASSWORD", async () => {
    const out = await cliServes(cliArgs(kbdSshd, user), { REVTUN_PASSWORD: password });
    assert.match(kbdSshd.log, new RegExp(`Accepted keyboard-interactive/pam for ${user}`));
    assert.ok(!out.includes(password));
  });

  it("a wrong keyboard-interactive answer is permission denied naming keyboard-interactive", async () => {
    const wrong = `wrong-${randomBytes(6).toString("hex")}`;
    const r = await runRevtun(cliArgs(kbdSshd, user), 30_000, { HOME: emptyHome, REVTUN_PASSWORD: wrong });
    assert.equal(r.code, 255, r.stderr);
    assert.match(r.stderr, /permission denied/);
    assert.match(r.stderr, /tried keyboard-interactive/);
    assert.ok(!(r.stdout + r.stderr).includes(wrong));
  });
});

describe("known_hosts", () => {
  let sshd: Sshd;
  before(async () => {
    sshd = await Sshd.start();
  });
  after(() => sshd.close());

  it("a hashed known_hosts (ssh-keygen -H) identifies the server", async () => {
    const file = join(dir, "hashed_known_hosts");
    copyFileSync(sshd.knownHosts, file);
    execFileSync("ssh-keygen", ["-H", "-f", file], { stdio: "ignore" });
    rmSync(`${file}.old`, { force: true });
    const text = readFileSync(file, "utf8");
    assert.match(text, /^\|1\|/, "the file is hashed");
    assert.ok(!text.includes("127.0.0.1"));
    const { t, port, hostKey } = await libraryTunnel(sshd, {
      identityFiles: [sshd.userKey],
      knownHostsFiles: [file],
    });
    try {
      assert.deepEqual(hostKey, ["known"]);
      assert.ok(await works(port));
    } finally {
      await t.close(0);
    }
  });

  it("accept-new records the key in an empty file, and the next run finds it there", async () => {
    const file = join(dir, "accept_new_known_hosts");
    writeFileSync(file, "");
    const args = [
      "-N",
      "-F",
      "none",
      "-p",
      String(sshd.port),
      "-i",
      sshd.userKey,
      "-o",
      `UserKnownHostsFile=${file}`,
      "-o",
      "StrictHostKeyChecking=accept-new",
      "-R",
      `127.0.0.1:0:127.0.0.1:${echo.port}`,
      `${sshd.user}@127.0.0.1`,
    ];
    const first = await cliServes(args, {});
    assert.match(first, /new host key recorded/);
    const recorded = readFileSync(file, "utf8");
    assert.equal(recorded, sshd.knownHostsLines(), "one line, in ssh's [host]:port form");
    const second = await cliServes(args, {});
    assert.doesNotMatch(second, /new host key recorded/);
    assert.equal(readFileSync(file, "utf8"), recorded, "nothing added the second time");
    // And with the key on file, the strictest policy connects too.
    const strict = args.map((a) =>
      a === "StrictHostKeyChecking=accept-new" ? "StrictHostKeyChecking=yes" : a,
    );
    await cliServes(strict, {});
  });

  it("HashKnownHosts=yes records a hashed line that the next run matches", async () => {
    const file = join(dir, "hash_new_known_hosts");
    const first = await libraryTunnel(sshd, {
      identityFiles: [sshd.userKey],
      knownHostsFiles: [file],
      strictHostKeyChecking: "accept-new",
      hashKnownHosts: true,
    });
    await first.t.close(0);
    assert.deepEqual(first.hostKey, ["recorded"]);
    assert.match(readFileSync(file, "utf8"), /^\|1\|[^ ]+ ssh-ed25519 /);
    const second = await libraryTunnel(sshd, { identityFiles: [sshd.userKey], knownHostsFiles: [file] });
    await second.t.close(0);
    assert.deepEqual(second.hostKey, ["known"]);
  });
});

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}
