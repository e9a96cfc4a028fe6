/**
 * One checker for OpenSSH certificates, after Go's x/crypto/ssh CertChecker:
 * the policy is passed in (which CAs, which critical options, the clock),
 * the checks are OpenSSH's (sshkey.c sshkey_cert_check_authority,
 * auth2-pubkey.c, auth-options.c), and each failure is one sentence naming
 * the certificate and the value that failed. The relay checks user
 * certificates with it, the agent host certificates.
 *
 * Order: type, CA, CA signature, then revocation, validity, principal and
 * critical options. The signature comes before anything the certificate
 * says is believed: "expired" or "not a listed principal" about a forged
 * certificate would send a person after the wrong problem.
 */
import { boundText, quote } from "../bounded-text.js";
import { RevtunError } from "../errors.js";
import { fingerprintSha256 } from "../keys.js";
import { type Certificate, describeCertificate, describeTime } from "./certificate.js";
import { certificateSignatureAlgorithm, verifyCertificateSignature } from "./signature.js";

export interface CertPolicy {
  /** The kind of certificate wanted: a server checks "user", a client "host". */
  certType: "user" | "host";
  /** Whether `caBlob` (a plain public key blob) is a trusted CA for this use. */
  isAuthority(caBlob: Buffer): boolean;
  /** A reason when the certificate (or its key, or its CA) is revoked, else undefined. */
  isRevoked?(cert: Certificate): string | undefined;
  /**
   * Critical options the caller enforces; any other is refused (PROTOCOL.certkeys:
   * "if an implementation does not recognise an option, it MUST refuse").
   */
  supportedCriticalOptions?: string[];
  clock?: () => Date;
  /**
   * Seconds of clock skew forgiven at both ends of the validity window.
   * Default 0: sshd compares the window with time(NULL) as it is
   * (sshkey_cert_check_authority_now); CAs that expect skew back-date
   * valid-after instead (`ssh-keygen -V -5m:+1h`).
   */
  skewSeconds?: number;
  /**
   * CA signature algorithms accepted; default sshd's CASignatureAlgorithms
   * (OpenSSH 8.2+), which leaves out ssh-rsa (RSA with SHA-1).
   */
  caSignatureAlgorithms?: string[];
  /**
   * Refuse a certificate that lists no principals. Default false: sshd
   * accepts one on a cert-authority line for any user, and ssh for any
   * host (require_principal 0); TrustedUserCAKeys is the exception.
   */
  requirePrincipal?: boolean;
  /** What to do about an untrusted CA, appended to that refusal (the relay: which line admits one). */
  untrustedHint?: string;
}

/** sshd's default CASignatureAlgorithms, less the security-key types this module does not read. */
export const DEFAULT_CA_SIGNATURE_ALGORITHMS = [
  "ssh-ed25519",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "rsa-sha2-512",
  "rsa-sha2-256",
];

export class CertChecker {
  constructor(readonly policy: CertPolicy) {}

  /**
   * Throws RevtunError("CERTIFICATE", one line) unless `cert` passes for
   * `principal` (undefined: any principal, as for an authorized_keys line
   * with `principals=`, which the caller matches itself).
   */
  check(cert: Certificate, principal: string | undefined): void {
    const p = this.policy;
    const what = describeCertificate(cert);
    const fail = (reason: string) => {
      throw new RevtunError("CERTIFICATE", `${what} ${reason}`);
    };
    if (cert.certType !== p.certType)
      fail(
        `is a ${cert.certType} certificate; a ${p.certType} certificate is needed here (ssh-keygen -s${p.certType === "host" ? " -h" : " without -h"})`,
      );
    if (!p.isAuthority(cert.signatureKey))
      fail(
        `is signed by a CA that is not trusted here (${fingerprintSha256(cert.signatureKey)})${p.untrustedHint ? `; ${p.untrustedHint}` : ""}`,
      );
    const algorithm = certificateSignatureAlgorithm(cert);
    const allowed = p.caSignatureAlgorithms ?? DEFAULT_CA_SIGNATURE_ALGORITHMS;
    if (!allowed.includes(algorithm))
      fail(
        algorithm === "ssh-rsa"
          ? "is signed with ssh-rsa (RSA/SHA-1), which sshd refuses since OpenSSH 8.2; sign it again with ssh-keygen -t rsa-sha2-512"
          : `is signed with ${quote(algorithm)}, not one of ${allowed.join(", ")}`,
      );
    if (!verifyCertificateSignature(cert))
      fail("has a CA signature that does not verify (corrupted or forged)");
    const revoked = p.isRevoked?.(cert);
    if (revoked !== undefined) fail(`is revoked (${revoked})`);
    const nowMs = (p.clock ?? (() => new Date()))().getTime();
    const now = BigInt(Math.floor(nowMs / 1000));
    const skew = BigInt(Math.max(0, Math.floor(p.skewSeconds ?? 0)));
    // valid after is inclusive, valid before exclusive (sshkey.c).
    if (now + skew < cert.validAfter)
      fail(
        `is not valid yet: valid from ${describeTime(cert.validAfter)}, and it is ${describeTime(now)} here`,
      );
    if (now >= cert.validBefore + skew)
      fail(`expired at ${describeTime(cert.validBefore)} (it is ${describeTime(now)} here)`);
    if (p.requirePrincipal && cert.principals.length === 0)
      fail("lists no principals; sign it again with ssh-keygen -n NAME");
    if (principal !== undefined && cert.principals.length > 0 && !cert.principals.includes(principal))
      fail(
        `is not valid for ${quote(principal)}: its principals are ${cert.principals.map(quote).join(", ")}`,
      );
    const supported = p.supportedCriticalOptions ?? [];
    for (const name of cert.criticalOptions.keys()) {
      if (!supported.includes(name))
        fail(
          `has critical option ${quote(name)}, which is not supported here${supported.length ? ` (supported: ${supported.join(", ")})` : ""}; sign it again without -O ${boundText(name)}`,
        );
    }
  }
}
