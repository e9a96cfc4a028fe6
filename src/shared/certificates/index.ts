/**
 * OpenSSH certificates for both halves of revtun: parsing (certificate.ts),
 * the CA's signature (signature.ts), one checker with the caller's policy
 * (checker.ts), and revocation lists (krl.ts, revoked-keys.ts). The relay
 * checks user certificates, the agent host certificates.
 */
export {
  type Certificate,
  describeCertificate,
  describeTime,
  FOREVER,
  isCertificateType,
  parseCertificate,
  plainKeyType,
} from "./certificate.js";
export { CertChecker, type CertPolicy, DEFAULT_CA_SIGNATURE_ALGORITHMS } from "./checker.js";
export { isKrl, type Krl, krlRevokes, parseKrl } from "./krl.js";
export { loadRevokedKeys, parseRevokedKeys, type RevocationList, revocationList } from "./revoked-keys.js";
export {
  parseSignatureBlob,
  publicKeyObject,
  signatureFitsKey,
  verifyCertificateSignature,
  verifySshSignature,
} from "./signature.js";
