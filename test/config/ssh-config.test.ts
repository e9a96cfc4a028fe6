/** ssh_config evaluation: OpenSSH's matching, precedence, Include and tokens, checked against `ssh -G`. */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { SshOptions } from "../../src/config/directives.js";
import { type AppliedConfig, applySshConfig, type SshConfigContext } from "../../src/config/ssh-config.js";
import { RevtunError } from "../../src/shared/errors.js";

let home = "";
let n = 0;

before(() => {
  home = mkdtempSync(join(tmpdir(), "revtun-sshcfg-"));
  mkdirSync(join(home, ".ssh"));
});
after(() => rmSync(home, { recursive: true, force: true }));

/** Writes a config file (dedented) and returns its path. */
function conf(text: string, name = `config-${++n}`): string {
  const file = join(home, ".ssh", name);
  writeFileSync(file, text.replace(/^\n/, "").replace(/^ {4}/gm, ""));
  return file;
}

async function apply(
  text: string,
  host: string,
  opts: SshOptions = {},
  extra: Partial<SshConfigContext> = {},
): Promise<{ opts: SshOptions; applied: AppliedConfig }> {
  const applied = await applySshConfig(opts, {
    host,
    file: conf(text),
    localUser: "alice",
    home,
    ...extra,
  });
  return { opts, applied };
}

/** What OpenSSH itself resolves for `host` with `-F file`: the reference for our evaluation. */
function sshG(file: string, host: string): Record<string, string[]> {
  const out = execFileSync("ssh", ["-G", "-F", file, host], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "ignore"],
  });
  const r: Record<string, string[]> = {};
  for (const line of out.split("\n")) {
    const sp = line.indexOf(" ");
    if (sp < 0) continue;
    const k = line.slice(0, sp);
    r[k] = [...(r[k] ?? []), line.slice(sp + 1)];
  }
  return r;
}

describe("Host patterns", () => {
  const text = `
    Host web?? !web13 *.internal db-* "quoted name"
      HostName matched-%h
      Port 2201

    Host exact
      HostName exact.example.net
      Port 2202
      User exact-user

    Host *
      Port 2299
      User everyone
      HostName fallback.example.net
    `;

  for (const [host, hostName, port, user] of [
    ["web01", "matched-web01", 2201, "everyone"],
    ["web13", "fallback.example.net", 2299, "everyone"],
    ["web1", "fallback.example.net", 2299, "everyone"],
    ["web123", "fallback.example.net", 2299, "everyone"],
    ["a.b.internal", "matched-a.b.internal", 2201, "everyone"],
    ["db-", "matched-db-", 2201, "everyone"],
    ["exact", "exact.example.net", 2202, "exact-user"],
    // ssh matches Host patterns against the host exactly as typed.
    ["EXACT", "fallback.example.net", 2299, "everyone"],
    ["other", "fallback.example.net", 2299, "everyone"],
  ] as const) {
    test(`${host} → ${hostName}:${port} as ${user}, as ssh -G says`, async () => {
      const { opts } = await apply(text, host);
      assert.equal(opts.hostName, hostName);
      assert.equal(opts.port, port);
      assert.equal(opts.user, user);
      const g = sshG(join(home, ".ssh", `config-${n}`), host);
      assert.deepEqual(g.hostname, [hostName.toLowerCase()]);
      assert.deepEqual(g.port, [String(port)]);
      assert.deepEqual(g.user, [user]);
    });
  }

  test("a negated pattern alone never activates a block", async () => {
    const { opts } = await apply("Host !foo\n  Port 1234\n", "bar");
    assert.equal(opts.port, undefined);
  });

  test("`?` is exactly one character", async () => {
    const { opts } = await apply("Host h?\n  Port 1111\n", "h");
    assert.equal(opts.port, undefined);
  });
});

