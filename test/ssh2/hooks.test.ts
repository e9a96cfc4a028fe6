/**
 * Fails when any of revtun's reaches into ssh2's internals (src/ssh2/) is not
 * live on the installed ssh2, so an ssh2 upgrade that breaks one fails CI
 * instead of quietly falling back to ssh2's own behaviour. Each assertion
 * names the hook. Real in-process ssh2 Client and Server on loopback.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import type { Connection } from "ssh2";
import { disableAutoDestroy, isSsh2Channel, serverEof } from "../../src/ssh2/channel.js";
import { OPEN_FAILURE, rejectChannelOpen } from "../../src/ssh2/channel-open-failure.js";
import { connectionHooks, staticHooks } from "../../src/ssh2/hooks.js";
import { poolPadding } from "../../src/ssh2/padding-pool.js";
import { keepaliveReset, remoteVersion, sendIgnore } from "../../src/ssh2/transport.js";
import { type Ssh2Pair, ssh2Pair } from "../helpers/ssh2-loopback.js";

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
      ["ignore-message", "keepalive-reset", "remote-version"],
    );
  });

  test("connection hooks, client side and server side", () => {
    const client = connectionHooks(pair.client);
    const server = connectionHooks(pair.conn);
    for (const h of client) assert.ok(h.live, `client hook ${h.name} is not live (needs ${h.needs})`);
    for (const h of server) assert.ok(h.live, `server hook ${h.name} is not live (needs ${h.needs})`);
    assert.deepEqual(client.map((h) => h.name).sort(), [
      "ignore-message",
      "keepalive-reset",
      "padding-pool",
      "receive-window",
      "remote-version",
      "window-seed",
    ]);
    assert.deepEqual(server.map((h) => h.name).sort(), [
      "channel-open-failure",
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
