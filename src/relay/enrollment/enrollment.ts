/**
 * The relay's enrollment service (docs/enrollment.md): tokens, the answer to
 * a device's enrollment and renewal requests, the check of a certificate
 * this relay's CA signed at login, revocation. No I/O of its own but the
 * store's; the SSH side is enrollment-channel.ts, the hook into
 * authentication is relay/authentication.ts.
 */

import { CertChecker, type Certificate, parseCertificate } from "../../shared/certificates/index.js";
import { RevtunError } from "../../shared/errors.js";
import { fingerprintSha256, parsePublicKey } from "../../shared/keys.js";
import type { AuthorizedKey } from "../authorized-keys.js";
import { parseTunnelName } from "../names.js";
import type { CertificateAuthority } from "./certificate-authority.js";
import { certificateLine, randomSerial, signableKeyType, signCertificate } from "./sign-certificate.js";
import type { DeviceRecord, EnrollmentStore } from "./store.js";
import { decodeToken, encodeToken, newToken, tokenHash } from "./token.js";

/** docs/enrollment.md "Validity defaults and why". */
export const DEFAULT_CERT_VALIDITY_MS = 30 * 24 * 3600_000;
/** Low enough for tests of renewal (30 s in issue 21), high enough that renewal at half (5 s) has time for a round trip. */
export const MIN_CERT_VALIDITY_MS = 10_000;
export const DEFAULT_TOKEN_TTL_MS = 3600_000;
export const MAX_TOKEN_TTL_MS = 7 * 24 * 3600_000;
export const HOST_CERT_VALIDITY_MS = 365 * 24 * 3600_000;
/** How often every device record is read again, in case a change notice was lost (Redis pub/sub). */
const RESYNC_MS = 30_000;
/**
 * Certificates start this far in the past, for devices whose clock lags
 * (Teleport backdates 1 min), but at most a tenth of the validity: the agent
 * renews at the middle of [validAfter, validBefore], which a 5-minute
 * backdate would put before the issue time of a 30 s certificate.
 */
const backdateMs = (validityMs: number) => Math.min(5 * 60_000, validityMs / 10);
const MAX_HOST_KEYS = 8;

export interface EnrollmentOptions {
  ca: CertificateAuthority;
  store: EnrollmentStore;
  /** User certificates' validity (`--cert-validity`). Default 30 days; at least 10 s. */
  certValidityMs?: number;
}

export type EnrollRefusal = "unknown" | "used" | "expired" | "other-relay" | "invalid" | "unavailable";

export type EnrollAnswer =
  | { ok: true; name: string; certificate: string; hostCertificates: string[]; validBefore: number }
  | { ok: false; reason: EnrollRefusal; message: string };

export type RenewAnswer =
  | { ok: true; certificate: string; validBefore: number }
  | { ok: false; reason: "revoked" | "unknown" | "unavailable"; message: string };

/** A certificate this CA signed, checked for a login. */
export type CertificateDecision =
  | { ok: true; name: string; cert: Certificate; key: AuthorizedKey; fingerprint: string }
  | { ok: false; reason: string; fingerprint?: string };

/** What the service tells the relay; the relay turns it into an event. */
export interface EnrollmentRecord {
  action: "token-issued" | "enrolled" | "refused" | "renewed" | "renewal-refused" | "revoked";
  name: string;
  peer?: string;
  fingerprint?: string;
  serial?: string;
  reason?: string;
}

const MESSAGES: Record<EnrollRefusal, string> = {
  unknown: "the relay does not know this token (mistyped, or made for another fleet's relay)",
  used: "this token has been used already: ask for a new one (revtun relay token --name NAME)",
  expired: "this token has expired: ask for a new one (revtun relay token --name NAME)",
  "other-relay": "this token was made for a relay with another CA: enroll with the relay that made it",
  invalid: "the enrollment request is malformed",
  unavailable: "the relay cannot reach its enrollment store; try again",
};

export class Enrollment {
  readonly ca: CertificateAuthority;
  readonly certValidityMs: number;
  private readonly store: EnrollmentStore;
  private readonly checker: CertChecker;
  private resync: NodeJS.Timeout | undefined;
  /** Device records by name, so a login needs no store round trip (refreshed on every change). */
  private readonly cache = new Map<string, DeviceRecord>();