describe("precedence", () => {
  test("the command line (already in opts) wins; the first config value wins over later ones", async () => {
    const { opts } = await apply(
      `
      Host box
        Port 2222
        User first
      Host *
        User second
        ServerAliveInterval 7
      `,
      "box",
      { port: 4444, serverAliveInterval: 3 },
    );
    assert.equal(opts.port, 4444);
    assert.equal(opts.user, "first");
    assert.equal(opts.serverAliveInterval, 3);
  });

  test("list options accumulate, command line first, and repeated ones are dropped as ssh does", async () => {
    const { opts } = await apply(
      `
      Host box
        IdentityFile /keys/a
        IdentityFile /keys/b
        RemoteForward 8080 localhost:80
        RemoteForward 127.0.0.1:0 127.0.0.1:9000
      Host *
        IdentityFile /keys/a
        RemoteForward 8080 localhost:80
      `,
      "box",
      {
        identityFile: ["/keys/cli"],
        remoteForward: [
          {
            bind: { kind: "tcp", address: undefined, port: 8080 },
            target: { kind: "tcp", host: "localhost", port: 80 },
            text: "8080:localhost:80",
          },
        ],
      },
    );
    assert.deepEqual(opts.identityFile, ["/keys/cli", "/keys/a", "/keys/b"]);
    assert.deepEqual(
      opts.remoteForward?.map((f) => f.text),
      ["8080:localhost:80", "127.0.0.1:0 127.0.0.1:9000"],
    );
    assert.deepEqual(opts.remoteForward?.[1]?.bind, { kind: "tcp", address: "127.0.0.1", port: 0 });
    assert.deepEqual(opts.remoteForward?.[1]?.target, { kind: "tcp", host: "127.0.0.1", port: 9000 });
  });

  test("global lines before the first Host apply to every host", async () => {
    const { opts } = await apply("Port=2022\nHost other\n  Port 1\n", "box");
    assert.equal(opts.port, 2022);
  });

  test("names are case-insensitive and `=` separates too", async () => {
    const { opts } = await apply("host box\n  hOsTnAmE = 10.0.0.9\n  PORT=2200\n", "box");
    assert.equal(opts.hostName, "10.0.0.9");
    assert.equal(opts.port, 2200);
  });

  test("quoted values keep their spaces", async () => {
    const { opts } = await apply(
      'Host box\n  IdentityFile "/my keys/id"\n  UserKnownHostsFile "/my files/kh" /other/kh\n',
      "box",
    );
    assert.deepEqual(opts.identityFile, ["/my keys/id"]);
    assert.deepEqual(opts.userKnownHostsFile, ["/my files/kh", "/other/kh"]);
  });

  test("a bad value is a CONFIG error naming the file and line", async () => {
    await assert.rejects(
      apply("# comment\n\nHost box\n  HostName x  # trailing\n  Port many\n", "box"),
      (e: unknown) =>
        e instanceof RevtunError &&
        e.code === "CONFIG" &&
        e.message.includes(`config-${n} line 5`) &&
        /Port/.test(e.message),
    );
  });

  test("a bad value in a block for another host does not matter", async () => {
    const { opts } = await apply("Host other\n  Port many\nHost *\n  Port 2\n", "box");
    assert.equal(opts.port, 2);
  });
});

