/**
 * Fails when any of revtun's reaches into ssh2's internals (src/ssh2/) is not
 * live on the installed ssh2, so an ssh2 upgrade that breaks one fails CI
 * instead of quietly falling back to ssh2's own behaviour. Each assertion
 * names the hook. Real in-process ssh2 Client and Server on loopback.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net, { type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import ssh2, { type Connection, type ParsedKey } from "ssh2";
import { parseCertificate } from "../../src/shared/certificates/index.js";
import { keyTypeOf } from "../../src/shared/keys.js";
import { disableAutoDestroy, isSsh2Channel, serverEof } from "../../src/ssh2/channel.js";
import { OPEN_FAILURE, rejectChannelOpen } from "../../src/ssh2/channel-open-failure.js";
import { connectionHooks, staticHooks } from "../../src/ssh2/hooks.js";
import {
  acceptHostCertificates,
  certificateHostKeys,
  presentHostCertificate,
} from "../../src/ssh2/host-certificate.js";
import { poolPadding } from "../../src/ssh2/padding-pool.js";
import { keepaliveReset, remoteVersion, sendIgnore } from "../../src/ssh2/transport.js";
import { certificateIdentity, signWithCertificates } from "../../src/ssh2/user-certificate.js";
import { waitFor } from "../helpers/net.js";
import { SshCa } from "../helpers/ssh-ca.js";
import { type Ssh2Pair, ssh2Pair } from "../helpers/ssh2-loopback.js";
import { Sshd } from "../helpers/sshd.js";

// AES-GCM, so the padding pool applies (it leaves other ciphers alone).
const GCM = "aes128-gcm@openssh.com";

interface CipherInternals {
  _protocol?: { _cipher?: { allocPacket?: (n: number) => Buffer } };
}
const allocPacketOf = (o: unknown) => (o as CipherInternals)._protocol?._cipher?.allocPacket;

let pair: Ssh2Pair;
before(async () => {
  pair = await ssh2Pair({
    algorithms: { cipher: [GCM] },
    beforeConnect: (client) => poolPadding(client),
  });
});
after(() => pair?.close());

describe("hooks into ssh2 internals are live", () => {
  test("static hooks", () => {
    for (const h of staticHooks()) assert.ok(h.live, `hook ${h.name} is not live (needs ${h.needs})`);
    assert.deepEqual(
      staticHooks()
        .map((h) => h.name)
        .sort(),
      ["host-certificate", "ignore-message", "keepalive-reset", "remote-version", "user-certificate"],
    );
  });

  test("connection hooks, client side and server side", () => {
    const client = connectionHooks(pair.client);
    const server = connectionHooks(pair.conn);
    for (const h of client) assert.ok(h.live, `client hook ${h.name} is not live (needs ${h.needs})`);
    for (const h of server) assert.ok(h.live, `server hook ${h.name} is not live (needs ${h.needs})`);
    assert.deepEqual(client.map((h) => h.name).sort(), [
      "host-certificate",
      "ignore-message",
      "keepalive-reset",
      "padding-pool",
      "receive-window",
      "remote-version",
      "user-certificate",
      "window-seed",
    ]);
    assert.deepEqual(server.map((h) => h.name).sort(), [
      "channel-open-failure",
      "host-certificate",
      "ignore-message",
      "padding-pool",
      "receive-window",
      "window-seed",
    ]);
  });

  test("padding-pool: allocPacket replaced after the handshake, and packets still go through", async () => {
    const alloc = allocPacketOf(pair.client);
    assert.equal(typeof alloc, "function", "padding-pool: Protocol#_cipher.allocPacket is missing");
    assert.equal(alloc?.name, "gcmAllocPacket", `padding-pool: allocPacket is ssh2's own (${alloc?.name})`);
    // The same framing as ssh2's AES-GCM: 4-byte length, padding length, a
    // multiple of 16 after the length field, room for the 16-byte tag.
    for (const n of [0, 1, 11, 12, 27, 100, 32768]) {
      const p = alloc?.(n);
      assert.ok(p, "padding-pool: allocPacket returned nothing");
      const len = p.readUInt32BE(0);
      assert.equal(len % 16, 0, `padding-pool: packet length ${len} for payload ${n}`);
      assert.ok((p[4] ?? 0) >= 4, "padding-pool: at least 4 bytes of padding");
      assert.equal(p.length, 4 + len + 16, `padding-pool: buffer size for payload ${n}`);
      assert.equal(len, 1 + n + (p[4] ?? 0));
    }
    // The server side was not patched: ssh2's own allocPacket, a different function.
    assert.notEqual(
      allocPacketOf(pair.conn),
      alloc,
      "padding-pool: server side was patched without poolPadding()",
    );
    // Traffic under the pooled padding still decrypts on the other side.
    const { client, server } = await pair.clientChannel();
    const got: Buffer[] = [];
    server.on("data", (d: Buffer) => got.push(d));
    client.end(Buffer.alloc(100_000, 7));
    await new Promise((r) => server.once("end", r));
    assert.equal(Buffer.concat(got).length, 100_000, "padding-pool: data sent under pooled padding arrives");
    server.end();
  });

  test("ignore-message, keepalive-reset and remote-version do something on a real client", async () => {
    assert.match(remoteVersion(pair.client), /^ssh2js/, "remote-version: Client#_remoteVer");
    const reset = keepaliveReset(pair.client);
    assert.equal(typeof reset, "function", "keepalive-reset: Client#_resetKA");
    reset?.();
    // An IGNORE is discarded by the peer; the connection must still work afterwards.
    sendIgnore(pair.client);
    const { client, server } = await pair.clientChannel();
    assert.ok(client && server, "ignore-message: the connection survives an SSH_MSG_IGNORE");
    client.destroy();
    server.destroy();
  });

  test("channel internals: on a real server-side channel, and not on a socket", async () => {
    const { server, client } = await pair.serverChannel();
    assert.equal(isSsh2Channel(server), true, "channel: isSsh2Channel() on a server-side ssh2 channel");
    assert.equal(isSsh2Channel(client), true, "channel: isSsh2Channel() on a client-side ssh2 channel");
    assert.equal(typeof serverEof(server), "function", "channel: serverEof() on a server-side channel");
    assert.equal(serverEof(client), undefined, "channel: serverEof() is for server-side channels only");
    assert.equal(disableAutoDestroy(server), true, "channel: disableAutoDestroy() found the stream state");
    const sock = new net.Socket();
    assert.equal(isSsh2Channel(sock), false, "channel: isSsh2Channel() on a net.Socket");
    assert.equal(serverEof(sock), undefined, "channel: serverEof() on a net.Socket");
    assert.equal(disableAutoDestroy(sock), false, "channel: disableAutoDestroy() on a net.Socket");
    sock.destroy();
    server.destroy();
    client.destroy();
  });

  test("channel-open-failure: the client sees the reason code and the description", async () => {
    const conn: Connection = pair.conn;
    pair.onTcpip = (_accept, reject) =>
      rejectChannelOpen(conn, reject, OPEN_FAILURE.ADMINISTRATIVELY_PROHIBITED, "not on this key");
    const err = await new Promise<Error & { reason?: number }>((resolve) =>
      pair.client.forwardOut("127.0.0.1", 1, "127.0.0.1", 2, (e) =>
        resolve(e as Error & { reason?: number }),
      ),
    );
    pair.onTcpip = undefined;
    assert.ok(err, "channel-open-failure: the open was refused");
    assert.equal(err.reason, OPEN_FAILURE.ADMINISTRATIVELY_PROHIBITED, "channel-open-failure: reason code");
    assert.equal(
      err.message,
      "(SSH) Channel open failure: not on this key",
      "channel-open-failure: description",
    );
    // The wrapper is gone afterwards: a plain reject() is ssh2's again.
    pair.onTcpip = (_accept, reject) => reject();
    const plain = await new Promise<Error & { reason?: number }>((resolve) =>
      pair.client.forwardOut("127.0.0.1", 1, "127.0.0.1", 2, (e) =>
        resolve(e as Error & { reason?: number }),
      ),
    );
    pair.onTcpip = undefined;
    assert.notEqual(
      plain.reason,
      OPEN_FAILURE.ADMINISTRATIVELY_PROHIBITED,
      "channel-open-failure: wrapper removed",
    );
    assert.equal(plain.message, "(SSH) Channel open failure: ", "channel-open-failure: ssh2's own reject()");
  });
});

describe("certificate hooks against OpenSSH", () => {
  // One sshd with an ed25519, an ECDSA and an RSA host key, each with a host
  // certificate, trusting user certificates from the same CA.
  let dir: string;
  let ca: SshCa;
  let sshd: Sshd;
  const types = ["ed25519", "ecdsa", "rsa"];
  const userKeys = new Map<string, string>();
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "revtun-cert-hooks-"));
    ca = new SshCa(dir);
    sshd = await Sshd.start({
      hostKeyTypes: types,
      prepare: (s) => [
        ...s.hostKeys.map((k) => `HostCertificate ${ca.sign(k, { host: true, principals: ["127.0.0.1"] })}`),
        `TrustedUserCAKeys ${ca.key}.pub`,
      ],
    });
    for (const t of types) {
      const key = SshCa.newKey(dir, `id_${t}`, t);
      ca.sign(key, { principals: [sshd.user], id: `user-${t}` });
      userKeys.set(t, key);
    }
  });
  after(async () => {
    await sshd?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** The certified host key, which ssh2 checks the key exchange signature with. */
  const hostKeyOf = (cert: Buffer) => parseCertificate(cert).publicKey;

  /** Connects an ssh2 Client to sshd; resolves with what the hostVerifier saw and whether it logged in. */
  function login(o: { hostAlgorithm?: string; userKey: string; hooks: boolean; rekey?: boolean }) {
    const client = new ssh2.Client();
    const key = ssh2.utils.parseKey(readFileSync(o.userKey)) as ParsedKey;
    const identity = certificateIdentity(key, SshCa.blob(`${o.userKey}-cert.pub`));
    let presented = "";
    let tried = false;
    const done = new Promise<{ presented: string; ready: boolean; error?: string }>((resolve) => {
      client.on("ready", async () => {
        if (!o.rekey) return resolve({ presented, ready: true });
        // A second key exchange on the same connection goes through the hook too.
        const again = once(client, "handshake");
        (client as unknown as { _protocol: { rekey(): void } })._protocol.rekey();
        await again;
        // And the connection still carries requests after it.
        client.forwardIn("127.0.0.1", 0, (err) =>
          resolve({ presented, ready: !err, ...(err ? { error: err.message } : {}) }),
        );
      });
      client.on("error", (e) => resolve({ presented, ready: false, error: e.message }));
    });
    client.connect({
      host: "127.0.0.1",
      port: sshd.port,
      username: sshd.user,
      readyTimeout: 5000,
      hostVerifier: (blob: Buffer) => {
        presented = keyTypeOf(blob);
        return true;
      },
      authHandler: (_methods, _partial, next) => {
        if (tried) return next(false as unknown as ssh2.AnyAuthMethod);
        tried = true;
        next({ type: "publickey", username: sshd.user, key: identity });
      },
    });
    if (o.hooks) {
      if (o.hostAlgorithm) assert.ok(acceptHostCertificates(client, [o.hostAlgorithm], hostKeyOf));
      assert.ok(
        signWithCertificates(client),
        "user-certificate: signWithCertificates() found ssh2's internals",
      );
    }
    return done.finally(() => client.end());
  }

  const hostAlgorithms: [string, string][] = [
    ["ssh-ed25519-cert-v01@openssh.com", "ed25519"],
    ["ecdsa-sha2-nistp256-cert-v01@openssh.com", "ecdsa"],
    ["rsa-sha2-512-cert-v01@openssh.com", "rsa"],
    ["rsa-sha2-256-cert-v01@openssh.com", "rsa"],
  ];
  for (const [alg, type] of hostAlgorithms) {
    test(`host-certificate and user-certificate: ssh2 gets sshd's ${alg} and logs in with a ${type} user certificate`, async () => {
      const got = await login({
        hostAlgorithm: alg,
        userKey: userKeys.get(type) ?? "",
        hooks: true,
        rekey: true,
      });
      assert.equal(got.error, undefined, `handshake or login failed: ${got.error}`);
      assert.ok(got.ready, "logged in");
      assert.equal(
        got.presented,
        alg.startsWith("rsa") ? "ssh-rsa-cert-v01@openssh.com" : alg,
        "hostVerifier got the certificate",
      );
      await waitFor(
        () => sshd.log.includes(`Accepted certificate ID "user-${type}"`),
        `sshd accepted user-${type}`,
        3000,
      );
    });
  }

  test("user-certificate: without the hook, sshd refuses the certificate (the hook is what makes it work)", async () => {
    const got = await login({ userKey: userKeys.get("ecdsa") ?? "", hooks: false });
    assert.equal(got.ready, false);
    assert.match(got.error ?? "", /authentication methods failed/);
  });

  /** An ssh2 server presenting `cert` with host key `keyFile`; resolves with what an accepting ssh2 client saw. */
  async function ssh2ToSsh2(keyFile: string, cert: string) {
    const key = ssh2.utils.parseKey(readFileSync(keyFile)) as ParsedKey;
    const server = new ssh2.Server(
      { hostKeys: [...certificateHostKeys(key, SshCa.blob(cert)), { key }] },
      (conn) => {
        conn.on("error", () => {});
        conn.on("authentication", (ctx) => ctx.accept());
      },
    );
    presentHostCertificate(server);
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const client = new ssh2.Client();
    let presented = "";
    const result = new Promise<string>((resolve) => {
      client.on("ready", () => resolve("ready"));
      client.on("error", (e) => resolve(e.message));
    });
    client.connect({
      host: "127.0.0.1",
      port: (server.address() as AddressInfo).port,
      username: "x",
      readyTimeout: 5000,
      hostVerifier: (blob: Buffer) => {
        presented = keyTypeOf(blob);
        return true;
      },
    });
    acceptHostCertificates(client, ["ssh-ed25519-cert-v01@openssh.com"], hostKeyOf);
    const outcome = await result;
    client.end();
    server.close();
    return { outcome, presented };
  }

  test("host-certificate: an ssh2 server and an ssh2 client (the relay and the agent) agree on it", async () => {
    const hostKey = SshCa.newKey(dir, "pair_host");
    const got = await ssh2ToSsh2(hostKey, ca.sign(hostKey, { host: true, principals: ["x"] }));
    assert.equal(got.outcome, "ready");
    assert.equal(got.presented, "ssh-ed25519-cert-v01@openssh.com");
  });

  test("host-certificate: a certificate presented with another key fails the client's signature check", async () => {
    const certified = SshCa.newKey(dir, "certified_host");
    const cert = ca.sign(certified, { host: true, principals: ["x"] });
    const got = await ssh2ToSsh2(SshCa.newKey(dir, "other_host"), cert);
    assert.equal(got.presented, "ssh-ed25519-cert-v01@openssh.com");
    assert.equal(got.outcome, "Handshake failed: signature verification failed");
  });

  for (const type of types) {
    test(`host-certificate (server side): OpenSSH ssh checks an ssh2 server's ${type} certificate against @cert-authority`, async () => {
      const hostKey = SshCa.newKey(dir, `relay_${type}`, type);
      const cert = ca.sign(hostKey, { host: true, principals: ["127.0.0.1"] });
      const key = ssh2.utils.parseKey(readFileSync(hostKey)) as ParsedKey;
      const server = new ssh2.Server(
        { hostKeys: [...certificateHostKeys(key, SshCa.blob(cert)), { key }] },
        (conn) => {
          conn.on("error", () => {});
          conn.on("authentication", (ctx) => ctx.reject());
        },
      );
      assert.ok(
        presentHostCertificate(server),
        "host-certificate: presentHostCertificate() found ssh2's internals",
      );
      server.listen(0, "127.0.0.1");
      await once(server, "listening");
      const known = join(dir, `known_${type}`);
      writeFileSync(known, ca.knownHostsLine("[127.0.0.1]:*"));
      const { port } = server.address() as AddressInfo;
      const stderr = await new Promise<string>((resolve) =>
        execFile(
          "ssh",
          [
            "-v",
            "-p",
            String(port),
            "-F",
            "none",
            "-o",
            `UserKnownHostsFile=${known}`,
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=5",
            "x@127.0.0.1",
            "true",
          ],
          { timeout: 10_000 },
          (_e, _out, err) => resolve(String(err)),
        ),
      );
      server.close();
      assert.doesNotMatch(stderr, /Host key verification failed/);
      assert.match(
        stderr,
        /is known and matches the (ED25519|ECDSA|RSA)-CERT host certificate/,
        "ssh accepted the host certificate",
      );
      assert.match(stderr, /Permission denied/, "ssh went on to authenticate");
    });
  }
});
