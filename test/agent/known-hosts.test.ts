import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  checkHostKey,
  type HostKeyCheck,
  knownKeyAlgorithms,
  parseKnownHosts,
  type StrictHostKeyChecking,
  trustsHostCertificates,
} from "../../src/agent/known-hosts.js";
import { RevtunError } from "../../src/shared/errors.js";
import { fingerprintSha256, parsePublicKey } from "../../src/shared/keys.js";
import { SshCa } from "../helpers/ssh-ca.js";
import { keygen } from "../helpers/sshd.js";

interface TestKey {
  /** Path of the .pub file, for ssh-keygen -lf. */
  pubFile: string;
  /** "type base64", as a known_hosts line wants it. */
  line: string;
  type: string;
  blob: Buffer;
  fp: string;
}

let dir = "";
let n = 0;
let keys: Record<"ed" | "ed2" | "ecdsa" | "rsa", TestKey>;

function makeKey(name: string, type: string): TestKey {
  const file = join(dir, name);
  const pub = keygen(file, type);
  const parsed = parsePublicKey(pub);
  assert.ok(parsed, `ssh2 cannot parse ${pub}`);
  const [t, b64] = pub.split(" ");
  return {
    pubFile: `${file}.pub`,
    line: `${t} ${b64}`,
    type: parsed.type,
    blob: parsed.blob,
    fp: fingerprintSha256(parsed.blob),
  };
}

/** A fresh known_hosts path in the temp dir, written with `lines` when given. */
function knownHosts(lines?: string[]): string {
  const file = join(dir, `known_hosts_${++n}`);
  if (lines) writeFileSync(file, lines.map((l) => `${l}\n`).join(""));
  return file;
}

function check(over: Partial<HostKeyCheck> & { files: string[] }): HostKeyCheck {
  return { host: "127.0.0.1", port: 2222, policy: "yes", ...over };
}