describe("Include", () => {
  test("globs, relative to ~/.ssh, in lexical order, only inside an active block", async () => {
    mkdirSync(join(home, ".ssh", "conf.d"), { recursive: true });
    writeFileSync(join(home, ".ssh", "conf.d", "20-b.conf"), "Port 2020\nUser from-b\n");
    writeFileSync(
      join(home, ".ssh", "conf.d", "10-a.conf"),
      "Host box\n  User from-a\nHost other\n  Port 1\n",
    );
    writeFileSync(join(home, ".ssh", "conf.d", ".hidden.conf"), "Port 9\n");
    writeFileSync(join(home, ".ssh", "never.conf"), "ServerAliveInterval 99\n");
    const { opts, applied } = await apply(
      `
      Host nomatch
        Include never.conf
      Host box
        Include conf.d/*.conf does-not-exist.conf
        ServerAliveInterval 5
      `,
      "box",
    );
    assert.equal(opts.user, "from-a");
    // The included file's "Host other" ends at its end: 20-b.conf is read in the box block.
    assert.equal(opts.port, 2020);
    // The including block resumes after the Include.
    assert.equal(opts.serverAliveInterval, 5);
    assert.deepEqual(applied.files.slice(1), [
      join(home, ".ssh", "conf.d", "10-a.conf"),
      join(home, ".ssh", "conf.d", "20-b.conf"),
    ]);
  });

  test("absolute and ~ paths", async () => {
    const abs = conf("Port 3030\n", "abs.conf");
    const { opts } = await apply(`Include ${abs}\nInclude ~/.ssh/tilde.conf\n`, "box");
    assert.equal(opts.port, 3030);
    writeFileSync(join(home, ".ssh", "tilde.conf"), "User tilde\n");
    const again = await apply(`Include ~/.ssh/tilde.conf\n`, "box");
    assert.equal(again.opts.user, "tilde");
  });

  test("an Include loop is a CONFIG error, not a hang", async () => {
    const loop = conf("Include loop.conf\n", "loop.conf");
    await assert.rejects(
      apply(`Include ${loop}\n`, "box"),
      (e: unknown) => e instanceof RevtunError && e.code === "CONFIG" && /Include nested/.test(e.message),
    );
  });
});

describe("tokens", () => {
  test("HostName %h, and paths with ~ %d %u %h %r %p %n %%, as ssh -G expands them", async () => {
    const text = `
      Host box
        HostName %h.example.net
        User bob
        Port 2200
        IdentityFile ~/.ssh/id_%h_%r_%p
        IdentityFile %d/keys/%u/%n%%
        UserKnownHostsFile ~/kh/%h-%p %d/kh2
        IdentityAgent ~/agent.%r
        CertificateFile ~/.ssh/id_%h-cert.pub
        CertificateFile %d/certs/%r@%h
      `;
    const { opts } = await apply(text, "box");
    assert.equal(opts.hostName, "box.example.net");
    assert.deepEqual(opts.identityFile, [
      join(home, ".ssh", "id_box.example.net_bob_2200"),
      `${home}/keys/alice/box%`,
    ]);
    assert.deepEqual(opts.userKnownHostsFile, [join(home, "kh", "box.example.net-2200"), `${home}/kh2`]);
    assert.equal(opts.identityAgent, join(home, "agent.bob"));
    assert.deepEqual(opts.certificateFile, [
      join(home, ".ssh", "id_box.example.net-cert.pub"),
      `${home}/certs/bob@box.example.net`,
    ]);
    const g = sshG(join(home, ".ssh", `config-${n}`), "box");
    // ssh takes ~ from the password database, not $HOME, so only the host name is compared.
    assert.deepEqual(g.hostname, ["box.example.net"]);
  });

  test("%r and %p see the command line's user and port; %l is the local host name", async () => {
    const { opts } = await apply("Host box\n  IdentityFile /k/%r@%l:%p\n  User config-user\n", "box", {
      user: "cli-user",
      port: 2,
    });
    assert.deepEqual(opts.identityFile, [`/k/cli-user@${hostname()}:2`]);
  });

  test("an unknown token is a CONFIG error naming it", async () => {
    await assert.rejects(
      apply("Host box\n  IdentityFile /k/%z\n", "box"),
      (e: unknown) => e instanceof RevtunError && e.code === "CONFIG" && e.message.includes("%z"),
    );
  });

  test("UserKnownHostsFile none means no file; IdentityAgent none stays for the resolver", async () => {
    const { opts } = await apply("Host box\n  UserKnownHostsFile none\n  IdentityAgent none\n", "box");
    assert.deepEqual(opts.userKnownHostsFile, []);
    assert.equal(opts.identityAgent, "none");
  });
});

