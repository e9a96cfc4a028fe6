/**
 * Host certificates in ssh2's key exchange, both ways: a server presenting an
 * OpenSSH host certificate (sshd's HostCertificate) and a client offering the
 * certificate host key algorithms and checking the signature made with the
 * certified key (ssh's known_hosts @cert-authority).
 *
 * ssh2 1.17.0 has no certificate support (mscdex/ssh2#551, open since 2017;
 * PR #1486 unmerged). Its kex.js takes the signature's algorithm name, the
 * hash and the key to verify with from the negotiated host key algorithm,
 * which for a certificate is the certificate's name: PROTOCOL.certkeys wants
 * the plain algorithm (`ssh-ed25519`, `rsa-sha2-512`) in the signature and the
 * certified key to check it. That code lives in a closure of kex.js, out of
 * reach of a patch to any exported function, and a pinned patch of the
 * installed file (patch-package) would be lost on `npm install` as a library
 * dependency and on `--ignore-scripts`. What is reachable is the key exchange
 * object itself, which ssh2 assigns to `Protocol#_kex` when it begins: an
 * accessor on one connection's Protocol sees it, and for a certificate
 * algorithm, and only then, lends `finish()` the plain algorithm name and key
 * for the part of it that signs or verifies. Everything else stays ssh2's.
 *
 * - Server: call presentHostCertificate(server) and put certificateHostKeys()
 *   first in the Server's hostKeys. ssh2 offers each under its certificate
 *   algorithm name, sends the certificate as K_S and signs with the key.
 * - Client: call acceptHostCertificates(client, algorithms) right after
 *   client.connect(). The hostVerifier receives the whole certificate; check
 *   it (the CA, principals, validity) there, as ssh does; ssh2 then checks
 *   the key exchange signature with the key the certificate certifies.
 *
 * ./hooks.ts reports whether the internals are there; test/ssh2/hooks.test.ts
 * runs both directions against OpenSSH's sshd and ssh.
 */
import { createRequire } from "node:module";
import type { Client, Connection, EncryptedPrivateKey, ParsedKey, Server } from "ssh2";
import { keyTypeOf } from "../shared/keys.js";

interface Algorithm {
  /** The type name inside the certificate blob. */
  certType: string;
  /** The signature algorithm inside the SSH signature blob. */
  signature: string;
  /** The type of the certified (plain) key. */
  keyType: string;
  /** The hash ssh2's sign() and verify() should use. */
  hash?: string;
}

/** PROTOCOL.certkeys: the host key algorithm names of certificates and what each signs with. */
const ALGORITHMS: Record<string, Algorithm> = {
  "ssh-ed25519-cert-v01@openssh.com": {
    certType: "ssh-ed25519-cert-v01@openssh.com",
    signature: "ssh-ed25519",
    keyType: "ssh-ed25519",
  },
  "ecdsa-sha2-nistp256-cert-v01@openssh.com": {
    certType: "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    signature: "ecdsa-sha2-nistp256",
    keyType: "ecdsa-sha2-nistp256",
  },
  "ecdsa-sha2-nistp384-cert-v01@openssh.com": {
    certType: "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    signature: "ecdsa-sha2-nistp384",
    keyType: "ecdsa-sha2-nistp384",
  },
  "ecdsa-sha2-nistp521-cert-v01@openssh.com": {
    certType: "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    signature: "ecdsa-sha2-nistp521",
    keyType: "ecdsa-sha2-nistp521",
  },
  // RSA certificates are all ssh-rsa-cert-v01 inside; the algorithm name
  // picks the hash (RFC 8332). SHA-1 (ssh-rsa-cert-v01 itself) is left out,
  // as OpenSSH 8.8 and later do.
  "rsa-sha2-512-cert-v01@openssh.com": {
    certType: "ssh-rsa-cert-v01@openssh.com",
    signature: "rsa-sha2-512",
    keyType: "ssh-rsa",
    hash: "sha512",
  },
  "rsa-sha2-256-cert-v01@openssh.com": {
    certType: "ssh-rsa-cert-v01@openssh.com",
    signature: "rsa-sha2-256",
    keyType: "ssh-rsa",
    hash: "sha256",
  },
};

/** Every certificate host key algorithm this file handles, in ssh's order of preference. */
export const CERTIFICATE_ALGORITHMS = Object.keys(ALGORITHMS);

/** What one certificate algorithm means, or undefined for a plain one. */
export function certificateAlgorithm(name: string): Readonly<Algorithm> | undefined {
  return Object.hasOwn(ALGORITHMS, name) ? ALGORITHMS[name] : undefined;
}

