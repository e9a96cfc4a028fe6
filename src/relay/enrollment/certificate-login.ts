/**
 * A login with a certificate this relay's CA signed: the certificate checked
 * by the enrollment service (enrollment.ts check), then the session's
 * signature made with the certified key. relay/authentication.ts calls this
 * for any key Enrollment.owns and does the rest (limits, the answer).
 */
import type { PublicKeyAuthContext } from "ssh2";
import type { AuthorizedKey } from "../authorized-keys.js";
import { verifySshSignature } from "./certificate-check.js";
import type { Enrollment } from "./enrollment.js";

/** The user name `revtun enroll` logs in as, with method none (docs/enrollment.md). */
export const ENROLL_USER = "revtun-enroll";

export type CertificateLogin =
  | { ok: true; signed: boolean; name: string; key: AuthorizedKey; fingerprint: string; serial: string }
  | { ok: false; reason: string; fingerprint?: string };

export async function certificateLogin(
  enrollment: Enrollment,
  ctx: PublicKeyAuthContext,
): Promise<CertificateLogin> {
  const decision = await enrollment.check(ctx.key.data);
  if (!decision.ok) return decision;
  const { name, key, fingerprint } = decision;
  const serial = decision.cert.serial.toString();
  // RFC 4252 7: no signature is the client asking whether this key would do.
  if (!ctx.signature || !ctx.blob) return { ok: true, signed: false, name, key, fingerprint, serial };
  if (!verifySshSignature(decision.cert.publicKey, ctx.blob, ctx.signature, ctx.key.algo))
    return { ok: false, reason: "bad signature", fingerprint };
  return { ok: true, signed: true, name, key, fingerprint, serial };
}