  constructor(
    o: EnrollmentOptions,
    private readonly hooks: {
      now: () => Date;
      hostKeyFingerprint: string;
      record: (r: EnrollmentRecord) => void;
      /** A name's record changed (revoked, re-enrolled): sessions with other keys for it must go. */
      changed: (name: string) => void;
    },
  ) {
    this.ca = o.ca;
    this.store = o.store;
    this.certValidityMs = o.certValidityMs ?? DEFAULT_CERT_VALIDITY_MS;
    this.checker = new CertChecker({
      certType: "user",
      isAuthority: (caBlob) => caBlob.equals(this.ca.publicBlob),
      clock: hooks.now,
      requirePrincipal: true,
    });
    if (!Number.isFinite(this.certValidityMs) || this.certValidityMs < MIN_CERT_VALIDITY_MS)
      throw new RevtunError(
        "USAGE",
        `certificate validity must be at least 10 s, got ${this.certValidityMs} ms`,
      );
  }

  async start(): Promise<void> {
    this.store.onChange(({ name }) => void this.refresh(name));
    // A store that cannot answer yet (Redis down) leaves the cache empty: logins read through.
    for (const d of await this.store.devices().catch(() => [])) this.cache.set(d.name, d);
    // Pub/sub is at most once: a relay whose Redis connection was down when a
    // revocation was published would never hear of it. Re-reading every
    // record bounds that to RESYNC_MS.
    this.resync = setInterval(() => void this.resyncAll(), RESYNC_MS);
    this.resync.unref();
  }

  close(): Promise<void> {
    clearInterval(this.resync);
    return this.store.close();
  }

  private async resyncAll(): Promise<void> {
    let devices: DeviceRecord[];
    try {
      devices = await this.store.devices();
    } catch {
      return;
    }
    for (const d of devices) {
      const was = this.cache.get(d.name);
      this.cache.set(d.name, d);
      if (was && (was.revokedAt !== d.revokedAt || was.fingerprint !== d.fingerprint))
        this.hooks.changed(d.name);
    }
  }

  /** A one-line token for `name`, valid `ttlMs`. */
  async issueToken(
    nameText: string,
    ttlMs = DEFAULT_TOKEN_TTL_MS,
  ): Promise<{ token: string; name: string; expiresAt: Date }> {
    const parsed = parseTunnelName(nameText);
    if ("error" in parsed)
      throw new RevtunError("USAGE", `name ${JSON.stringify(nameText)}: ${parsed.error}`);
    if (!Number.isFinite(ttlMs) || ttlMs < 60_000 || ttlMs > MAX_TOKEN_TTL_MS)
      throw new RevtunError("USAGE", `token ttl must be 1 minute to 7 days, got ${ttlMs} ms`);
    const now = this.hooks.now();
    const t = newToken({
      name: parsed.name,
      ttlMs,
      caFingerprint: this.ca.fingerprint,
      hostKeyFingerprints: await this.store.relayFingerprints(this.hooks.hostKeyFingerprint),
      now,
    });
    await this.store.addToken({
      hash: tokenHash(t.secret),
      name: t.name,
      createdAt: now.getTime(),
      expiresAt: t.expiresAt.getTime(),
    });
    this.hooks.record({ action: "token-issued", name: t.name });
    return { token: encodeToken(t), name: t.name, expiresAt: t.expiresAt };
  }