/** Asserts the promise rejects with a RevtunError of `code` and returns its message. */
async function refusal(p: Promise<unknown>, code: string): Promise<string> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof RevtunError, `expected RevtunError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.ok(!err.message.includes("\n"), "messages are one line");
    return err.message;
  }
  assert.fail(`expected ${code}, but the check passed`);
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), "revtun-known-hosts-"));
  keys = {
    ed: makeKey("ed", "ed25519"),
    ed2: makeKey("ed2", "ed25519"),
    ecdsa: makeKey("ecdsa", "ecdsa"),
    rsa: makeKey("rsa", "rsa"),
  };
});

after(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe("parseKnownHosts", () => {
  test("reads markers, hashed names, comments and line numbers, skipping malformed lines", () => {
    const { ed, rsa } = keys;
    const b64 = ed.line.split(" ")[1];
    const text = [
      "# comment",
      "",
      `relay.example.net,10.0.0.1 ${ed.line} my comment here`, // 3
      `   [127.0.0.1]:2222\t${rsa.line}\r`, // 4: indented, tab, CRLF
      `@revoked * ${ed.line}`, // 5
      `@cert-authority *.example.net ${rsa.line}`, // 6
      `@revoke * ${ed.line}`, // unknown marker
      `@revoked @cert-authority * ${ed.line}`, // two markers
      "relay.example.net ssh-ed25519", // no key
      "relay.example.net ssh-ed25519 not*base64", // bad base64
      `relay.example.net ssh-rsa ${b64}`, // declared type disagrees with the blob
      `|1|c2hvcnQ=|c2hvcnQ= ${ed.line}`, // hashed with a 5-byte salt
      `|2|${"A".repeat(28)}|${"A".repeat(28)} ${ed.line}`, // unknown hash magic
      "2048 35 1234567890", // SSH1 RSA
      `|1|${"A".repeat(27)}=|${"B".repeat(27)}= ${ed.line}`, // 15
      "",
    ].join("\n");
    const entries = parseKnownHosts(text);
    assert.deepEqual(
      entries.map((e) => [e.line, e.marker, e.hosts, e.keyType, e.comment]),
      [
        [3, undefined, "relay.example.net,10.0.0.1", "ssh-ed25519", "my comment here"],
        [4, undefined, "[127.0.0.1]:2222", "ssh-rsa", ""],
        [5, "revoked", "*", "ssh-ed25519", ""],
        [6, "cert-authority", "*.example.net", "ssh-rsa", ""],
        [15, undefined, `|1|${"A".repeat(27)}=|${"B".repeat(27)}=`, "ssh-ed25519", ""],
      ],
    );
    assert.ok(entries[0]?.key.equals(ed.blob));
    assert.equal(entries[4]?.hashed?.salt.length, 20);
  });
});

describe("checkHostKey: matching", () => {
  test("a plain entry for [host]:port is known, with its file and line", async () => {
    const file = knownHosts(["# mine", `[127.0.0.1]:2222 ${keys.ed.line}`]);
    assert.deepEqual(await checkHostKey(check({ files: [file] }), keys.ed.blob), {
      status: "known",
      file,
      line: 2,
    });
  });

  test("port 22 uses the bare host form, and host names compare case-insensitively", async () => {
    const file = knownHosts([
      `[relay.example.net]:2222 ${keys.ed2.line}`,
      `Relay.Example.NET ${keys.ed.line}`,
    ]);
    const c = check({ host: "RELAY.example.net", port: 22, files: [file] });
    assert.deepEqual(await checkHostKey(c, keys.ed.blob), { status: "known", file, line: 2 });
    // The [host]:2222 line is for another port, so it is not a mismatch on port 22.
    const other = knownHosts([`[relay.example.net]:2222 ${keys.ed2.line}`]);
    await refusal(checkHostKey({ ...c, files: [other] }, keys.ed.blob), "HOSTKEY_UNKNOWN");
  });

  test("a [host]:port entry does not match another port", async () => {
    const file = knownHosts([`[127.0.0.1]:2222 ${keys.ed.line}`]);
    await refusal(checkHostKey(check({ port: 2223, files: [file] }), keys.ed.blob), "HOSTKEY_UNKNOWN");
  });

  test("on another port, a bare-host entry with the same key is accepted but a different one is not a mismatch (as ssh)", async () => {
    const file = knownHosts([`127.0.0.1 ${keys.ed.line}`]);
    assert.deepEqual(await checkHostKey(check({ files: [file] }), keys.ed.blob), {
      status: "known",
      file,
      line: 1,
    });
    const msg = await refusal(checkHostKey(check({ files: [file] }), keys.ed2.blob), "HOSTKEY_UNKNOWN");
    assert.match(msg, /^host key for \[127\.0\.0\.1\]:2222 is not known/);
  });

  test("IPv6 hosts use [addr]:port, and the bare address on port 22", async () => {
    const file = knownHosts([`[::1]:2222 ${keys.ed.line}`, `::1 ${keys.ecdsa.line}`]);
    assert.deepEqual(await checkHostKey(check({ host: "::1", files: [file] }), keys.ed.blob), {
      status: "known",
      file,
      line: 1,
    });
    assert.deepEqual(await checkHostKey(check({ host: "::1", port: 22, files: [file] }), keys.ecdsa.blob), {
      status: "known",
      file,
      line: 2,
    });
  });

  test("wildcards match, and a negated pattern excludes the line even when another pattern matches", async () => {
    const file = knownHosts([
      `*.example.net,!evil.example.net ${keys.ed.line}`,
      `relay?.example.org ${keys.ed.line}`,
      `[10.0.0.*]:2222 ${keys.ed.line}`,
    ]);
    const at = (host: string, port = 22) => checkHostKey(check({ host, port, files: [file] }), keys.ed.blob);
    assert.deepEqual(await at("relay.example.net"), { status: "known", file, line: 1 });
    assert.deepEqual(await at("relay7.example.org"), { status: "known", file, line: 2 });
    assert.deepEqual(await at("10.0.0.9", 2222), { status: "known", file, line: 3 });
    await refusal(at("evil.example.net"), "HOSTKEY_UNKNOWN");
    await refusal(at("relay77.example.org"), "HOSTKEY_UNKNOWN");
    await refusal(at("example.net"), "HOSTKEY_UNKNOWN");
    await refusal(at("10.0.0.9"), "HOSTKEY_UNKNOWN");
  });

  test("a hashed entry written by ssh-keygen -H matches", async () => {
    const file = knownHosts([`relay.example.net ${keys.rsa.line}`, `[127.0.0.1]:2222 ${keys.ed.line}`]);
    execFileSync("ssh-keygen", ["-q", "-H", "-f", file], { stdio: "ignore" });
    const text = readFileSync(file, "utf8");
    assert.ok(!text.includes("127.0.0.1"), text);
    assert.match(text, /^\|1\|[^ ]+ ssh-rsa /m);
    assert.deepEqual(await checkHostKey(check({ files: [file] }), keys.ed.blob), {
      status: "known",
      file,
      line: 2,
    });
    const at22 = check({ host: "relay.example.net", port: 22, files: [file] });
    assert.deepEqual(await checkHostKey(at22, keys.rsa.blob), { status: "known", file, line: 1 });
    await refusal(checkHostKey(check({ port: 2223, files: [file] }), keys.ed.blob), "HOSTKEY_UNKNOWN");
  });

  test("several key types for one host: each is known at its own line", async () => {
    const file = knownHosts([
      `[127.0.0.1]:2222 ${keys.ed.line}`,
      `[127.0.0.1]:2222 ${keys.ecdsa.line}`,
      `[127.0.0.1]:2222 ${keys.rsa.line}`,
    ]);
    for (const [key, line] of [
      [keys.ed, 1],
      [keys.ecdsa, 2],
      [keys.rsa, 3],
    ] as const) {
      assert.deepEqual(await checkHostKey(check({ files: [file] }), key.blob), {
        status: "known",
        file,
        line,
      });
    }
  });

  test("every file is read; missing files count as empty", async () => {
    const missing = join(dir, "nope", "known_hosts");
    const first = knownHosts([`[127.0.0.1]:2222 ${keys.ecdsa.line}`]);
    const second = knownHosts([`[127.0.0.1]:2222 ${keys.ed.line}`]);
    const c = check({ files: [missing, first, second] });
    assert.deepEqual(await checkHostKey(c, keys.ed.blob), { status: "known", file: second, line: 1 });
    assert.deepEqual(await checkHostKey(c, keys.ecdsa.blob), { status: "known", file: first, line: 1 });
    await refusal(checkHostKey(check({ files: [missing] }), keys.ed.blob), "HOSTKEY_UNKNOWN");
  });

  test("malformed lines are skipped, never fatal", async () => {
    const file = knownHosts([
      "garbage",
      "[127.0.0.1]:2222 ssh-ed25519",
      "[127.0.0.1]:2222 ssh-ed25519 !!!!",
      `@bogus [127.0.0.1]:2222 ${keys.ed2.line}`,
      `[127.0.0.1]:2222 ssh-rsa ${keys.ed2.line.split(" ")[1]}`,
      `[127.0.0.1]:2222 ${keys.ed.line}`,
    ]);
    assert.deepEqual(await checkHostKey(check({ files: [file] }), keys.ed.blob), {
      status: "known",
      file,
      line: 6,
    });
  });

  test("a known_hosts path that cannot be read (not missing) is a CONFIG error", async () => {
    const msg = await refusal(checkHostKey(check({ files: [dir] }), keys.ed.blob), "CONFIG");
    assert.match(msg, new RegExp(`^cannot read known_hosts file ${dir}: .*EISDIR`));
  });
});

describe("checkHostKey: refusals", () => {
  test("a different key of the same type is HOSTKEY_MISMATCH under every policy, naming file and line", async () => {
    const lines = [
      "# 1",
      "# 2",
      "# 3",
      "# 4",
      "# 5",
      `[127.0.0.1]:2222 ${keys.rsa.line}`,
      `[127.0.0.1]:2222 ${keys.ed.line}`,
    ];
    for (const policy of ["yes", "accept-new", "no", "ask"] as StrictHostKeyChecking[]) {
      const file = knownHosts(lines);
      const before = readFileSync(file, "utf8");
      const confirm = async () => assert.fail("ask must not be asked about a changed key");
      const msg = await refusal(
        checkHostKey(check({ files: [file], policy, confirm }), keys.ed2.blob),
        "HOSTKEY_MISMATCH",
      );
      assert.equal(
        msg,
        `host key for [127.0.0.1]:2222 has CHANGED: the server offers ssh-ed25519 ${keys.ed2.fp}, ${file}:7 has ${keys.ed.fp}; this may be a man-in-the-middle attack. If you trust the new key, remove line 7 of ${file} (ssh-keygen -f ${file} -R "[127.0.0.1]:2222")`,
      );
      assert.equal(readFileSync(file, "utf8"), before, `${policy} must not touch the file`);
    }
  });

  test("only keys of other types known: refused as a changed key (as ssh), never recorded", async () => {
    for (const policy of ["yes", "accept-new", "no", "ask"] as StrictHostKeyChecking[]) {
      const file = knownHosts([`[127.0.0.1]:2222 ${keys.rsa.line}`, `[127.0.0.1]:2222 ${keys.ecdsa.line}`]);
      const before = readFileSync(file, "utf8");
      const msg = await refusal(
        checkHostKey(check({ files: [file], policy, confirm: async () => true }), keys.ed.blob),
        "HOSTKEY_MISMATCH",
      );
      assert.equal(
        msg,
        `host key for [127.0.0.1]:2222 has CHANGED: the server offers ssh-ed25519 ${keys.ed.fp}, but only keys of other types are known for it (ssh-rsa at ${file}:1, ecdsa-sha2-nistp256 at ${file}:2); this may be a man-in-the-middle attack. If the server really replaced its keys and you trust the new one, remove the old entries (ssh-keygen -f ${file} -R "[127.0.0.1]:2222")`,
      );
      assert.equal(readFileSync(file, "utf8"), before, `${policy} must not touch the file`);
    }
  });

  test("@revoked refuses the key under every policy, even when it is also listed as known", async () => {
    const file = knownHosts([`[127.0.0.1]:2222 ${keys.ed.line}`, `@revoked * ${keys.ed.line}`]);
    for (const policy of ["yes", "accept-new", "no", "ask"] as StrictHostKeyChecking[]) {
      const msg = await refusal(
        checkHostKey(check({ files: [file], policy }), keys.ed.blob),
        "HOSTKEY_REVOKED",
      );
      assert.equal(
        msg,
        `host key for [127.0.0.1]:2222 (ssh-ed25519 ${keys.ed.fp}) is marked @revoked in ${file}:2; refusing to connect`,
      );
    }
  });

  test("@revoked applies whichever host the line names", async () => {
    const other = knownHosts([`@revoked old.example.net ${keys.ed.line}`]);
    const mine = knownHosts([`[127.0.0.1]:2222 ${keys.ed.line}`]);
    await refusal(
      checkHostKey(check({ files: [mine, other], policy: "no" }), keys.ed.blob),
      "HOSTKEY_REVOKED",
    );
  });

  test("@cert-authority lines neither make a key known nor make another key a mismatch", async () => {
    const file = knownHosts([
      `@cert-authority * ${keys.ed.line}`,
      `@cert-authority [127.0.0.1]:2222 ${keys.ed2.line}`,
    ]);
    const msg = await refusal(checkHostKey(check({ files: [file] }), keys.ed.blob), "HOSTKEY_UNKNOWN");
    assert.match(msg, /is not known/);
    assert.deepEqual(await knownKeyAlgorithms("127.0.0.1", 2222, [file]), []);
  });

  test('"yes" refuses an unknown host with the fingerprint ssh-keygen -lf prints', async () => {
    const file = knownHosts([]);
    const msg = await refusal(checkHostKey(check({ files: [file] }), keys.ed.blob), "HOSTKEY_UNKNOWN");
    const sshFp = execFileSync("ssh-keygen", ["-l", "-f", keys.ed.pubFile], { encoding: "utf8" }).split(
      " ",
    )[1];
    assert.equal(sshFp, keys.ed.fp);
    assert.equal(
      msg,
      `host key for [127.0.0.1]:2222 is not known (ssh-ed25519 ${sshFp}); to trust it, add it to ${file} (ssh-keyscan -p 2222 127.0.0.1 >> ${file}) or connect once with -o StrictHostKeyChecking=accept-new`,
    );
    assert.equal(readFileSync(file, "utf8"), "");
  });

  test("paths under $HOME are shown with ~, and port 22 needs no -p", async (t) => {
    const home = join(dir, "home");
    const saved = process.env.HOME;
    process.env.HOME = home;
    t.after(() => {
      if (saved === undefined) delete process.env.HOME;
      else process.env.HOME = saved;
    });
    const file = join(home, ".ssh", "known_hosts");
    const c = check({ host: "relay.example.net", port: 22, files: [file] });
    const msg = await refusal(checkHostKey(c, keys.ed.blob), "HOSTKEY_UNKNOWN");
    assert.equal(
      msg,
      `host key for relay.example.net is not known (ssh-ed25519 ${keys.ed.fp}); to trust it, add it to ~/.ssh/known_hosts (ssh-keyscan relay.example.net >> ~/.ssh/known_hosts) or connect once with -o StrictHostKeyChecking=accept-new`,
    );
    mkdirSync(join(home, ".ssh"), { recursive: true });
    writeFileSync(file, `relay.example.net ${keys.ed2.line}\n`);
    const changed = await refusal(checkHostKey(c, keys.ed.blob), "HOSTKEY_MISMATCH");
    assert.match(changed, / ~\/\.ssh\/known_hosts:1 has /);
    // The default file is ssh-keygen -R's own default, so no -f.
    assert.match(changed, /remove line 1 of ~\/\.ssh\/known_hosts \(ssh-keygen -R "relay\.example\.net"\)$/);
  });

  test("a path the shell would split is quoted in the hints", async () => {
    const file = join(dir, "with space", "known_hosts");
    const msg = await refusal(checkHostKey(check({ files: [file] }), keys.ed.blob), "HOSTKEY_UNKNOWN");
    assert.match(msg, new RegExp(`>> '${dir}/with space/known_hosts'\\)`));
  });

  test('with no known_hosts file at all even "no" refuses, like ssh with UserKnownHostsFile=none', async () => {
    const msg = await refusal(
      checkHostKey(check({ files: [], policy: "no" }), keys.ed.blob),
      "HOSTKEY_UNKNOWN",
    );
    assert.equal(
      msg,
      `host key for [127.0.0.1]:2222 is not known (ssh-ed25519 ${keys.ed.fp}) and no known_hosts file is configured to check or record it; set UserKnownHostsFile to a file such as ~/.ssh/known_hosts`,
    );
  });
});

describe("checkHostKey: recording", () => {
  test("accept-new creates the directory (0700) and file (0600), and the next check says known", async () => {
    const file = join(dir, `new-${++n}`, "ssh", "known_hosts");
    const c = check({ files: [file], policy: "accept-new" });
    assert.deepEqual(await checkHostKey(c, keys.ed.blob), { status: "recorded", file });
    assert.equal(readFileSync(file, "utf8"), `[127.0.0.1]:2222 ${keys.ed.line}\n`);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(statSync(join(file, "..")).mode & 0o777, 0o700);
    assert.deepEqual(await checkHostKey(c, keys.ed.blob), { status: "known", file, line: 1 });
    // Once one key is known, ssh counts any other key as a change, even of another type.
    await refusal(checkHostKey(c, keys.ecdsa.blob), "HOSTKEY_MISMATCH");
  });

  test("accept-new appends to files[0] even when another file knows other hosts, adding a missing final newline", async () => {
    const first = knownHosts();
    writeFileSync(first, `other.example.net ${keys.rsa.line}`); // no final newline
    const second = knownHosts([`other.example.org ${keys.rsa.line}`]);
    const c = check({ host: "RELAY.example.net", port: 22, files: [first, second], policy: "accept-new" });
    assert.deepEqual(await checkHostKey(c, keys.ed.blob), { status: "recorded", file: first });
    assert.equal(
      readFileSync(first, "utf8"),
      `other.example.net ${keys.rsa.line}\nrelay.example.net ${keys.ed.line}\n`,
    );
    assert.deepEqual(await checkHostKey(c, keys.ed.blob), { status: "known", file: first, line: 2 });
  });

  test("an existing file keeps its mode", async () => {
    const file = knownHosts([]);
    execFileSync("chmod", ["644", file]);
    await checkHostKey(check({ files: [file], policy: "accept-new" }), keys.ed.blob);
    assert.equal(statSync(file).mode & 0o777, 0o644);
  });

  test("IPv6 addresses are recorded as [addr]:port", async () => {
    const file = knownHosts();
    await checkHostKey(check({ host: "::1", files: [file], policy: "accept-new" }), keys.ed.blob);
    await checkHostKey(
      check({ host: "::1", port: 22, files: [file], policy: "accept-new" }),
      keys.ecdsa.blob,
    );
    assert.equal(readFileSync(file, "utf8"), `[::1]:2222 ${keys.ed.line}\n::1 ${keys.ecdsa.line}\n`);
  });

  test('"no" records an unknown host too', async () => {
    const file = knownHosts();
    assert.deepEqual(await checkHostKey(check({ files: [file], policy: "no" }), keys.ed.blob), {
      status: "recorded",
      file,
    });
    assert.deepEqual(await checkHostKey(check({ files: [file], policy: "yes" }), keys.ed.blob), {
      status: "known",
      file,
      line: 1,
    });
  });

  test("hashKnownHosts writes |1|salt|hash entries that ssh-keygen -F finds", async () => {
    const file = knownHosts();
    const c = check({ files: [file], policy: "accept-new", hashKnownHosts: true });
    await checkHostKey(c, keys.ed.blob);
    await checkHostKey({ ...c, host: "Relay.Example.NET", port: 22 }, keys.rsa.blob);
    const text = readFileSync(file, "utf8");
    assert.match(
      text,
      /^\|1\|[A-Za-z0-9+/]{27}=\|[A-Za-z0-9+/]{27}= ssh-ed25519 [^ ]+\n\|1\|[^ ]+ ssh-rsa [^ ]+\n$/,
    );
    assert.ok(!text.includes("127.0.0.1") && !text.includes("relay"));
    for (const [name, type] of [
      ["[127.0.0.1]:2222", "ssh-ed25519"],
      ["relay.example.net", "ssh-rsa"],
    ]) {
      const found = spawnSync("ssh-keygen", ["-F", String(name), "-f", file], { encoding: "utf8" });
      assert.equal(found.status, 0, `ssh-keygen -F ${name} found nothing:\n${text}`);
      assert.match(found.stdout, new RegExp(`^\\|1\\|[^ ]+ ${type} `, "m"));
    }
    assert.deepEqual(await checkHostKey(c, keys.ed.blob), { status: "known", file, line: 1 });
  });

  test('"ask" without a confirm callback refuses, as ssh without a terminal', async () => {
    const file = knownHosts([]);
    const msg = await refusal(
      checkHostKey(check({ files: [file], policy: "ask" }), keys.ed.blob),
      "HOSTKEY_UNKNOWN",
    );
    assert.equal(
      msg,
      `host key for [127.0.0.1]:2222 is not known (ssh-ed25519 ${keys.ed.fp}) and StrictHostKeyChecking=ask has no terminal to confirm it; to trust it, add it to ${file} (ssh-keyscan -p 2222 127.0.0.1 >> ${file}) or connect once with -o StrictHostKeyChecking=accept-new`,
    );
  });

  test('"ask" passes the key to confirm; a no refuses, a yes records', async () => {
    const file = knownHosts([]);
    const asked: unknown[] = [];
    const c = (answer: boolean) =>
      check({
        files: [file],
        policy: "ask",
        confirm: async (info) => {
          asked.push(info);
          return answer;
        },
      });
    const msg = await refusal(checkHostKey(c(false), keys.ed.blob), "HOSTKEY_UNKNOWN");
    assert.match(
      msg,
      /^host key for \[127\.0\.0\.1\]:2222 is not known \(ssh-ed25519 [^)]+\) and was not confirmed; to trust it/,
    );
    assert.equal(readFileSync(file, "utf8"), "");
    assert.deepEqual(await checkHostKey(c(true), keys.ed.blob), { status: "recorded", file });
    assert.deepEqual(await checkHostKey(c(true), keys.ed.blob), { status: "known", file, line: 1 });
    const info = { host: "127.0.0.1", port: 2222, keyType: "ssh-ed25519", fingerprint: keys.ed.fp };
    assert.deepEqual(asked, [info, info]);
  });

  test("a key that cannot be written is still accepted (as ssh), with the reason", async () => {
    const notADir = knownHosts([]);
    const file = join(notADir, "known_hosts");
    const verdict = await checkHostKey(check({ files: [file], policy: "accept-new" }), keys.ed.blob);
    assert.equal(verdict.status, "accepted-unrecorded");
    assert.ok(verdict.status === "accepted-unrecorded");
    assert.match(
      verdict.reason ?? "",
      new RegExp(`^cannot record the host key for \\[127\\.0\\.0\\.1\\]:2222 in ${file}: `),
    );
  });
});

describe("knownKeyAlgorithms", () => {
  test("lists the known types for host:port in file order, RSA as its three algorithms", async () => {
    const file = knownHosts([
      `[127.0.0.1]:2223 ${keys.ecdsa.line}`,
      `[127.0.0.1]:2222 ${keys.ed.line}`,
      `@revoked [127.0.0.1]:2222 ${keys.rsa.line}`,
      `[127.0.0.1]:*,![127.0.0.1]:2222 ${keys.rsa.line}`,
      `[127.0.0.1]:2222 ${keys.ecdsa.line}`,
      `[127.0.0.1]:2222 ${keys.ed2.line}`,
    ]);
    execFileSync("ssh-keygen", ["-q", "-H", "-f", file], { stdio: "ignore" });
    const second = knownHosts([`* ${keys.rsa.line}`]);
    assert.deepEqual(await knownKeyAlgorithms("127.0.0.1", 2222, [join(dir, "missing"), file, second]), [
      "ssh-ed25519",
      "ecdsa-sha2-nistp256",
      "rsa-sha2-512",
      "rsa-sha2-256",
      "ssh-rsa",
    ]);
    assert.deepEqual(await knownKeyAlgorithms("127.0.0.1", 2222, [file]), [
      "ssh-ed25519",
      "ecdsa-sha2-nistp256",
    ]);
    assert.deepEqual(await knownKeyAlgorithms("127.0.0.1", 22, [file]), []);
    assert.deepEqual(await knownKeyAlgorithms("127.0.0.1", 22, []), []);
  });
});

describe("checkHostKey: host certificates (ssh-keygen -s)", () => {
  let ca: SshCa;
  let hostKey = "";
  /** A certificate of hostKey; returns its blob. */
  const cert = (o: { principals?: string[]; validity?: string; user?: boolean; id?: string }) => {
    const file = ca.sign(hostKey, {
      host: !o.user,
      principals: o.principals ?? ["relay.example.net"],
      ...(o.validity ? { validity: o.validity } : {}),
      id: o.id ?? "relay",
    });
    return SshCa.blob(file);
  };
  const relay = (over: Partial<HostKeyCheck> & { files: string[] }) =>
    check({ host: "relay.example.net", port: 2222, ...over });
  const caLine = (hosts = "[relay.example.net]:*") => ca.knownHostsLine(hosts).trim();

  before(() => {
    ca = new SshCa(dir, "kh_ca");
    hostKey = SshCa.newKey(dir, "kh_host");
  });

  test("trusted by a matching @cert-authority line: known at that line, naming the certificate", async () => {
    const files = [knownHosts(["other.example.net ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample", caLine()])];
    const v = await checkHostKey(relay({ files }), cert({ id: "relay-7" }));
    assert.deepEqual(v, { status: "known", file: files[0], line: 2, certificate: 'ID "relay-7" serial 0' });
  });

  test("a user certificate presented as a host key is refused, naming the type", async () => {
    const msg = await refusal(
      checkHostKey(relay({ files: [knownHosts([caLine()])] }), cert({ user: true })),
      "HOSTKEY_MISMATCH",
    );
    assert.match(msg, /is a user certificate; a host certificate is needed here/);
  });

  test("not yet valid, by the check's clock", async () => {
    const blob = cert({ validity: "+1d:+2d" });
    const msg = await refusal(
      checkHostKey(relay({ files: [knownHosts([caLine()])] }), blob),
      "HOSTKEY_MISMATCH",
    );
    assert.match(msg, /is not valid yet: valid from \S+/);
    const tomorrow = () => new Date(Date.now() + 36 * 3600_000);
    assert.equal(
      (await checkHostKey(relay({ files: [knownHosts([caLine()])], clock: tomorrow }), blob)).status,
      "known",
    );
  });

  test("a corrupted CA signature is refused even though the CA is trusted", async () => {
    const blob = Buffer.from(cert({}));
    blob[blob.length - 3] = (blob[blob.length - 3] ?? 0) ^ 0xff;
    const msg = await refusal(
      checkHostKey(relay({ files: [knownHosts([caLine()])] }), blob),
      "HOSTKEY_MISMATCH",
    );
    assert.match(msg, /CA signature that does not verify/);
  });

  test("@revoked naming the certified key refuses the certificate", async () => {
    const files = [knownHosts([caLine(), `@revoked * ${readFileSync(`${hostKey}.pub`, "utf8").trim()}`])];
    const msg = await refusal(checkHostKey(relay({ files }), cert({})), "HOSTKEY_REVOKED");
    assert.match(msg, /: its key is marked @revoked in .*:2; refusing to connect/);
  });

  test("the CA line must match the host: [host]:port patterns as for any line", async () => {
    const files = [
      knownHosts([
        caLine("[relay.example.net]:22"),
        "[relay.example.net]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnlyToHaveALine",
      ]),
    ];
    // Port 2222 has no CA line: as ssh, the certified key is checked as a plain key, and is not known.
    await refusal(checkHostKey(relay({ files }), cert({})), "HOSTKEY_MISMATCH");
  });

  test("no CA line for the host: the certified key known as a plain key is accepted, as ssh retries it", async () => {
    const plain = readFileSync(`${hostKey}.pub`, "utf8").trim().split(" ").slice(0, 2).join(" ");
    const files = [knownHosts([`[relay.example.net]:2222 ${plain}`])];
    const v = await checkHostKey(relay({ files }), cert({}));
    assert.deepEqual(v, { status: "known", file: files[0], line: 1 });
  });

  test("trustsHostCertificates: only where an @cert-authority line matches host:port", async () => {
    const files = [knownHosts([caLine("[*.example.net]:*")])];
    assert.equal(await trustsHostCertificates("relay.example.net", 2222, files), true);
    assert.equal(await trustsHostCertificates("relay.example.org", 2222, files), false);
  });
});
