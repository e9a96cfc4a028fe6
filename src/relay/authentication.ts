/**
 * Public-key authentication of one relay session (RFC 4252): the key must be
 * in authorized_keys for this peer address and time, the signature algorithm
 * must fit the key, the signature must verify, and the key must be under its
 * session limit. Failures are answered late and alike.
 */
import type { AuthContext, PublicKeyAuthContext } from "ssh2";
import { boundText, quote } from "../shared/bounded-text.js";
import {
  type Certificate,
  isCertificateType,
  parseCertificate,
  parseSignatureBlob,
  signatureFitsKey,
  verifySshSignature,
} from "../shared/certificates/index.js";
import { sshString } from "../shared/certificates/wire.js";
import { fingerprintSha256, keyTypeOf, parseKeyText } from "../shared/keys.js";
import type { AuthorizedKey } from "./authorized-keys.js";
import { certificateLogin, ENROLL_USER } from "./enrollment/certificate-login.js";
import type { Enrollment } from "./enrollment/enrollment.js";
import type { RelayEvents } from "./events.js";
import { type CertificateFields, certificateFields } from "./events.js";
import type { RelayMetrics } from "./metrics.js";
import type { ResolvedRelayOptions } from "./options.js";
import { algorithmFitsKey, certifiedFingerprint, type KeyDecision } from "./policy.js";

/** What authentication needs of the relay. */
export interface AuthHost {
  readonly options: ResolvedRelayOptions;
  readonly metrics: RelayMetrics;
  authorize(blob: Buffer, peerIp: string): KeyDecision;
  /** Admits a user certificate for `username` (policy.ts authorizeCertificate, with the relay's lines and revocations). */
  authorizeCertificate(cert: Certificate, peerIp: string, username: string): KeyDecision;
  sessionsForKey(fingerprint: string): number;
  /** Whether `key` is the fleet key's line (a peer relay): held to maxPeerSessions instead. */
  isPeer(key: AuthorizedKey): boolean;
  /** Records a failure from `source`; returns the extra delay its refusal gets. */
  penalize(source: string): number;
  /** Takes back `failures` failures of `source`: they were a client trying its keys before the right one. */
  forgive(source: string, failures: number): void;
  emit<K extends keyof RelayEvents>(event: K, ...args: RelayEvents[K]): boolean;
  /** With --ca-key: enrollment logins and certificates this relay signed. */
  readonly enrollment?: Enrollment | undefined;
}

/** What authentication needs of its session. */
export interface AuthSession {
  readonly ip: string;
  /** What per-source penalties count by: the address, or an IPv6 /64. */
  readonly source: string;
  readonly peer: string;
  /** Runs `fn` after `ms` unless the session ends first. */
  timer(ms: number, fn: () => void): void;
  close(reason: string): void;
}

export interface Authenticated {
  key: AuthorizedKey;
  /** What the client sent: a plain key blob, or the whole certificate. */
  blob: Buffer;
  /** Of the plain key (for a certificate, the certified key's), as sshd logs it. */
  fingerprint: string;
  certificate?: Certificate;
  /** The login name as sent (a certificate's principal is checked against it again at reloads). */
  username: string;
  /** The device name, when the key was a certificate this relay's CA signed (enrollment). */
  enrolledName?: string;
}

export class SessionAuthentication {
  private failures = 0;
  /** Set once a key has been accepted. */
  accepted: Authenticated | undefined;
  /** Set when the client logged in to enroll (docs/enrollment.md): it stays unauthenticated. */
  enrolling = false;

  constructor(
    private readonly host: AuthHost,
    private readonly session: AuthSession,
  ) {}

  handle(ctx: AuthContext): void {
    if (ctx.method === "none") {
      if (this.host.enrollment && ctx.username === ENROLL_USER) {
        // Enrollment: the token is the credential, sent inside the session (enrollment-channel.ts).
        this.enrolling = true;
        ctx.accept();
        return;
      }
      // The probe every client starts with; answering it lists the methods.
      ctx.reject(["publickey"]);
      return;
    }
    if (ctx.method !== "publickey") {
      this.refuse(ctx, `${boundText(ctx.method)} authentication is not offered`);
      return;
    }
    this.publicKey(ctx);
  }

