/**
 * The MAC on device records in Redis: HMAC-SHA256 under a key derived with
 * HKDF-SHA256 from the fleet key's private half and a purpose string, so
 * only a holder of the fleet key can write a record other relays accept,
 * and a key derived for one purpose never verifies another's values.
 * (To be replaced by the registry's record MAC module once it lands on this
 * branch: same construction, one place.)
 */
import { createHmac, hkdfSync, timingSafeEqual } from "node:crypto";

export interface RecordMac {
  /** base64url HMAC of `text`. */
  sign(text: string): string;
  verify(text: string, mac: string): boolean;
}

export function recordMac(fleetPrivateKey: string | Buffer, purpose: string): RecordMac {
  const key = Buffer.from(
    hkdfSync("sha256", Buffer.from(fleetPrivateKey), Buffer.alloc(0), `revtun ${purpose}`, 32),
  );
  const sign = (text: string) => createHmac("sha256", key).update(text).digest("base64url");
  return {
    sign,
    verify: (text, mac) => {
      const want = Buffer.from(sign(text));
      const got = Buffer.from(mac);
      return got.length === want.length && timingSafeEqual(got, want);
    },
  };
}
