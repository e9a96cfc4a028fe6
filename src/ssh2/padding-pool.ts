import { randomFillSync } from "node:crypto";
import type { Client, Connection } from "ssh2";

interface CipherLike {
  allocPacket(payloadLength: number): Buffer;
}

interface ProtocolInternals {
  _protocol?: { _cipher?: CipherLike };
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
    const cipher = (owner as unknown as ProtocolInternals)._protocol?._cipher;
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