  /** Answers one enrollment request line (JSON) from `peer`. Never throws. */
  async enroll(line: string, peer: string): Promise<EnrollAnswer> {
    let name = "";
    const refuse = (reason: EnrollRefusal, detail?: string): EnrollAnswer => {
      this.hooks.record({ action: "refused", name: name || "(unknown)", peer, reason: detail ?? reason });
      return { ok: false, reason, message: MESSAGES[reason] };
    };
    let req: { v?: unknown; token?: unknown; key?: unknown; hostKeys?: unknown };
    try {
      req = JSON.parse(line);
    } catch {
      return refuse("invalid", "request is not JSON");
    }
    if (typeof req !== "object" || req === null || req.v !== 1 || typeof req.token !== "string")
      return refuse("invalid", "request is not version 1 with a token");
    const token = decodeToken(req.token);
    if (token instanceof Error) return refuse("unknown", `token unreadable: ${token.message}`);
    name = token.name;
    if (token.caFingerprint !== this.ca.fingerprint) return refuse("other-relay");
    const key = typeof req.key === "string" ? parsePublicKey(req.key) : undefined;
    if (!key || !signableKeyType(key.type)) return refuse("invalid", "no usable public key");
    const hostKeyTexts = Array.isArray(req.hostKeys) ? req.hostKeys : [];
    if (hostKeyTexts.length > MAX_HOST_KEYS) return refuse("invalid", `more than ${MAX_HOST_KEYS} host keys`);
    const hostKeys = hostKeyTexts.map((h) => (typeof h === "string" ? parsePublicKey(h) : undefined));
    if (hostKeys.some((h) => !h || !signableKeyType(h.type))) return refuse("invalid", "unusable host key");
    const now = this.hooks.now();
    let redeemed: Awaited<ReturnType<EnrollmentStore["redeem"]>>;
    try {
      redeemed = await this.store.redeem(tokenHash(token.secret), now.getTime());
    } catch {
      return refuse("unavailable");
    }
    if (!redeemed.ok) return refuse(redeemed.reason);
    // The store's name, not the token's: the token's JSON is the device's to edit, the hash is not.
    name = redeemed.token.name;
    const serial = randomSerial();
    const validBefore = new Date(now.getTime() + this.certValidityMs);
    const cert = signCertificate(this.ca, {
      publicKey: key.blob,
      certType: "user",
      keyId: `revtun:${name}:${serial}`,
      principals: [name],
      validAfter: new Date(now.getTime() - backdateMs(this.certValidityMs)),
      validBefore,
      serial,
      extensions: ["permit-port-forwarding"],
    });
    const hostCertificates = hostKeys.map((h) => {
      const hs = randomSerial();
      const blob = signCertificate(this.ca, {
        publicKey: (h as { blob: Buffer }).blob,
        certType: "host",
        keyId: `revtun:${name}:host:${hs}`,
        principals: [name],
        validAfter: new Date(now.getTime() - backdateMs(HOST_CERT_VALIDITY_MS)),
        validBefore: new Date(now.getTime() + HOST_CERT_VALIDITY_MS),
        serial: hs,
      });
      return certificateLine(blob, name);
    });
    const fingerprint = fingerprintSha256(key.blob);
    const device: DeviceRecord = {
      name,
      fingerprint,
      serial: serial.toString(),
      validBefore: validBefore.getTime(),
      enrolledAt: now.getTime(),
    };
    try {
      // Durable before the answer: an enrollment the device was told of survives a crash.
      await this.store.putDevice(device);
    } catch {
      return refuse("unavailable");
    }
    this.cache.set(name, device);
    this.hooks.record({ action: "enrolled", name, peer, fingerprint, serial: device.serial });
    return {
      ok: true,
      name,
      certificate: certificateLine(cert, name),
      hostCertificates,
      validBefore: Math.floor(validBefore.getTime() / 1000),
    };
  }

  /** A new certificate for the key of a session that logged in with one of ours for `name`. */
  async renew(name: string, keyBlob: Buffer, peer: string): Promise<RenewAnswer> {
    const fingerprint = fingerprintSha256(keyBlob);
    let device: DeviceRecord | undefined;
    try {
      device = await this.store.getDevice(name);
    } catch {
      return { ok: false, reason: "unavailable", message: "the relay cannot reach its enrollment store" };
    }
    if (!device || device.fingerprint !== fingerprint || device.revokedAt !== undefined) {
      const reason = device?.revokedAt !== undefined ? "revoked" : "unknown";
      this.hooks.record({ action: "renewal-refused", name, peer, fingerprint, reason });
      return {
        ok: false,
        reason,
        message: `${name} is ${reason === "revoked" ? "revoked" : "not enrolled with this key"}`,
      };
    }
    const now = this.hooks.now();
    const serial = randomSerial();
    const validBefore = new Date(now.getTime() + this.certValidityMs);
    const cert = signCertificate(this.ca, {
      publicKey: keyBlob,
      certType: "user",
      keyId: `revtun:${name}:${serial}`,
      principals: [name],
      validAfter: new Date(now.getTime() - backdateMs(this.certValidityMs)),
      validBefore,
      serial,
      extensions: ["permit-port-forwarding"],
    });
    const updated = { ...device, serial: serial.toString(), validBefore: validBefore.getTime() };
    try {
      await this.store.putDevice(updated);
    } catch {
      return { ok: false, reason: "unavailable", message: "the relay cannot reach its enrollment store" };
    }
    this.cache.set(name, updated);
    this.hooks.record({ action: "renewed", name, peer, fingerprint, serial: updated.serial });
    return {
      ok: true,
      certificate: certificateLine(cert, name),
      validBefore: Math.floor(validBefore.getTime() / 1000),
    };
  }