  private publicKey(ctx: PublicKeyAuthContext): void {
    const enrollment = this.host.enrollment;
    if (enrollment?.owns(ctx.key.algo, ctx.key.data)) {
      void this.enrolledDevice(ctx, enrollment);
      return;
    }
    if (isCertificateType(keyTypeOf(ctx.key.data))) {
      this.certificate(ctx);
      return;
    }
    const blob = ctx.key.data;
    const fingerprint = fingerprintSha256(blob);
    const decision = this.host.authorize(blob, this.session.ip);
    if (!decision.ok) {
      this.refuse(ctx, decision.reason, fingerprint);
      return;
    }
    if (!algorithmFitsKey(ctx.key.algo, decision.key.type)) {
      this.refuse(
        ctx,
        `signature algorithm ${ctx.key.algo} does not fit a ${decision.key.type} key`,
        fingerprint,
      );
      return;
    }
    // RFC 4252 7: without a signature the client only asks whether this key
    // would do; answering PK_OK for a listed key costs nothing and saves it a
    // signature (and an agent prompt) for keys that would not.
    if (!ctx.signature || !ctx.blob) {
      ctx.accept();
      return;
    }
    const key = parseKeyText(blob);
    if (key instanceof Error) {
      this.refuse(ctx, "unreadable public key", fingerprint);
      return;
    }
    // verify() returns an Error for malformed input: only `true` is a pass.
    if (key.verify(ctx.blob, ctx.signature, ctx.hashAlgo) !== true) {
      this.refuse(ctx, "bad signature", fingerprint);
      return;
    }
    this.admit(ctx, { key: decision.key, blob, fingerprint, username: ctx.username });
  }

  /**
   * A user certificate (ctx.key.data is the whole certificate). ssh2 1.17
   * hands it over unverified, with the signature as the client wrote it:
   * OpenSSH puts the plain algorithm name in front (`ssh-ed25519`, or
   * `rsa-sha2-512` for `rsa-sha2-512-cert-v01@openssh.com`), which ssh2
   * only strips when it equals the certificate type, and ECDSA stays as
   * SSH mpints (ssh2 converts to DER for plain key types only). So the
   * signature is taken whole when it parses as a signature blob, else
   * rebuilt from the algorithm the request names.
   */
  private certificate(ctx: PublicKeyAuthContext): void {
    let cert: Certificate;
    try {
      cert = parseCertificate(ctx.key.data);
    } catch (err) {
      this.refuse(ctx, (err as Error).message, fingerprintSha256(ctx.key.data));
      return;
    }
    const fingerprint = certifiedFingerprint(cert);
    const fields = certificateFields(cert);
    const decision = this.host.authorizeCertificate(cert, this.session.ip, ctx.username);
    if (!decision.ok) {
      this.refuse(ctx, decision.reason, fingerprint, fields);
      return;
    }
    // The request names rsa-sha2-512-cert-v01@openssh.com for an RSA
    // certificate signing with rsa-sha2-512 (PROTOCOL.certkeys); others
    // name the certificate type itself.
    const algo = ctx.key.algo;
    const sigAlgo = algo === cert.type ? cert.keyType : algo.replace(/-cert-v01@openssh\.com$/, "");
    if (!algo.endsWith("-cert-v01@openssh.com") || !signatureFitsKey(sigAlgo, cert.keyType)) {
      this.refuse(
        ctx,
        `signature algorithm ${boundText(algo)} does not fit a ${cert.type} certificate`,
        fingerprint,
        fields,
      );
      return;
    }
    // RSA with SHA-1: sshd 8.8 and later refuse it (PubkeyAcceptedAlgorithms), for certificates too.
    if (sigAlgo === "ssh-rsa") {
      this.refuse(
        ctx,
        `certificate ${quote(cert.keyId)} was offered for ssh-rsa (RSA/SHA-1) signatures, which sshd refuses since OpenSSH 8.8; use rsa-sha2-512 (PubkeyAcceptedAlgorithms)`,
        fingerprint,
        fields,
      );
      return;
    }
    if (!ctx.signature || !ctx.blob) {
      ctx.accept();
      return;
    }
    const parsed = parseSignatureBlob(ctx.signature);
    const signature =
      parsed && parsed.algorithm === sigAlgo
        ? ctx.signature
        : Buffer.concat([sshString(sigAlgo), sshString(ctx.signature)]);
    if (!verifySshSignature(cert.publicKey, signature, ctx.blob)) {
      this.refuse(ctx, "bad signature", fingerprint, fields);
      return;
    }
    this.admit(
      ctx,
      { key: decision.key, blob: ctx.key.data, fingerprint, certificate: cert, username: ctx.username },
      fields,
    );
  }

  /** A certificate this relay's CA signed (enrollment/certificate-login.ts). */
  private async enrolledDevice(ctx: PublicKeyAuthContext, enrollment: Enrollment): Promise<void> {
    const login = await certificateLogin(enrollment, ctx);
    if (!login.ok) return this.refuse(ctx, login.reason, login.fingerprint);
    if (!login.signed) return ctx.accept();
    const { key, fingerprint, name, cert } = login;
    const accepted = { key, blob: ctx.key.data, fingerprint, certificate: cert, username: ctx.username };
    this.admit(ctx, { ...accepted, enrolledName: name }, certificateFields(cert));
  }

