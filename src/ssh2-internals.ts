/**
 * Every place revtun (agent and relay) reaches past ssh2's public API, in one
 * file. Each degrades to ssh2's own behaviour, or to doing nothing, if ssh2's
 * internals change (checked against ssh2 1.17).
 */
import { randomFillSync } from "node:crypto";
import { createRequire } from "node:module";
import type { Client, Connection } from "ssh2";

interface PacketWriter {
  allocStart: number;
  alloc(payloadLength: number): Buffer;
  finalize(packet: Buffer): Buffer;
}

interface CipherLike {
  allocPacket(payloadLength: number): Buffer;
}

interface Ssh2Internals {
  _protocol?: {
    _packetRW?: { write?: PacketWriter };
    _cipher?: CipherLike;
    channelOpenFail?: (remote: number, reason: number, description?: string) => void;
  };
  _resetKA?: () => void;
  _remoteVer?: string;
}

type SendPacket = (protocol: unknown, packet: Buffer) => void;

const sendPacket: SendPacket | undefined = (() => {
  try {
    const utils = createRequire(import.meta.url)("ssh2/lib/protocol/utils.js") as { sendPacket?: SendPacket };
    return typeof utils.sendPacket === "function" ? utils.sendPacket : undefined;
  } catch {
    return undefined;
  }
})();

const SSH_MSG_IGNORE = 2;

/**
 * Sends SSH_MSG_IGNORE (RFC 4253 11.2), which the server discards.
 *
 * Why: sshd leaves Nagle's algorithm on for a session without a pty. After a
 * message that wants no reply (hostkeys-00@openssh.com) or a reply to our
 * request (tcpip-forward), our kernel delays its ACK, and sshd holds its next
 * small packet (the first CHANNEL_OPEN) until that ACK: up to 40 ms on the
 * first forwarded connection. A packet from us carries the ACK at once.
 */
export function sendIgnore(client: Client): void {
  const protocol = (client as unknown as Ssh2Internals)._protocol;
  const writer = protocol?._packetRW?.write;
  if (!sendPacket || !writer || typeof writer.alloc !== "function") return;
  const p = writer.allocStart;
  const packet = writer.alloc(5);
  packet[p] = SSH_MSG_IGNORE;
  packet.writeUInt32BE(0, p + 1); // empty data string
  sendPacket(protocol, writer.finalize(packet));
}

/**
 * Restarts ssh2's keepalive countdown. ssh2 resets it only when a keepalive
 * is answered, so a bulk transfer whose replies queue behind data looks dead;
 * OpenSSH counts any traffic from the server as proof of life.
 * Returns undefined when ssh2 has no such timer to reset.
 */
export function keepaliveReset(client: Client): (() => void) | undefined {
  const reset = (client as unknown as Ssh2Internals)._resetKA;
  return typeof reset === "function" ? reset.bind(client) : undefined;
}

/** The software part of the server's identification string, e.g. "OpenSSH_9.2p1 Debian-2+deb12u10". */
export function remoteVersion(client: Client): string {
  return (client as unknown as Ssh2Internals)._remoteVer ?? "";
}

/** RFC 4254 5.1 reason codes for SSH_MSG_CHANNEL_OPEN_FAILURE. */
export const OPEN_FAILURE = {
  ADMINISTRATIVELY_PROHIBITED: 1,
  CONNECT_FAILED: 2,
  UNKNOWN_CHANNEL_TYPE: 3,
  RESOURCE_SHORTAGE: 4,
} as const;

/**
 * Rejects a client's channel open with a reason and a description the
 * OpenSSH client prints ("channel 0: open failed: administratively
 * prohibited: <description>").
 *
 * ssh2 1.17's reject() always sends an empty description and, having
 * reserved a channel number, CONNECT_FAILED (mscdex/ssh2#1222; the fix,
 * PR #1223, is unmerged). reject() writes the failure synchronously through
 * Protocol.channelOpenFail, so that method is wrapped for exactly that call.
 */
export function rejectChannelOpen(
  conn: Connection,
  reject: () => void,
  reason: number,
  description: string,
): void {
  const proto = (conn as unknown as Ssh2Internals)._protocol;
  const original = proto?.channelOpenFail;
  if (!proto || typeof original !== "function") {
    reject();
    return;
  }
  const hadOwn = Object.hasOwn(proto, "channelOpenFail");
  proto.channelOpenFail = (remote: number) => original.call(proto, remote, reason, description);
  try {
    reject();
  } finally {
    if (hadOwn) proto.channelOpenFail = original;
    else delete proto.channelOpenFail;
  }
}

/**
 * Random padding from a pool, for the AES-GCM packet ciphers.
 *
 * Why: ssh2 fills every packet's 4-19 padding bytes with its own
 * randomFillSync() call, about 3 us each (a job object, OpenSSL, and a
 * getpid() for fork detection): 7% of the agent's CPU with a new connection
 * per HTTP request, 11% at 50 concurrent. Drawing them from a pool that one
 * randomFillSync() refills 4 KiB at a time gives the same CSPRNG bytes, each
 * used once, as OpenSSH does with arc4random_buf(); ws did the same for its
 * masks (websockets/ws#1986).
 *
 * Only this connection's cipher objects are touched, after each key exchange
 * ("handshake", which ssh2 emits once the new cipher is in place), and only if
 * the replacement builds the same packets as ssh2's own allocPacket (length,
 * padding length, room for the tag) for every payload length it is checked
 * with; otherwise ssh2's is kept. Call it before connecting.
 */
export function poolPadding(owner: Client | Connection): void {
  owner.on("handshake", () => {
    const cipher = (owner as unknown as Ssh2Internals)._protocol?._cipher;
    if (cipher && sameFraming(cipher)) cipher.allocPacket = gcmAllocPacket;
  });
}

const verdicts = new WeakMap<object, boolean>();

function sameFraming(cipher: CipherLike): boolean {
  const proto = Object.getPrototypeOf(cipher) as CipherLike & { constructor: { name: string } };
  let ok = verdicts.get(proto);
  if (ok === undefined) {
    ok = /^AESGCMCipher/.test(proto.constructor.name) && typeof proto.allocPacket === "function";
    for (let n = 0; ok && n < 64; n++) {
      const a = proto.allocPacket.call(cipher, n);
      const b = gcmAllocPacket(n);
      ok = a.length === b.length && a.readUInt32BE(0) === b.readUInt32BE(0) && a[4] === b[4];
    }
    verdicts.set(proto, ok);
  }
  return ok;
}

const POOL_SIZE = 4096;
const pool = Buffer.allocUnsafe(POOL_SIZE);
let poolOffset = POOL_SIZE;

function gcmAllocPacket(payloadLength: number): Buffer {
  // RFC 5647 / OpenSSH: the length field is not encrypted, so the rest is a
  // multiple of the 16-byte block, with at least 4 bytes of padding.
  let packetLength = 4 + 1 + payloadLength;
  let padLength = 16 - ((packetLength - 4) & 15);
  if (padLength < 4) padLength += 16;
  packetLength += padLength;
  const packet = Buffer.allocUnsafe(packetLength + 16); // + the GCM tag
  packet.writeUInt32BE(packetLength - 4, 0);
  packet[4] = padLength;
  if (poolOffset + padLength > POOL_SIZE) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  pool.copy(packet, 5 + payloadLength, poolOffset, poolOffset + padLength);
  poolOffset += padLength;
  return packet;
}
