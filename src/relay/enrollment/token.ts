/**
 * The enrollment token (docs/enrollment.md "The token"): one line,
 * `revtun-enroll-1.` + base64url(JSON), carrying the name, a 32-byte secret,
 * its expiry, the CA's fingerprint (which fleet) and the relays' host key
 * fingerprints (what the device checks before it sends the token). The relay
 * keeps only SHA-256 of the secret.
 */
import { createHash, randomBytes } from "node:crypto";
import { parseTunnelName } from "../names.js";

export const TOKEN_PREFIX = "revtun-enroll-1.";
/** A token line longer than this is not one (a fleet of 50 relays makes about 3.3 KB). */
export const MAX_TOKEN_LENGTH = 8192;
const FINGERPRINT = /^SHA256:[A-Za-z0-9+/]{43}$/;

export interface EnrollmentToken {
  name: string;
  /** base64url of 32 random bytes. */
  secret: string;
  expiresAt: Date;
  /** SHA256 fingerprint of the CA public key. */
  caFingerprint: string;
  /** SHA256 fingerprints the relay's host key must be one of. */
  hostKeyFingerprints: string[];
}

export function newToken(o: {
  name: string;
  ttlMs: number;
  caFingerprint: string;
  hostKeyFingerprints: string[];
  now?: Date;
}): EnrollmentToken {
  return {
    name: o.name,
    secret: randomBytes(32).toString("base64url"),
    expiresAt: new Date(Math.floor(((o.now ?? new Date()).getTime() + o.ttlMs) / 1000) * 1000),
    caFingerprint: o.caFingerprint,
    hostKeyFingerprints: [...new Set(o.hostKeyFingerprints)],
  };
}

export function encodeToken(t: EnrollmentToken): string {
  const json = JSON.stringify({
    n: t.name,
    s: t.secret,
    x: Math.floor(t.expiresAt.getTime() / 1000),
    c: t.caFingerprint,
    h: t.hostKeyFingerprints,
  });
  return TOKEN_PREFIX + Buffer.from(json).toString("base64url");
}

/** The token in `text` (surrounding white space ignored), or why it is not one, as a phrase. */
export function decodeToken(text: string): EnrollmentToken | Error {
  const line = text.trim();
  if (line.length > MAX_TOKEN_LENGTH) return new Error(`longer than ${MAX_TOKEN_LENGTH} characters`);
  if (!line.startsWith(TOKEN_PREFIX)) return new Error(`it does not start with ${TOKEN_PREFIX}`);
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(Buffer.from(line.slice(TOKEN_PREFIX.length), "base64url").toString("utf8"));
  } catch {
    return new Error("its body is not base64url JSON");
  }
  if (typeof v !== "object" || v === null) return new Error("its body is not a JSON object");
  const name = typeof v.n === "string" ? parseTunnelName(v.n) : { error: "no name" };
  if ("error" in name) return new Error(`bad name: ${name.error}`);
  if (typeof v.s !== "string" || Buffer.from(v.s, "base64url").length !== 32) return new Error("bad secret");
  if (typeof v.x !== "number" || !Number.isInteger(v.x)) return new Error("bad expiry");
  if (typeof v.c !== "string" || !FINGERPRINT.test(v.c)) return new Error("bad CA fingerprint");
  const h = v.h;
  if (!Array.isArray(h) || h.length === 0 || !h.every((f) => typeof f === "string" && FINGERPRINT.test(f)))
    return new Error("bad host key fingerprints");
  return {
    name: name.name,
    secret: v.s,
    expiresAt: new Date(v.x * 1000),
    caFingerprint: v.c,
    hostKeyFingerprints: h as string[],
  };
}

/** What the relay stores and looks tokens up by: hex SHA-256 of the secret. */
export function tokenHash(secret: string): string {
  return createHash("sha256").update(secret).digest("hex");
}