  async revoke(nameText: string): Promise<DeviceRecord | undefined> {
    const parsed = parseTunnelName(nameText);
    if ("error" in parsed)
      throw new RevtunError("USAGE", `name ${JSON.stringify(nameText)}: ${parsed.error}`);
    const d = await this.store.revoke(parsed.name, this.hooks.now().getTime());
    if (d) {
      this.cache.set(d.name, d);
      this.hooks.record({ action: "revoked", name: d.name, fingerprint: d.fingerprint });
      this.hooks.changed(d.name);
    }
    return d;
  }

  devices(): Promise<DeviceRecord[]> {
    return this.store.devices();
  }

  /** Whether a key offered at login is a certificate signed by this CA (then it is ours to decide). */
  owns(algo: string, blob: Buffer): boolean {
    if (!algo.endsWith("-cert-v01@openssh.com")) return false;
    try {
      return parseCertificate(blob).signatureKey.equals(this.ca.publicBlob);
    } catch {
      return false;
    }
  }

  /**
   * The shared certificate checker (src/shared/certificates, sshd's order:
   * type, this CA, its signature, validity, no unknown critical option),
   * then what enrollment adds: exactly one principal that is a tunnel name,
   * whose device record exists, is not revoked, and holds this very key.
   */
  async check(blob: Buffer): Promise<CertificateDecision> {
    let cert: Certificate;
    try {
      cert = parseCertificate(blob);
    } catch (err) {
      return { ok: false, reason: `unreadable certificate: ${(err as Error).message}` };
    }
    const fingerprint = fingerprintSha256(cert.publicKey);
    const no = (reason: string): CertificateDecision => ({ ok: false, reason, fingerprint });
    try {
      this.checker.check(cert, undefined);
    } catch (err) {
      return no((err as Error).message);
    }
    const name = cert.principals[0];
    if (cert.principals.length !== 1 || name === undefined || "error" in parseTunnelName(name))
      return no("certificate does not name one device");
    let device = this.cache.get(name);
    if (!device) {
      try {
        device = await this.store.getDevice(name);
      } catch {
        return no("enrollment store unreachable");
      }
      if (device) this.cache.set(name, device);
    }
    if (!device) return no(`${name} is not enrolled`);
    if (device.revokedAt !== undefined) return no(`${name} is revoked`);
    if (device.fingerprint !== fingerprint) return no(`${name} is enrolled with another key`);
    return {
      ok: true,
      name,
      cert,
      fingerprint,
      key: {
        line: 0,
        type: cert.keyType,
        blob: cert.publicKey,
        fingerprint,
        comment: `${name} (certificate ${cert.serial})`,
        // Its own name on any port, and nothing else (issue 21 item 1).
        options: {
          portForwarding: true,
          permitListen: [{ host: name, port: "any", text: `${name}:*` }],
          permitOpen: [],
          ignored: [],
        },
      },
    };
  }

  /** Whether a session that logged in as `name` with `fingerprint` may stay. */
  stillValid(name: string, fingerprint: string): boolean {
    const d = this.cache.get(name);
    return d !== undefined && d.revokedAt === undefined && d.fingerprint === fingerprint;
  }

  private async refresh(name: string): Promise<void> {
    try {
      const d = await this.store.getDevice(name);
      if (d) this.cache.set(name, d);
      else this.cache.delete(name);
    } catch {
      // Keep the cached record; the next change or login reads again.
    }
    this.hooks.changed(name);
  }
}

export { MESSAGES as ENROLL_REFUSAL_MESSAGES };
