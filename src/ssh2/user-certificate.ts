/**
 * Logging in with an OpenSSH user certificate (ssh's CertificateFile), which
 * ssh2 1.17.0 cannot do by itself.
 *
 * ssh2 sends a publickey request with the key's type as the algorithm name
 * and the key's blob; given a key whose type is a certificate algorithm and
 * whose blob is the certificate, that is right (RFC 4252 7, PROTOCOL.certkeys).
 * But Protocol#authPK writes the same name inside the signature blob, where
 * OpenSSH wants the plain algorithm (`ssh-ed25519`, `rsa-sha2-512`; sshd logs
 * "key type does not match" otherwise), converts the signature by the
 * certificate's name (so an ECDSA signature stays DER), and ssh2's client
 * signs an RSA key with SHA-1 unless the key says `ssh-rsa`. Upstream has not
 * merged a fix (mscdex/ssh2#551, PRs #1429 closed, #1486 open).
 *
 * So: certificateIdentity() makes such a key (the private key, presenting the
 * certificate and signing with the algorithm's hash), and
 * signWithCertificates() gives one connection's Protocol an authPK that,
 * for those keys only, writes the signed request itself; every other request
 * is ssh2's own. The request is built exactly as ssh2's authPK builds it,
 * through the same packet writer and sendPacket(), with the plain algorithm
 * in the signature. ./hooks.ts says whether it is live.
 */
import { createRequire } from "node:module";
import type { Client, ParsedKey } from "ssh2";
import { keyTypeOf } from "../shared/keys.js";
import { algorithmsForCertificateType, certificateAlgorithm } from "./host-certificate.js";

interface PacketWriter {
  allocStart: number;
  alloc(payloadLength: number): Buffer;
  finalize(packet: Buffer): Buffer;
}

interface ProtocolInternals {
  _packetRW?: { write?: PacketWriter };
  _authsQueue?: string[];
  _kex?: { sessionID?: Buffer };
  authPK?: (username: string, key: unknown, keyAlgo?: unknown, cbSign?: unknown) => void;
}

type SendPacket = (protocol: unknown, packet: Buffer) => void;
type ConvertSignature = (signature: Buffer, keyType: string) => Buffer | false;

/** sendPacket and convertSignature from ssh2/lib/protocol/utils.js, or undefined when gone. */
const utils = (() => {
  try {
    const u = createRequire(import.meta.url)("ssh2/lib/protocol/utils.js") as {
      sendPacket?: SendPacket;
      convertSignature?: ConvertSignature;
    };
    return typeof u.sendPacket === "function" && typeof u.convertSignature === "function"
      ? { sendPacket: u.sendPacket, convertSignature: u.convertSignature }
      : undefined;
  } catch {
    return undefined;
  }
})();

const MSG_USERAUTH_REQUEST = 50; // RFC 4252 5

/** What a certificate identity signs with; kept on the key object ssh2 passes back to authPK. */
const CERTIFIED = Symbol("revtun.userCertificate");

interface Certified {
  /** The plain signature algorithm, e.g. rsa-sha2-512. */
  signature: string;
  /** The certified key's own type, which ssh2's convertSignature understands. */
  keyType: string;
}

/**
 * A key ssh2 can authenticate with that presents `certificate` for the
 * private `key`: its type is the certificate algorithm (for RSA
 * rsa-sha2-512-cert-v01@openssh.com unless `algorithm` names the -256 one),
 * its public blob the certificate. Throws if the certificate is of another
 * key type than `key`; whether it certifies this very key is the caller's
 * to check (src/shared/certificates), as is whether it is still valid.
 */
export function certificateIdentity(key: ParsedKey, certificate: Buffer, algorithm?: string): ParsedKey {
  const certType = keyTypeOf(certificate);
  const names = algorithmsForCertificateType(certType);
  const name = algorithm && names.includes(algorithm) ? algorithm : names[0];
  const alg = name ? certificateAlgorithm(name) : undefined;
  if (!name || !alg || alg.keyType !== key.type) {
    throw new Error(`a ${certType} certificate cannot be used with a ${key.type} key`);
  }
  const certified: Certified = { signature: alg.signature, keyType: alg.keyType };
  const hash = alg.hash;
  return Object.create(key, {
    type: { value: name, enumerable: true },
    getPublicSSH: { value: () => Buffer.from(certificate) },
    // ssh2's client picks the hash only for a key of type ssh-rsa.
    sign: { value: (data: Buffer, algo?: string) => key.sign(data, algo || hash) },
    [CERTIFIED]: { value: certified },
  }) as ParsedKey;
}

/** Whether the ssh2 internals signWithCertificates() needs are there (for ./hooks.ts). */
export function userCertificateHookLive(client?: Client): boolean {
  if (!utils) return false;
  if (!client) return true;
  const proto = (client as unknown as { _protocol?: ProtocolInternals })._protocol;
  const w = proto?._packetRW?.write;
  return (
    typeof proto?.authPK === "function" &&
    Array.isArray(proto._authsQueue) &&
    typeof w?.alloc === "function" &&
    typeof w.finalize === "function"
  );
}

/**
 * Makes this connection sign publickey requests made with a
 * certificateIdentity() key as OpenSSH expects. Call after client.connect()
 * (which makes the Protocol) and before authentication, i.e. at once.
 * Returns false, changing nothing, when ssh2's internals are gone.
 */
export function signWithCertificates(client: Client): boolean {
  if (!userCertificateHookLive(client) || !utils) return false;
  const { sendPacket, convertSignature } = utils;
  const proto = (client as unknown as { _protocol: ProtocolInternals })._protocol;
  const original = proto.authPK as NonNullable<ProtocolInternals["authPK"]>;
  proto.authPK = function (this: ProtocolInternals, username, key, keyAlgo, cbSign) {
    const sign = typeof keyAlgo === "function" ? keyAlgo : cbSign;
    const certified = (key as { [CERTIFIED]?: Certified } | undefined)?.[CERTIFIED];
    // The query without a signature is right as ssh2 writes it.
    if (!certified || typeof sign !== "function") {
      return original.call(this, username, key, keyAlgo, cbSign);
    }
    const k = key as ParsedKey;
    const algo = Buffer.from(k.type);
    const blob = k.getPublicSSH();
    const user = Buffer.from(username);
    const sessionId = this._kex?.sessionID ?? Buffer.alloc(0);
    // RFC 4252 7: what is signed is the session id and the request up to the key.
    const request = [
      Buffer.from([MSG_USERAUTH_REQUEST]),
      str(user),
      str(Buffer.from("ssh-connection")),
      str(Buffer.from("publickey")),
      Buffer.from([1]),
      str(algo),
      str(blob),
    ];
    const signed = Buffer.concat([str(sessionId), ...request]);
    (sign as (data: Buffer, cb: (signature: Buffer) => void) => void)(signed, (raw: Buffer) => {
      const signature = convertSignature(raw, certified.keyType);
      if (signature === false) throw new Error("Error while converting handshake signature");
      const body = Buffer.concat([
        ...request,
        str(Buffer.concat([str(Buffer.from(certified.signature)), str(signature)])),
      ]);
      const writer = this._packetRW?.write as PacketWriter;
      const packet = writer.alloc(body.length);
      body.copy(packet, writer.allocStart);
      this._authsQueue?.push("publickey");
      sendPacket(this, writer.finalize(packet));
    });
  };
  return true;
}

/** An SSH string (RFC 4251 5): uint32 length, then the bytes. */
function str(b: Buffer): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(b.length);
  return Buffer.concat([head, b]);
}