/** The algorithm names a certificate of this type can be used under (two for RSA). */
export function algorithmsForCertificateType(certType: string): string[] {
  return CERTIFICATE_ALGORITHMS.filter((a) => ALGORITHMS[a]?.certType === certType);
}

interface KexInitLike {
  lists: {
    kex: { array: string[] };
    serverHostKey: { array: string[] };
    cs: Record<"cipher" | "mac" | "compress" | "lang", { array: string[] }>;
    sc: Record<"cipher" | "mac" | "compress" | "lang", { array: string[] }>;
  };
}
type KexInitClass = new (lists: unknown) => KexInitLike;

/** ssh2/lib/protocol/kex.js KexInit (the KEXINIT a side sends), or undefined if gone. */
const KexInit: KexInitClass | undefined = (() => {
  try {
    const kex = createRequire(import.meta.url)("ssh2/lib/protocol/kex.js") as { KexInit?: unknown };
    return typeof kex.KexInit === "function" ? (kex.KexInit as KexInitClass) : undefined;
  } catch {
    return undefined;
  }
})();

interface KexInternals {
  negotiated?: { serverHostKey?: string };
  _protocol?: { _server?: boolean };
  _finished?: boolean;
  _hostKey?: unknown;
  finish?: (...args: unknown[]) => unknown;
  getPublicKey?: () => Buffer;
}

interface ProtocolInternals {
  _kex?: unknown;
  _offer?: KexInitLike;
  _hostKeys?: unknown;
  _server?: boolean;
}

const protocolOf = (owner: Client | Connection) =>
  (owner as unknown as { _protocol?: ProtocolInternals })._protocol;

/** Whether the ssh2 internals this file needs are there (for ./hooks.ts). */
export function hostCertificateHookLive(owner?: Client | Connection): boolean {
  if (KexInit === undefined) return false;
  if (!owner) return true;
  const proto = protocolOf(owner);
  return !!proto && "_kex" in proto && (proto._server ? "_hostKeys" in proto : "_offer" in proto);
}

const WATCHED = Symbol("revtun.kexWatched");

/**
 * Sees each key exchange object as ssh2 makes it (handleKexInit assigns
 * Protocol#_kex before start()), the first and every rekey.
 */
function watchKex(proto: ProtocolInternals, certifiedKey?: CertifiedKey): boolean {
  if (!("_kex" in proto)) return false;
  const p = proto as ProtocolInternals & { [WATCHED]?: true };
  if (p[WATCHED]) return true;
  let current = proto._kex;
  Object.defineProperty(proto, "_kex", {
    configurable: true,
    enumerable: true,
    get: () => current,
    set: (kex: unknown) => {
      current = kex;
      if (kex && typeof kex === "object") adaptKex(kex as KexInternals, certifiedKey);
    },
  });
  p[WATCHED] = true;
  return true;
}

/** The face of a host key that ssh2's kex uses while signing: the key's own type, the certificate as K_S. */
const PRESENTED = Symbol("revtun.presentedHostKey");

/** Gives the certified key's plain blob for a certificate blob, or undefined if it has none. */
export type CertifiedKey = (certificate: Buffer) => Buffer | undefined;

function adaptKex(kex: KexInternals, certifiedKey?: CertifiedKey): void {
  const negotiated = kex.negotiated;
  const name = negotiated?.serverHostKey;
  const alg = name ? certificateAlgorithm(name) : undefined;
  const finish = kex.finish;
  if (!negotiated || !name || !alg || typeof finish !== "function") return;
  const isServer = kex._protocol?._server === true;
  // The client compares the type inside K_S with the negotiated name, allowing
  // ssh-rsa under rsa-sha2-*, but not ssh-rsa-cert-v01 under rsa-sha2-*-cert-v01.
  if (!isServer) negotiated.serverHostKey = alg.certType;

  kex.finish = function (this: KexInternals, ...args: unknown[]) {
    if (this._finished) return finish.apply(this, args);
    if (isServer) {
      // ssh2 chose the key by the certificate's algorithm name; sign with its
      // plain face, whose getPublicSSH() is the certificate (K_S), and write
      // the plain signature algorithm, which sets the hash too.
      const presented = (this._hostKey as { [PRESENTED]?: unknown } | undefined)?.[PRESENTED];
      if (presented) this._hostKey = presented;
      negotiated.serverHostKey = alg.signature;
      try {
        return finish.apply(this, args);
      } finally {
        negotiated.serverHostKey = name;
      }
    }
    // Client: finish() hashes K_S (the certificate) and then our DH public
    // value (getPublicKey()), then checks the signature against K_S. From
    // that call on it is given the certified key and the plain algorithm.
    const certificate = this._hostKey;
    const plain =
      Buffer.isBuffer(certificate) && keyTypeOf(certificate) === alg.certType
        ? certifiedKey?.(certificate)
        : undefined;
    const getPublicKey = this.getPublicKey;
    if (plain && typeof getPublicKey === "function") {
      this.getPublicKey = function (this: KexInternals) {
        const value = getPublicKey.call(this);
        this._hostKey = plain;
        negotiated.serverHostKey = alg.signature;
        return value;
      };
    }
    try {
      return finish.apply(this, args);
    } finally {
      delete this.getPublicKey;
      negotiated.serverHostKey = name;
    }
  };
}

