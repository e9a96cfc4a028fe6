/**
 * ssh's authentication switches through the CLI against a real sshd that
 * offers publickey, password and keyboard-interactive (PAM): each switch
 * must keep its method off the wire, which only sshd's own log can show.
 * Issue 12 item 5: PasswordAuthentication=no still sent the password (it was
 * dropped only when keyboard-interactive was off too) and
 * PreferredAuthentications was parsed but never used.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import type net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { agentArgs, Revtun, runRevtun } from "../helpers/cli.js";
import { echoServer, type Listening } from "../helpers/net.js";
import { Sshd } from "../helpers/sshd.js";

const isRoot = process.getuid?.() === 0;

describe("auth options against sshd's log", { skip: !isRoot && "needs root to create a test user" }, () => {
  const user = `revtun-opt-${randomBytes(4).toString("hex")}`;
  const password = `pw-${randomBytes(10).toString("hex")}`;
  const wrong = `wrong-${randomBytes(6).toString("hex")}`;
  let sshd: Sshd;
  let echo: Listening<net.Server>;
  let dir = "";
  let home = "";

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "revtun-authopt-"));
    home = join(dir, "home");
    mkdirSync(home);
    execFileSync("useradd", ["-m", "-s", "/bin/sh", user]);
    execFileSync("chpasswd", { input: `${user}:${password}\n` });
    echo = await echoServer();
    // Every method on: what revtun leaves out is then its own choice.
    sshd = await Sshd.start({
      first: ["UsePAM yes", "PasswordAuthentication yes", "KbdInteractiveAuthentication yes"],
    });
    // sshd reads authorized_keys as the user logging in: let the test user
    // through the (0700) directory to the key list, not to the private keys.
    chmodSync(sshd.dir, 0o711);
    chmodSync(join(sshd.dir, "authorized_keys"), 0o644);
  });
  after(async () => {
    await Promise.all([sshd?.close(), echo?.close()]);
    try {
      execFileSync("userdel", ["-r", user], { stdio: "ignore" });
    } catch {
      // useradd failed in before(): nothing to remove
    }
    rmSync(dir, { recursive: true, force: true });
  });

  const args = (...extra: string[]) => agentArgs(sshd, user, echo.port, ...extra);

  /** What sshd logged while `run` ran (its log is one growing string). */
  async function logOf(run: () => Promise<void>): Promise<string> {
    const from = sshd.log.length;
    await run();
    // sshd writes its last lines for a session as the connection closes.
    await new Promise((r) => setTimeout(r, 200));
    return sshd.log.slice(from);
  }

  async function refused(pw: string, ...extra: string[]) {
    const r = await runRevtun(args(...extra), 30_000, { HOME: home, REVTUN_PASSWORD: pw });
    assert.equal(r.code, 255, r.stderr);
    assert.match(r.stderr, /permission denied/);
    return r;
  }

  async function serves(pw: string, ...extra: string[]) {
    const r = new Revtun(args(...extra), { HOME: home, REVTUN_PASSWORD: pw });
    try {
      await r.waitFor(/Allocated port \d+ for remote forward/, 20_000);
    } finally {
      assert.equal(await r.stop("SIGTERM"), 0, r.stderr);
    }
  }

  const passwordTried = /(Failed|Accepted) password for/;
  const kbdTried = /keyboard-interactive/;
  const pubkeyTried = /publickey|ED25519 SHA256/;

  it("PasswordAuthentication=no KbdInteractiveAuthentication=no: the right password is never sent", async () => {
    const log = await logOf(async () => {
      const r = await refused(
        password,
        "-o",
        "PasswordAuthentication=no",
        "-o",
        "KbdInteractiveAuthentication=no",
      );
      assert.match(r.stderr, /tried nothing/);
    });
    assert.doesNotMatch(log, passwordTried, log);
    assert.doesNotMatch(log, kbdTried, log);
  });

  it("PasswordAuthentication=no alone: keyboard-interactive only, no Failed password", async () => {
    const log = await logOf(async () => {
      const r = await refused(wrong, "-o", "PasswordAuthentication=no");
      assert.match(r.stderr, /tried keyboard-interactive;/);
    });
    assert.match(log, /Failed keyboard-interactive\/pam for/, log);
    assert.doesNotMatch(log, passwordTried, log);
  });

  it("KbdInteractiveAuthentication=no alone: password only", async () => {
    const log = await logOf(() => serves(password, "-o", "KbdInteractiveAuthentication=no"));
    assert.match(log, new RegExp(`Accepted password for ${user}`), log);
    assert.doesNotMatch(log, kbdTried, log);
  });

  it("PubkeyAuthentication=no: a working -i key is not offered", async () => {
    const log = await logOf(() =>
      serves(
        password,
        "-i",
        sshd.userKey,
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "KbdInteractiveAuthentication=no",
      ),
    );
    assert.match(log, new RegExp(`Accepted password for ${user}`), log);
    assert.doesNotMatch(log, pubkeyTried, log);
  });

  it("PreferredAuthentications=password,publickey: password first; names revtun lacks are skipped", async () => {
    const log = await logOf(() =>
      serves(
        wrong,
        "-i",
        sshd.userKey,
        "-o",
        "PreferredAuthentications=gssapi-with-mic,hostbased,password,publickey",
      ),
    );
    const failed = log.search(new RegExp(`Failed password for ${user}`));
    const accepted = log.search(new RegExp(`Accepted publickey for ${user}`));
    assert.ok(failed >= 0 && accepted > failed, `password, then publickey:\n${log}`);
    assert.doesNotMatch(log, kbdTried, log);
  });
});