describe("Match", () => {
  test("all, host (after HostName), originalhost, user, localuser and negation", async () => {
    const { opts } = await apply(
      `
      Host box
        HostName real.example.net
      Match host real.example.net !user root
        Port 1001
      Match originalhost box localuser alice
        User matched
      Match !originalhost box
        ServerAliveInterval 99
      Match all
        ConnectTimeout 9
      `,
      "box",
    );
    assert.equal(opts.port, 1001);
    assert.equal(opts.user, "matched");
    assert.equal(opts.serverAliveInterval, undefined);
    assert.equal(opts.connectTimeout, 9);
  });

  test("Match final blocks apply in a second pass, where Host matches HostName", async () => {
    const { opts } = await apply(
      `
      Host alias
        HostName REAL.example.net
      Host real.example.net
        User by-hostname
      Match final
        Port 3003
      `,
      "alias",
    );
    assert.equal(opts.port, 3003);
    assert.equal(opts.user, "by-hostname");
    assert.equal(opts.hostName, "real.example.net");
    const g = sshG(join(home, ".ssh", `config-${n}`), "alias");
    assert.deepEqual([g.port, g.user], [["3003"], ["by-hostname"]]);
  });

  test("Match exec is never run: the block is skipped with a note", async () => {
    const marker = join(home, "exec-ran");
    const { opts, applied } = await apply(`Match exec "touch ${marker}"\n  Port 7\n`, "box");
    assert.equal(opts.port, undefined);
    assert.match(applied.notes.join("\n"), /Match exec is not run/);
    assert.throws(() => execFileSync("test", ["-e", marker]));
  });
});

describe("files", () => {
  test("directives revtun has no use for are listed once, never fatal; accepted ones are not listed", async () => {
    const { applied } = await apply(
      `
      Host box
        ProxyCommand ssh -W %h:%p gateway
        LocalForward 8080 localhost:80
        LocalForward 8081 localhost:81
        ForwardAgent yes
      Host *
        proxycommand none
      Host other
        DynamicForward 1080
      `,
      "box",
    );
    assert.deepEqual(applied.ignored, ["ProxyCommand", "LocalForward"]);
  });

  test("-F none reads nothing, not even ~/.ssh/config", async () => {
    writeFileSync(join(home, ".ssh", "config"), "Port 5555\n");
    try {
      const opts: SshOptions = {};
      const applied = await applySshConfig(opts, { host: "box", file: "none", localUser: "alice", home });
      assert.deepEqual(opts, {});
      assert.deepEqual(applied.files, []);
      const dflt: SshOptions = {};
      await applySshConfig(dflt, { host: "box", localUser: "alice", home });
      assert.equal(dflt.port, 5555);
    } finally {
      rmSync(join(home, ".ssh", "config"));
    }
  });

  test("a missing ~/.ssh/config is no config", async () => {
    const opts: SshOptions = {};
    const applied = await applySshConfig(opts, { host: "box", localUser: "alice", home });
    assert.deepEqual(opts, {});
    assert.deepEqual(applied, { ignored: [], files: [], notes: [] });
  });

  test("a missing -F file is a CONFIG error naming the file", async () => {
    const missing = join(home, "no-such-config");
    await assert.rejects(
      applySshConfig({}, { host: "box", file: missing, localUser: "alice", home }),
      (e: unknown) => e instanceof RevtunError && e.code === "CONFIG" && e.message.includes(missing),
    );
  });

  test("an unterminated quote is a CONFIG error naming the file", async () => {
    await assert.rejects(
      apply('Host box\n  IdentityFile "/unterminated\n', "box"),
      (e: unknown) => e instanceof RevtunError && e.code === "CONFIG" && e.message.includes(`config-${n}`),
    );
  });
});
