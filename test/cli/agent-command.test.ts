/** bin/revtun as a user runs it: ssh's flags, ssh's messages, ssh's exit codes. */
import assert from "node:assert/strict";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { RELAY_OPTIONS, RELAY_USAGE } from "../../src/cli/relay-command.js";
import { Revtun, runRevtun } from "../helpers/cli.js";
import { httpGet, httpServer, type Listening } from "../helpers/net.js";
import { freePort, keygen, Sshd } from "../helpers/sshd.js";

/** The usage block's entries (up to the first blank line), continuation lines joined, without "usage: ". */
function usageEntries(help: string): string[] {
  const entries: string[] = [];
  for (const line of help.split("\n\n")[0]?.split("\n") ?? []) {
    const m = /^(?:usage: | {7})(revtun\b.*)$/.exec(line);
    if (m?.[1]) entries.push(m[1]);
    else if (entries.length > 0) entries[entries.length - 1] += ` ${line.trim()}`;
  }
  return entries;
}

/** `flag` as a word of its own: "-v" is not found in "--verbose" nor "-vv". */
function mentionsFlag(text: string, flag: string): boolean {
  return new RegExp(`(?:^|[\\s\\[|,])${flag}(?![\\w-])`).test(text);
}

describe("revtun CLI against OpenSSH sshd", () => {
  let sshd: Sshd;
  let web: Listening<import("node:http").Server>;
  const common = () => ["-N", ...sshd.clientArgs()];

  before(async () => {
    sshd = await Sshd.start();
    web = await httpServer("through the tunnel\n");
  });
  after(async () => {
    await web.close();
    await sshd.close();
  });

  it("forwards HTTP on a server-allocated port and prints ssh's Allocated port line", async () => {
    const r = new Revtun([...common(), "-R", `127.0.0.1:0:127.0.0.1:${web.port}`, `${sshd.user}@127.0.0.1`]);
    try {
      const m = await r.waitFor(/Allocated port (\d+) for remote forward to 127\.0\.0\.1:(\d+)/);
      assert.equal(Number(m[2]), web.port);
      const res = await httpGet(Number(m[1]));
      assert.equal(res.status, 200);
      assert.equal(res.body, "through the tunnel\n");
    } finally {
      assert.equal(await r.stop("SIGTERM"), 0, "SIGTERM exits 0");
    }
  });

  it("takes several -R on one session, -p attached, -o Name value forms, and -l", async () => {
    const r = new Revtun([
      "-N",
      `-p${sshd.port}`,
      `-i${sshd.userKey}`,
      "-o",
      `userknownhostsfile ${sshd.knownHosts}`,
      "-oServerAliveInterval=5",
      "-l",
      sshd.user,
      "-R",
      `0:127.0.0.1:${web.port}`,
      "-R",
      `[::1]:0:localhost:${web.port}`,
      "127.0.0.1",
    ]);
    try {
      const first = await r.waitFor(/Allocated port (\d+) for remote forward to 127\.0\.0\.1/);
      const second = await r.waitFor(/Allocated port (\d+) for remote forward to localhost/);
      assert.equal((await httpGet(Number(first[1]))).status, 200);
      assert.equal((await httpGet(Number(second[1]), "/", "::1")).status, 200);
    } finally {
      assert.equal(await r.stop("SIGINT"), 0);
    }
  });

  it("refuses a changed host key, names both fingerprints and the line, exits 255", async () => {
    const dir = join(sshd.dir, "changed");
    const other = keygen(`${dir}-key`);
    const file = `${dir}-known_hosts`;
    writeFileSync(file, `# first line\n[127.0.0.1]:${sshd.port} ${other}\n`);
    const r = await runRevtun([
      ...sshd.clientArgs({ knownHosts: file }),
      "-R",
      `0:127.0.0.1:${web.port}`,
      `${sshd.user}@127.0.0.1`,
    ]);
    assert.equal(r.code, 255);
    assert.match(r.stderr, /host key for \[127\.0\.0\.1\]:\d+ has CHANGED/);
    assert.match(r.stderr, /SHA256:[A-Za-z0-9+/]{43}/);
    assert.match(r.stderr, /:2\b/);
    assert.equal(r.stderr.split("\n").filter((l) => l.startsWith("revtun: ")).length, 1, r.stderr);
  });

  it("refuses an unknown host with StrictHostKeyChecking=yes and shows the fingerprint ssh-keygen shows", async () => {
    const empty = join(sshd.dir, "empty_known_hosts");
    writeFileSync(empty, "");
    const r = await runRevtun([
      ...common().slice(0, 5),
      "-o",
      `UserKnownHostsFile=${empty}`,
      "-o",
      "StrictHostKeyChecking=yes",
      "-R",
      `0:127.0.0.1:${web.port}`,
      `${sshd.user}@127.0.0.1`,
    ]);
    assert.equal(r.code, 255);
    const fp = sshd.fingerprint();
    assert.ok(r.stderr.includes(fp), `${r.stderr} should name ${fp}`);
    assert.match(r.stderr, /not known/);
  });

  it("refuses unknown hosts by default without a terminal, and accept-new records the key", async () => {
    const file = join(sshd.dir, "accept_new_known_hosts");
    rmSync(file, { force: true });
    const base = ["-p", String(sshd.port), "-i", sshd.userKey, "-o", `UserKnownHostsFile=${file}`];
    const refused = await runRevtun([...base, "-R", `0:127.0.0.1:${web.port}`, `${sshd.user}@127.0.0.1`]);
    assert.equal(refused.code, 255);
    const r = new Revtun([
      ...base,
      "-o",
      "StrictHostKeyChecking=accept-new",
      "-R",
      `0:127.0.0.1:${web.port}`,
      `${sshd.user}@127.0.0.1`,
    ]);
    try {
      await r.waitFor(/Allocated port \d+/);
    } finally {
      await r.stop();
    }
    assert.match(readFileSync(file, "utf8"), new RegExp(`^\\[127\\.0\\.0\\.1\\]:${sshd.port} ssh-ed25519 `));
  });

  it("exits 255 naming the key tried when the server refuses it", async () => {
    const stranger = join(sshd.dir, "stranger");
    keygen(stranger);
    const r = await runRevtun([
      ...sshd.clientArgs({ key: stranger }),
      "-R",
      `0:127.0.0.1:${web.port}`,
      `${sshd.user}@127.0.0.1`,
    ]);
    assert.equal(r.code, 255);
    assert.match(r.stderr, /permission denied/i);
    assert.ok(r.stderr.includes(stranger), r.stderr);
  });

  it("exits 255 naming a missing identity file", async () => {
    const r = await runRevtun([
      "-p",
      String(sshd.port),
      "-i",
      "/nonexistent/id_ed25519",
      "-R",
      "0:127.0.0.1:80",
      "127.0.0.1",
    ]);
    assert.equal(r.code, 255);
    assert.match(r.stderr, /identity file \/nonexistent\/id_ed25519 not found/);
  });

  it("keeps retrying a refused server and still stops at once on SIGTERM", async () => {
    const closed = await freePort();
    const r = new Revtun(["-p", String(closed), "-i", sshd.userKey, "-R", "0:127.0.0.1:80", "127.0.0.1"]);
    await r.waitFor(/connection refused[\s\S]*next attempt in \d+ ms[\s\S]*connection refused/);
    const started = Date.now();
    assert.equal(await r.stop("SIGTERM"), 0);
    assert.ok(Date.now() - started < 3_000, "stops promptly during backoff");
  });

  for (const [args, pattern] of [
    [["-R", "80:localhost", "host"], /bad forward spec "80:localhost"/],
    [["-R", "99999:localhost:80", "host"], /port 99999 is out of range/],
    [["-R", "0:localhost:http", "host"], /hostport "http" is not a port number/],
    [["-o", "Compression=yes", "-R", "0:localhost:80", "host"], /unsupported option "Compression"/],
    [["-o", "ServerAliveInterval=soon", "-R", "0:localhost:80", "host"], /ServerAliveInterval: "soon"/],
    [["-L", "8080:localhost:80", "host"], /-L is an ssh option revtun does not support/],
    [["-p", "0", "-R", "0:localhost:80", "host"], /bad port "0"/],
    [["-R", "0:localhost:80"], /no destination/],
    [["host"], /no remote forward for host/],
    [["-R", "0:localhost:80", "host", "uptime"], /runs no remote command/],
    [["--frobnicate"], /unknown option "--frobnicate"/],
  ] as const) {
    it(`exits 2 on bad usage: ${args.join(" ")}`, async () => {
      const r = await runRevtun(["-F", "none", ...args]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, pattern);
      assert.equal(r.stderr.trim().split("\n").length, 1, `one line: ${r.stderr}`);
    });
  }

  it("prints --version and --help", async () => {
    const v = await runRevtun(["--version"]);
    assert.equal(v.code, 0);
    assert.match(v.stdout, /^revtun \d+\.\d+\.\d+\n$/);
    const h = await runRevtun(["--help"]);
    assert.equal(h.code, 0);
    for (const flag of [
      "-R",
      "-J",
      "-F",
      "-o",
      "--config",
      "--metrics",
      "ServerAliveInterval",
      "ExitOnForwardFailure",
    ]) {
      assert.ok(h.stdout.includes(flag), `help mentions ${flag}`);
    }
    // The `revtun relay` usage entries of --help name every flag the relay
    // parser accepts (by its long or its short form), and so does `relay --help`.
    const relayUsage = usageEntries(h.stdout)
      .filter((e) => e.startsWith("revtun relay"))
      .join("\n");
    assert.ok(relayUsage, `--help has a revtun relay usage line:\n${h.stdout}`);
    const r = await runRevtun(["relay", "--help"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, RELAY_USAGE);
    for (const [name, opt] of Object.entries(RELAY_OPTIONS)) {
      const forms = [`--${name}`, ...("short" in opt ? [`-${opt.short}`] : [])];
      assert.ok(
        forms.some((f) => mentionsFlag(relayUsage, f)),
        `revtun --help relay usage mentions ${forms.join(" or ")}:\n${relayUsage}`,
      );
      for (const f of forms) assert.ok(mentionsFlag(r.stdout, f), `revtun relay --help mentions ${f}`);
    }
  });
});
