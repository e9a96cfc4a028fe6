/**
 * The relay's host certificate (sshd's HostCertificate), checked once at
 * start: a relay that presented a certificate for another key, or an
 * expired one, would be refused by every client that trusts its CA, each
 * with a host key error far from the cause. Refused here instead, with
 * one line saying what to sign.
 */
import { quote } from "../shared/bounded-text.js";
import {
  CertChecker,
  type Certificate,
  isCertificateType,
  parseCertificate,
} from "../shared/certificates/index.js";
import { RevtunError } from "../shared/errors.js";
import { fingerprintSha256 } from "../shared/keys.js";

const SIGN_HINT = "sign it with ssh-keygen -s CA_KEY -h -I ID -n HOSTNAMES HOST_KEY.pub";

/**
 * Parses `text` (a `-cert.pub` line) and checks it presents `hostKeyBlob`
 * now. Throws RevtunError("CONFIG") with one line.
 */
export function checkHostCertificate(text: string, hostKeyBlob: Buffer, now: Date): Certificate {
  const [type = "", b64 = ""] = text.trim().split(/\s+/);
  if (!isCertificateType(type))
    throw new RevtunError(
      "CONFIG",
      `host certificate: ${quote(type)} is not an OpenSSH certificate type (give the -cert.pub file ssh-keygen -s -h wrote)`,
    );
  let cert: Certificate;
  try {
    cert = parseCertificate(Buffer.from(b64, "base64"));
  } catch (err) {
    throw new RevtunError("CONFIG", `host ${(err as Error).message}`, { cause: err });
  }
  if (cert.type !== type)
    throw new RevtunError(
      "CONFIG",
      `host certificate: the line says ${quote(type)} but holds a ${cert.type}`,
    );
  try {
    // The relay does not know its own CA: the clients' @cert-authority lines do.
    new CertChecker({ certType: "host", isAuthority: () => true, clock: () => now }).check(cert, undefined);
  } catch (err) {
    throw new RevtunError(
      "CONFIG",
      `host ${(err as Error).message}${/expired|not valid yet/.test((err as Error).message) ? `; ${SIGN_HINT}` : ""}`,
      {
        cause: err,
      },
    );
  }
  if (!cert.publicKey.equals(hostKeyBlob))
    throw new RevtunError(
      "CONFIG",
      `host certificate ${quote(cert.keyId)} certifies ${fingerprintSha256(cert.publicKey)}, not the relay's host key ${fingerprintSha256(hostKeyBlob)}; ${SIGN_HINT}`,
    );
  return cert;
}