  /** The per-key session limit, then acceptance. */
  private admit(ctx: PublicKeyAuthContext, accepted: Authenticated, fields?: CertificateFields): void {
    const { fingerprint } = accepted;
    const peer = this.host.isPeer(accepted.key);
    const max = peer ? this.host.options.limits.maxPeerSessions : this.host.options.limits.maxSessionsPerKey;
    if (this.host.sessionsForKey(fingerprint) >= max) {
      this.refuse(
        ctx,
        `too many ${peer ? "fleet peer sessions" : "sessions for this key"} (limit ${max})`,
        fingerprint,
        fields,
      );
      return;
    }
    this.accepted = accepted;
    // An agent that offers other keys first (ssh-agent, several -i) fails
    // before it succeeds; left on the books, a reconnecting agent's own
    // failures would pile up into delays past the handshake timeout.
    if (this.failures) this.host.forgive(this.session.source, this.failures);
    ctx.accept();
  }

  /**
   * Answers a failed attempt only after a delay, so guessing is slow and the
   * answer's timing does not say which check failed.
   */
  private refuse(ctx: AuthContext, reason: string, fingerprint?: string, cert?: CertificateFields): void {
    this.failures++;
    this.host.metrics.authFailures.inc({ reason: reasonLabel(reason) });
    this.host.emit("auth-refused", {
      peer: this.session.peer,
      ...(fingerprint ? { fingerprint, keyType: keyTypeOf((ctx as PublicKeyAuthContext).key.data) } : {}),
      ...cert,
      method: boundText(ctx.method),
      username: boundText(ctx.username),
      reason,
    });
    const mean = this.host.options.authFailureDelayMs;
    const penalty = this.host.penalize(this.session.source);
    const tooMany = this.failures >= this.host.options.limits.maxAuthAttempts;
    this.session.timer(mean * (0.6 + Math.random() * 0.8) + penalty, () => {
      ctx.reject(["publickey"]);
      if (tooMany) this.session.close(`too many authentication failures (${this.failures})`);
    });
  }
}

/** A bounded label set for the auth-failure counter. */
function reasonLabel(reason: string): string {
  if (
    reason === "unknown-key" ||
    reason === "from-not-allowed" ||
    reason === "expired" ||
    reason === "revoked"
  )
    return reason;
  if (reason.startsWith("certificate ")) return "certificate";
  if (reason === "bad signature") return "bad-signature";
  if (/^too many (sessions|fleet peer sessions)/.test(reason)) return "session-limit";
  if (reason.endsWith("is not offered")) return "method";
  return "other";
}

/**
 * Recent authentication failures per source address, for a delay that grows
 * with them (issue 12 item 10: 20 connections from one address made 51
 * attempts a second; only the per-connection cap held). The count decays
 * exponentially (time constant `decayMs`), so an address that stops failing
 * is forgiven, and the table forgets the least recently failing address
 * beyond `maxSources`, so an attacker with many addresses costs bounded
 * memory. Only the failing address is slowed: another one is answered at the
 * normal delay, a success is never delayed, and the failures of a
 * connection that then authenticates are taken back.
 */
export class SourcePenalties {
  /** Insertion order is recency: a touched entry is moved to the end. */
  private readonly sources = new Map<string, { score: number; at: number }>();

  constructor(
    private readonly o: { stepMs: number; maxMs: number; decayMs: number; maxSources: number },
    private readonly now: () => number = Date.now,
  ) {}

  get size(): number {
    return this.sources.size;
  }

  /** Failures from `ip` so far, decayed to now. */
  score(ip: string): number {
    const e = this.sources.get(ip);
    return e ? e.score * Math.exp(-(this.now() - e.at) / this.o.decayMs) : 0;
  }

  /** Takes `n` failures off `ip`'s decayed count. */
  forgive(ip: string, n: number): void {
    const score = this.score(ip) - n;
    if (score <= 0.01) this.sources.delete(ip);
    else this.sources.set(ip, { score, at: this.now() });
  }

  /** Records one failure from `ip` and returns the delay it earns: earlier failures × step, capped. */
  fail(ip: string): number {
    if (this.o.stepMs === 0) return 0;
    const before = this.score(ip);
    this.sources.delete(ip);
    this.sources.set(ip, { score: before + 1, at: this.now() });
    if (this.sources.size > this.o.maxSources) {
      const oldest = this.sources.keys().next().value;
      if (oldest !== undefined) this.sources.delete(oldest);
    }
    return Math.min(this.o.maxMs, before * this.o.stepMs);
  }
}
