/**
 * What enrollment keeps, and the contract both stores meet: the state
 * directory (state-dir-store.ts, one relay) and Redis (redis-store.ts, a
 * fleet). Redeeming a token is atomic in both: of any number of racing
 * redemptions exactly one succeeds.
 */

export interface TokenRecord {
  /** tokenHash(secret): the secret itself is never stored. */
  hash: string;
  name: string;
  createdAt: number;
  expiresAt: number;
  usedAt?: number;
}

export interface DeviceRecord {
  name: string;
  /** SHA256 fingerprint of the device's key: only this key's certificates log in as the name. */
  fingerprint: string;
  /** Serial of the latest certificate, decimal (a 64-bit number does not fit JSON's). */
  serial: string;
  /** Expiry of the latest certificate, ms since the epoch. */
  validBefore: number;
  enrolledAt: number;
  revokedAt?: number;
}

export type RedeemRefusal = "unknown" | "used" | "expired";
export type RedeemOutcome = { ok: true; token: TokenRecord } | { ok: false; reason: RedeemRefusal };

/** How long a used or expired token is kept past its expiry, so a refusal can say which. */
export const TOKEN_KEEP_MS = 24 * 3600_000;

export interface EnrollmentStore {
  addToken(t: TokenRecord): Promise<void>;
  /** Marks the token used if it exists, is unused and unexpired at `now`; atomic. */
  redeem(hash: string, now: number): Promise<RedeemOutcome>;
  /** Writes a device record durably (resolves once it would survive a crash). */
  putDevice(d: DeviceRecord): Promise<void>;
  getDevice(name: string): Promise<DeviceRecord | undefined>;
  devices(): Promise<DeviceRecord[]>;
  /** Sets revokedAt, tells every relay of the fleet; the record, or undefined for an unknown name. */
  revoke(name: string, at: number): Promise<DeviceRecord | undefined>;
  /** Called on every relay (this one included) when a name is revoked or re-enrolled. */
  onChange(fn: (change: { kind: "revoked" | "enrolled"; name: string }) => void): void;
  /** SHA256 fingerprints of the host keys of the relays a token should name. */
  relayFingerprints(own: string): Promise<string[]>;
  close(): Promise<void>;
}