/**
 * ssh2 Server hostKeys entries that present `certificate` for `key`, one per
 * algorithm name (two for RSA). Put them before the plain key: ssh2 offers
 * host key algorithms in hostKeys order, and a client that can check a
 * certificate (ssh with an @cert-authority line) picks the first it knows.
 * Pass them as they are (ssh2 takes a parsed key as { key }).
 * Whether the certificate is valid and certifies this key is the caller's
 * to check (src/shared/certificates); this only checks the type matches.
 */
export function certificateHostKeys(key: ParsedKey, certificate: Buffer): EncryptedPrivateKey[] {
  const certType = keyTypeOf(certificate);
  const names = algorithmsForCertificateType(certType);
  if (names.length === 0 || ALGORITHMS[names[0] as string]?.keyType !== key.type) {
    throw new Error(`a ${certType || "malformed"} certificate cannot present a ${key.type} host key`);
  }
  const presented: ParsedKey = Object.create(key, {
    getPublicSSH: { value: () => Buffer.from(certificate) },
  });
  // ssh2's Server takes a parsed key only as { key }; it keeps the first key of each type.
  return names.map((name) => ({
    key: Object.create(key, {
      type: { value: name, enumerable: true },
      getPublicSSH: { value: () => Buffer.from(certificate) },
      [PRESENTED]: { value: presented },
    }) as ParsedKey,
  }));
}

/**
 * Makes every connection of an ssh2 Server sign correctly with the
 * certificate host keys from certificateHostKeys(). ssh2 emits "connection"
 * once the client's version line is in, before either KEXINIT is handled,
 * which is when the hook must be in place. Returns false if ssh2's internals
 * are gone (the certificate algorithms would then fail the handshake).
 */
export function presentHostCertificate(server: Server): boolean {
  if (!hostCertificateHookLive()) return false;
  server.on("connection", (conn) => presentOnConnection(conn));
  return true;
}

/** The per-connection half of presentHostCertificate(), for a caller that handles "connection" itself. */
export function presentOnConnection(conn: Connection): boolean {
  const proto = protocolOf(conn);
  return !!proto && watchKex(proto);
}

/**
 * Offers the given certificate host key algorithms first (OpenSSH does this
 * when a known_hosts @cert-authority line could match the host) and makes
 * ssh2 verify the server's signature with the certified key. Call right
 * after client.connect(): ssh2 sends its KEXINIT once the server's version
 * line arrives, never before connect() returns. `certifiedKey` reads the
 * certified key out of the certificate (src/shared/certificates parses it;
 * this layer does not). Returns false (and changes nothing) if ssh2's
 * internals are gone.
 */
export function acceptHostCertificates(
  client: Client,
  algorithms: readonly string[],
  certifiedKey: CertifiedKey,
): boolean {
  const proto = protocolOf(client);
  const wanted = algorithms.filter((a) => certificateAlgorithm(a));
  if (!proto || !KexInit || !proto._offer || wanted.length === 0) return false;
  if (!watchKex(proto, certifiedKey)) return false;
  const lists = proto._offer.lists;
  const side = (s: KexInitLike["lists"]["cs"]) => ({
    cipher: s.cipher.array,
    mac: s.mac.array,
    compress: s.compress.array,
    lang: s.lang.array,
  });
  proto._offer = new KexInit({
    kex: lists.kex.array,
    serverHostKey: [...new Set([...wanted, ...lists.serverHostKey.array])],
    cs: side(lists.cs),
    sc: side(lists.sc),
  });
  return true;
}
