/**
 * Records in Redis that a Redis writer cannot forge: each carries an
 * HMAC-SHA256 keyed by a key only holders of the fleet key can derive, and
 * every relay checks it before trusting a record (issue 26: a fake relay
 * record, or a rewritten live one, sent operators' connections to an SSH
 * server of the attacker's). Redis's own password is not enough: it is
 * often shared with other applications, and anyone with a shell on the
 * Redis host has the data.
 *
 * Why a MAC and not a signature with the fleet's ed25519 key: every party
 * that verifies also holds the fleet key (a relay), so a shared-key MAC
 * gives the same guarantee at a fraction of the cost (HMAC ~1 µs against
 * ~60 µs for an ed25519 verify), and a relay checks one per holder on every
 * routed open. The MAC key is derived with HKDF-SHA256 from the fleet key's
 * private half (PKCS#8 DER) and a per-purpose label, so it is never the
 * fleet key itself and a MAC for one purpose is no MAC for another.
 *
 * What is MACed: the fleet name, the record's kind and its fields, each
 * length-prefixed (4 bytes, big-endian) so no two field lists encode alike
 * ("ab","c" vs "a","bc"). Include every field a reader acts on, and the
 * record's own id (a relay id, a device id): that binds a record to its
 * key, so a valid record copied under another id does not verify.
 * Replay of a record as it once was is not prevented here (a relay that
 * lapsed, put back with its old address and host key): it reaches only a
 * real member of the fleet, whose host key peers check anyway.
 */
import { createHmac, createPrivateKey, hkdfSync, timingSafeEqual } from "node:crypto";
import { RevtunError } from "../../shared/errors.js";
import { parseKeyText } from "../../shared/keys.js";

/** Label of the registry's MAC key; other record stores pass their own (e.g. "inventory"). */
export const REGISTRY_PURPOSE = "registry";
const MAC_BYTES = 32;
/** base64url of 32 bytes. */
const MAC_TEXT = /^[A-Za-z0-9_-]{43}$/;

export class RecordMac {
  private readonly key: Buffer;

  /**
   * `secret`: key material only the fleet has (fromFleetKey derives it);
   * `fleet`: the fleet's name, so a record of one fleet is no record of
   * another sharing the key; `purpose`: which store the MACs are for.
   */
  constructor(
    secret: Buffer,
    readonly fleet = "",
    purpose = REGISTRY_PURPOSE,
  ) {
    if (secret.length < 16) throw new TypeError("a record MAC secret has at least 16 bytes");
    this.key = Buffer.from(hkdfSync("sha256", secret, "revtun fleet records v1", `revtun ${purpose}`, 32));
  }

  /** The MAC key derived from the fleet key's private half (OpenSSH text, as in FleetKey.privateKey). */
  static fromFleetKey(privateKey: string, fleet = "", purpose = REGISTRY_PURPOSE): RecordMac {
    const key = parseKeyText(privateKey);
    if (key instanceof Error || !key.isPrivateKey())
      throw new RevtunError("CONFIG", "the fleet key is not an unencrypted private key");
    const der = createPrivateKey(key.getPrivatePEM()).export({ type: "pkcs8", format: "der" });
    return new RecordMac(der, fleet, purpose);
  }

  /** The MAC of a record of `kind` with `fields`, as base64url (43 characters). */
  sign(kind: string, fields: readonly string[]): string {
    const h = createHmac("sha256", this.key);
    for (const part of [this.fleet, kind, ...fields]) {
      const bytes = Buffer.from(part, "utf8");
      const len = Buffer.alloc(4);
      len.writeUInt32BE(bytes.length);
      h.update(len).update(bytes);
    }
    return h.digest("base64url");
  }

  /** Whether `mac` (anything read from Redis) is the MAC of this record; constant-time. */
  verify(kind: string, fields: readonly string[], mac: unknown): boolean {
    if (typeof mac !== "string" || !MAC_TEXT.test(mac)) return false;
    const want = Buffer.from(this.sign(kind, fields), "base64url");
    const got = Buffer.from(mac, "base64url");
    return got.length === MAC_BYTES && timingSafeEqual(want, got);
  }
}
