/**
 * authorized_keys parsing and the relay's decisions, without sockets.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { addrMatchList, checkFromList, fromAllows } from "../../src/relay/address-match.js";
import { parseAuthorizedKeys, parseExpiryTime, parseOptions } from "../../src/relay/authorized-keys.js";
import { targetsOverlap } from "../../src/relay/bindings.js";
import { certificateFields } from "../../src/relay/events.js";
import {
  authorizeCertificate,
  authorizeKey,
  type BindTarget,
  checkListen,
  checkOpen,
  resolveBindAddress,
} from "../../src/relay/policy.js";
import { boundRecord } from "../../src/shared/bounded-text.js";
import { type Certificate, parseCertificate } from "../../src/shared/certificates/index.js";
import { blobOf, lineOf, TestCa } from "../helpers/ca.js";
import { keygen } from "../helpers/sshd.js";

const dir = mkdtempSync(join(tmpdir(), "revtun-relay-unit-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const PUB = keygen(join(dir, "k"));
const OTHER = keygen(join(dir, "o"));

function one(line: string) {
  const r = parseAuthorizedKeys(line);
  assert.deepEqual(r.problems, []);
  const k = r.keys[0];
  assert.ok(k);
  return k;
}

function target(addr: string): BindTarget {
  const t = resolveBindAddress(addr);
  assert.ok(typeof t !== "string", String(t));
  return t;
}

describe("authorized_keys parsing", () => {
  test("quoted values keep their commas; several permitlisten; comment kept", () => {
    const k = one(
      `from="10.0.0.0/8,127.0.0.1",permitlisten="8080",permitlisten="localhost:0" ${PUB.split(" ").slice(0, 2).join(" ")} my laptop`,
    );
    assert.equal(k.options.from, "10.0.0.0/8,127.0.0.1");
    assert.deepEqual(
      k.options.permitListen.map((p) => [p.host, p.port]),
      [
        [undefined, 8080],
        ["localhost", 0],
      ],
    );
    assert.equal(k.comment, "my laptop");
    assert.ok(k.fingerprint.startsWith("SHA256:"));
  });

  test("escaped quotes, option names case-insensitive, sshd-only options recorded, unknown ones refuse the line", () => {
    assert.deepEqual(parseOptions('command="echo \\"a,b\\"",No-Pty'), [
      ["command", 'echo "a,b"'],
      ["no-pty", undefined],
    ]);
    const k = one(`command="x y",No-Pty,PERMITLISTEN="[::1]:*" ${PUB}`);
    assert.deepEqual(k.options.ignored, ["command", "no-pty"]);
    assert.deepEqual(k.options.permitListen, [{ host: "::1", port: "any", text: "[::1]:*" }]);
    const r = parseAuthorizedKeys(`command="x y",frobnicate ${PUB}`);
    assert.equal(r.keys.length, 0);
    assert.deepEqual(r.problems, [
      { line: 1, message: 'unknown option "frobnicate" (sshd refuses such a line too)' },
    ]);
  });

  test("restrict and port-forwarding apply in order", () => {
    assert.equal(one(`restrict ${PUB}`).options.portForwarding, false);
    assert.equal(one(`restrict,port-forwarding ${PUB}`).options.portForwarding, true);
    assert.equal(one(`port-forwarding,restrict ${PUB}`).options.portForwarding, false);
    assert.equal(one(`no-port-forwarding ${PUB}`).options.portForwarding, false);
  });

  test("broken lines are reported and skipped, good ones kept", () => {
    const r = parseAuthorizedKeys(
      [
        "# comment",
        "",
        `from="10.0.0.1 ${PUB}`,
        `permitlisten="a:b:c" ${PUB}`,
        `from="10.0.0.1/8" ${PUB}`,
        `principals="a" ${PUB}`,
        `ssh-rsa ${PUB.split(" ")[1]}`,
        "ssh-ed25519 AAAAnotakey",
        `expiry-time="20241341" ${PUB}`,
        OTHER,
      ].join("\n"),
    );
    assert.deepEqual(
      r.problems.map((p) => p.line),
      [3, 4, 5, 6, 7, 8, 9],
    );
    assert.equal(r.keys.length, 1);
    assert.equal(r.keys[0]?.line, 10);
  });

  test("expiry-time: local time, or UTC with Z", () => {
    assert.deepEqual(parseExpiryTime("20300102"), new Date(2030, 0, 2));
    assert.deepEqual(parseExpiryTime("203001020304Z"), new Date(Date.UTC(2030, 0, 2, 3, 4)));
    assert.deepEqual(parseExpiryTime("20300102030405"), new Date(2030, 0, 2, 3, 4, 5));
    assert.equal(typeof parseExpiryTime("2030010"), "string");
    assert.equal(typeof parseExpiryTime("20300230"), "string");
  });
});

describe("from= patterns", () => {
  test("CIDR, wildcards, negation, IPv6 and IPv4-mapped peers", () => {
    assert.equal(fromAllows("10.0.0.0/8,127.0.0.1", "127.0.0.1"), true);
    assert.equal(fromAllows("10.0.0.0/8,127.0.0.1", "10.200.3.4"), true);
    assert.equal(fromAllows("10.0.0.0/8,127.0.0.1", "11.0.0.1"), false);
    assert.equal(fromAllows("10.0.0.0/8", "::ffff:10.1.1.1"), true);
    assert.equal(fromAllows("192.168.1.*", "192.168.1.77"), true);
    assert.equal(fromAllows("192.168.1.?", "192.168.1.77"), false);
    assert.equal(fromAllows("!10.0.0.5,10.0.0.0/8", "10.0.0.5"), false);
    assert.equal(fromAllows("!10.0.0.5,10.0.0.0/8", "10.0.0.6"), true);
    assert.equal(fromAllows("2001:db8::/32", "2001:db8:1::5"), true);
    assert.equal(fromAllows("2001:db8::/32", "2001:db9::5"), false);
    assert.equal(fromAllows("::1", "::1"), true);
    assert.equal(fromAllows("*.example.com", "10.0.0.1"), false, "no reverse DNS");
    assert.equal(fromAllows("!10.0.0.5", "10.0.0.6"), false, "only negative entries admit nobody");
  });

  test("addr_match_list verdicts: malformed networks, prefix edges, families kept apart", () => {
    // Host bits beyond the mask make the whole list malformed (-2), as addrmatch.c does.
    assert.equal(addrMatchList("10.0.0.1", "10.0.0.1/8"), -2);
    assert.equal(addrMatchList("10.0.0.1", "10.0.0.0/33"), -2);
    assert.equal(addrMatchList("10.0.0.1", "10.0.0.0/x"), -2);
    assert.equal(addrMatchList("10.0.0.1", "10.0.0.0/8,"), -2, "an empty entry");
    assert.equal(addrMatchList("2001:db8::1", "2001:db8::1/32"), -2);
    assert.equal(fromAllows("10.0.0.1/8", "10.0.0.1"), false);
    assert.match(checkFromList("10.0.0.0/8,10.0.0.1/8") ?? "", /bad network "10\.0\.0\.1\/8"/);
    assert.equal(checkFromList("10.0.0.0/8,!::1,fe80::/10,*.lan"), undefined);
    // Prefix edges.
    assert.equal(addrMatchList("1.2.3.4", "0.0.0.0/0"), 1);
    assert.equal(addrMatchList("10.255.255.255", "10.0.0.0/8"), 1);
    assert.equal(addrMatchList("11.0.0.0", "10.0.0.0/8"), 0);
    assert.equal(addrMatchList("10.0.0.5", "10.0.0.5/32"), 1);
    assert.equal(addrMatchList("10.0.0.4", "10.0.0.5/32"), 0);
    assert.equal(addrMatchList("10.0.0.5", "!10.0.0.0/30,10.0.0.0/8"), 1);
    assert.equal(addrMatchList("10.0.0.2", "!10.0.0.0/30,10.0.0.0/8"), -1);
    assert.equal(addrMatchList("2001:db8:ffff::", "2001:db8::/32"), 1);
    assert.equal(addrMatchList("fe80::1%eth0", "fe80::/10"), 1, "a zone id does not hide the address");
    // An IPv4 network never matches an IPv6 address, mapped or not, nor the
    // reverse: only fromAllows() unmaps a peer address first.
    assert.equal(addrMatchList("::ffff:10.1.1.1", "10.0.0.0/8"), 0);
    assert.equal(addrMatchList("10.1.1.1", "::ffff:10.0.0.0/104"), 0);
    assert.equal(addrMatchList("::", "0.0.0.0/0"), 0);
  });
});

describe("key decisions", () => {
  test("from= and expiry-time refuse; a later line for the same key may admit", () => {
    const now = new Date(2030, 5, 1);
    const blob = one(PUB).blob;
    const keys = (text: string) => parseAuthorizedKeys(text).keys;
    assert.equal(authorizeKey(keys(OTHER), blob, "127.0.0.1", now).ok, false);
    assert.deepEqual(authorizeKey(keys(`from="10.0.0.0/8" ${PUB}`), blob, "127.0.0.1", now), {
      ok: false,
      reason: "from-not-allowed",
    });
    assert.deepEqual(authorizeKey(keys(`expiry-time="20300101" ${PUB}`), blob, "127.0.0.1", now), {
      ok: false,
      reason: "expired",
    });
    assert.equal(authorizeKey(keys(`expiry-time="20310101" ${PUB}`), blob, "127.0.0.1", now).ok, true);
    const d = authorizeKey(keys(`from="10.0.0.0/8" ${PUB}\nrestrict ${PUB}`), blob, "127.0.0.1", now);
    assert.ok(d.ok && d.key.line === 2);
  });
});

describe("listen permissions", () => {
  const open = one(PUB).options;
  test("no permitlisten: unprivileged ports or 0, loopback only unless gateway ports", () => {
    assert.equal(checkListen(open, target("localhost"), 0, false), undefined);
    assert.equal(checkListen(open, target("127.0.0.1"), 8080, false), undefined);
    assert.equal(checkListen(open, target("::1"), 8080, false), undefined);
    assert.match(checkListen(open, target("localhost"), 80, false) ?? "", /privileged/);
    assert.match(checkListen(open, target(""), 8080, false) ?? "", /not loopback/);
    assert.match(checkListen(open, target("0.0.0.0"), 8080, false) ?? "", /not loopback/);
    assert.equal(checkListen(open, target(""), 8080, true), undefined);
  });

  test("permitlisten: port exact or *, host as an ssh pattern on the client's string", () => {
    const o = one(
      `permitlisten="localhost:8080",permitlisten="0.0.0.0:*",permitlisten="9000" ${PUB}`,
    ).options;
    assert.equal(checkListen(o, target("localhost"), 8080, false), undefined);
    assert.match(
      checkListen(o, target("127.0.0.1"), 8080, false) ?? "",
      /permitlisten/,
      "localhost is not 127.0.0.1",
    );
    assert.equal(
      checkListen(o, target("0.0.0.0"), 443, false),
      undefined,
      "explicit host grants that address",
    );
    assert.equal(checkListen(o, target("localhost"), 9000, false), undefined);
    assert.match(checkListen(o, target(""), 9000, false) ?? "", /permitlisten/, "a bare port keeps loopback");
    assert.equal(checkListen(o, target(""), 9000, true), undefined);
    assert.match(checkListen(o, target("localhost"), 0, false) ?? "", /permitlisten/, "0 must be listed");
    const star = one(`permitlisten="*:*" ${PUB}`).options;
    assert.equal(checkListen(star, target(""), 22, false), undefined);
    const off = one(`restrict,permitlisten="8080" ${PUB}`).options;
    assert.match(checkListen(off, target("localhost"), 8080, false) ?? "", /disabled/);
  });

  test("bind addresses: localhost is both loopbacks, empty and * are everything, other strings are names", () => {
    assert.deepEqual(
      target("localhost").hosts.map((h) => h.host),
      ["127.0.0.1", "::1"],
    );
    assert.equal(target("*").scope, "any");
    assert.equal(target("").requested, "");
    assert.equal(target("10.1.2.3").scope, "specific");
    const n = resolveBindAddress("Device42.Fleet", 22);
    assert.ok(typeof n !== "string");
    assert.equal(n.scope, "name");
    assert.equal(n.name, "device42.fleet");
    assert.deepEqual(n.hosts, []);
    assert.match(String(resolveBindAddress("device42", 0)), /a tunnel name needs a fixed port/);
    assert.match(String(resolveBindAddress("bad_name", 22)), /bad tunnel name "bad_name": .*DNS labels/);
  });

  test("names: only a permitlisten naming them grants them; permitopen grants reaching them", () => {
    const name = (n: string) => {
      const t = resolveBindAddress(n, 22);
      assert.ok(typeof t !== "string", String(t));
      return t;
    };
    const key = (opts: string) => one(`${opts} ${PUB.split(" ").slice(0, 2).join(" ")}`).options;
    assert.equal(checkListen(key('permitlisten="device42:22"'), name("Device42"), 22, false), undefined);
    assert.equal(checkListen(key('permitlisten="device*:22"'), name("device7"), 22, false), undefined);
    assert.equal(checkListen(key('permitlisten="device*:*"'), name("device7"), 22, false), undefined);
    assert.match(
      String(checkListen(key('permitlisten="device42:22"'), name("device43"), 22, true)),
      /tunnel name device43:22 not allowed by permitlisten \(device42:22\)/,
    );
    assert.match(String(checkListen(key('permitlisten="22"'), name("device42"), 22, true)), /not allowed/);
    assert.match(
      String(checkListen(key(""), name("device42"), 22, true)),
      /needs a permitlisten naming it \(permitlisten="device42:22"\)/,
    );
    assert.match(
      String(checkListen(key('restrict,permitlisten="device42:22"'), name("device42"), 22, false)),
      /port forwarding is disabled/,
    );
    const op = key('restrict,permitopen="*:22",permitopen="db?.fleet:5432"');
    assert.deepEqual(
      op.permitOpen.map((p) => [p.host, p.port]),
      [
        ["*", 22],
        ["db?.fleet", 5432],
      ],
    );
    assert.equal(checkOpen(op, "Device42", 22), true);
    assert.equal(checkOpen(op, "device42", 80), false);
    assert.equal(checkOpen(op, "db1.fleet", 5432), true);
    assert.equal(checkOpen(op, "127.0.0.1", 22), false, "addresses are never reachable");
    assert.equal(checkOpen(op, "localhost", 22), false);
    assert.equal(checkOpen(key(""), "device42", 22), false);
    assert.match(
      parseAuthorizedKeys(`permitopen="22" ${PUB}`).problems[0]?.message ?? "",
      /bad permitopen "22": needs host:port/,
    );
  });

  test("overlap: wildcards cover their family, specific addresses only themselves", () => {
    assert.equal(targetsOverlap(target("localhost"), target("127.0.0.1")), true);
    assert.equal(targetsOverlap(target("127.0.0.1"), target("::1")), false);
    assert.equal(targetsOverlap(target(""), target("::1")), true);
    assert.equal(targetsOverlap(target("0.0.0.0"), target("127.0.0.1")), true);
    assert.equal(targetsOverlap(target("0.0.0.0"), target("::1")), false);
    assert.equal(targetsOverlap(target("::1"), target("0:0:0:0:0:0:0:1")), true);
  });
});

describe("cert-authority lines", () => {
  const ca = new TestCa();
  after(() => ca.close());
  const caKey = ca.key("ed25519", "ca");
  const CA = lineOf(`${caKey}.pub`);
  const cert = (principals: string[], extra: Parameters<TestCa["sign"]>[2] = {}) =>
    parseCertificate(blobOf(ca.sign(caKey, ca.key("ed25519"), { id: "c", principals, ...extra })));
  const now = new Date();

  test("cert-authority and principals= parse; principals= needs cert-authority and a name", () => {
    const k = one(`cert-authority,principals="ops,admin",permitopen="*:22" ${CA}`);
    assert.equal(k.options.certAuthority, true);
    assert.deepEqual(k.options.principals, ["ops", "admin"]);
    const r = parseAuthorizedKeys(
      `principals="ops" ${CA}\ncert-authority,principals="" ${CA}\n${lineOf(ca.sign(caKey, ca.key("ed25519"), {}))}`,
    );
    assert.deepEqual(
      r.problems.map((p) => p.message),
      [
        "principals= applies to cert-authority lines only (add cert-authority, or drop principals=)",
        'option principals="" lists no principal',
        'a certificate ("ssh-ed25519-cert-v01@openssh.com") cannot be listed: list its CA\'s public key with cert-authority',
      ],
    );
  });

  test("a CA's own key never logs in as itself", () => {
    const keys = parseAuthorizedKeys(`cert-authority ${CA}`).keys;
    assert.deepEqual(authorizeKey(keys, blobOf(`${caKey}.pub`), "127.0.0.1", now), {
      ok: false,
      reason: "unknown-key",
    });
  });

  test("sshd's principal rules: the login name without principals=, the line's list with it, none listed = any", () => {
    const keys = parseAuthorizedKeys(`cert-authority ${CA}\ncert-authority,principals="ops" ${CA}`).keys;
    const dev = cert(["device42"]);
    assert.equal(authorizeCertificate(keys, dev, "127.0.0.1", "device42", now).ok, true);
    const asOps = authorizeCertificate(keys, cert(["ops"]), "127.0.0.1", "anyone", now);
    assert.ok(asOps.ok && asOps.key.line === 2, asOps.ok ? `line ${asOps.key.line}` : asOps.reason);
    const wildcard = authorizeCertificate(keys, cert([]), "127.0.0.1", "whoever", now);
    assert.ok(wildcard.ok, wildcard.ok ? "" : wildcard.reason);
    // ... but it binds no tunnel name: its names are its principals, and it has none.
    assert.match(
      checkListen(wildcard.key.options, target("device42"), 22, false) ?? "",
      /not a principal of this certificate \(none\)/,
    );
  });

  test("the line's from= and expiry-time apply to the certificates it admits", () => {
    const keys = parseAuthorizedKeys(
      `cert-authority,from="10.0.0.0/8" ${CA}\ncert-authority,expiry-time="20200101" ${CA}`,
    ).keys;
    const r = authorizeCertificate(keys, cert(["d"]), "127.0.0.1", "d", now);
    assert.deepEqual(r, { ok: false, reason: "the cert-authority line 2 expired (expiry-time)" });
    const only = authorizeCertificate(keys.slice(0, 1), cert(["d"]), "127.0.0.1", "d", now);
    assert.deepEqual(only, {
      ok: false,
      reason: '127.0.0.1 is not allowed by from="10.0.0.0/8" of the cert-authority line 1',
    });
  });
});

describe("certificate fields in records", () => {
  test("a certificate's principals are listed at most 16, each bounded like a user name", () => {
    const cert = {
      keyId: "k".repeat(300),
      serial: 1n,
      principals: Array.from({ length: 40 }, (_, i) => `p${i}-${"x".repeat(100)}`),
      signatureKey: Buffer.from("ca"),
    } as unknown as Certificate;
    const f = boundRecord(certificateFields(cert));
    assert.equal(f.certPrincipals?.length, 17);
    assert.equal(f.certPrincipals?.[16], "…(24 more)");
    assert.match(f.certPrincipals?.[0] ?? "", /^p0-x{61}…\(103 chars\)$/);
    assert.match(f.certKeyId ?? "", /^k{64}…\(300 chars\)$/);
  });
});
