/**
 * A login with a certificate this relay's CA signed: the certificate checked
 * by the enrollment service (enrollment.ts check), then the session's
 * signature made with the certified key. relay/authentication.ts calls this
 * for any key Enrollment.owns and does the rest (limits, the answer).
 */
import type { PublicKeyAuthContext } from "ssh2";
import { type Certificate, parseSignatureBlob, verifySshSignature } from "../../shared/certificates/index.js";
import type { AuthorizedKey } from "../authorized-keys.js";
import type { Enrollment } from "./enrollment.js";
import { WireWriter } from "./ssh-wire.js";

/** The user name `revtun enroll` logs in as, with method none (docs/enrollment.md). */
export const ENROLL_USER = "revtun-enroll";

export type CertificateLogin =
  | { ok: true; signed: boolean; name: string; key: AuthorizedKey; fingerprint: string; cert: Certificate }
  | { ok: false; reason: string; fingerprint?: string };

export async function certificateLogin(
  enrollment: Enrollment,
  ctx: PublicKeyAuthContext,
): Promise<CertificateLogin> {
  const decision = await enrollment.check(ctx.key.data);
  if (!decision.ok) return decision;
  const { name, key, fingerprint } = decision;
  const cert = decision.cert;
  // RFC 4252 7: no signature is the client asking whether this key would do.
  if (!ctx.signature || !ctx.blob) return { ok: true, signed: false, name, key, fingerprint, cert };
  if (!verifySshSignature(decision.cert.publicKey, signatureBlob(ctx.signature, ctx.key.algo), ctx.blob))
    return { ok: false, reason: "bad signature", fingerprint };
  return { ok: true, signed: true, name, key, fingerprint, cert };
}

/**
 * The signature as its SSH blob. ssh2's server strips the blob's algorithm
 * name when it equals the request's (lib/protocol/handlers.misc.js), which
 * for a certificate is a client that wrote the certificate's name inside the
 * signature (unpatched ssh2); OpenSSH and src/ssh2/user-certificate.ts write
 * the plain algorithm, which ssh2 leaves in place.
 */
function signatureBlob(signature: Buffer, algo: string): Buffer {
  if (parseSignatureBlob(signature)) return signature;
  const plain = algo.replace(/-cert-v01@openssh\.com$/, "");
  return new WireWriter().string(plain).string(signature).toBuffer();
}
