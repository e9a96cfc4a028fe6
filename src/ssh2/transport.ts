/**
 * Reaches into an ssh2 connection's transport: sending SSH_MSG_IGNORE,
 * restarting the keepalive countdown, reading the peer's version. Like every
 * file in src/ssh2/, each degrades to ssh2's own behaviour, or to doing
 * nothing, if ssh2's internals change; ./hooks.ts says which are live.
 */
import { createRequire } from "node:module";
import type { Client } from "ssh2";

interface PacketWriter {
  allocStart: number;
  alloc(payloadLength: number): Buffer;
  finalize(packet: Buffer): Buffer;
}

interface ClientInternals {
  _protocol?: { _packetRW?: { write?: PacketWriter } };
  _resetKA?: () => void;
  _remoteVer?: string;
}

type SendPacket = (protocol: unknown, packet: Buffer) => void;

/** ssh2/lib/protocol/utils.js sendPacket, or undefined when that file or function is gone. */
export const sendPacket: SendPacket | undefined = (() => {
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
  const protocol = (client as unknown as ClientInternals)._protocol;
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
  const reset = (client as unknown as ClientInternals)._resetKA;
  return typeof reset === "function" ? reset.bind(client) : undefined;
}

/** The software part of the server's identification string, e.g. "OpenSSH_9.2p1 Debian-2+deb12u10". */
export function remoteVersion(client: Client): string {
  return (client as unknown as ClientInternals)._remoteVer ?? "";
}
