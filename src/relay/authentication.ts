/**
 * Public-key authentication of one relay session (RFC 4252): the key must be
 * in authorized_keys for this peer address and time, the signature algorithm
 * must fit the key, the signature must verify, and the key must be under its
 * session limit. Failures are answered late and alike.
 */
import type { AuthContext, PublicKeyAuthContext } from "ssh2";
import { fingerprintSha256, keyTypeOf, parseKeyText } from "../shared/keys.js";
import type { AuthorizedKey } from "./authorized-keys.js";
import type { RelayEvents } from "./events.js";
import type { RelayMetrics } from "./metrics.js";
import type { ResolvedRelayOptions } from "./options.js";
import { algorithmFitsKey, type KeyDecision } from "./policy.js";

/** What authentication needs of the relay. */
export interface AuthHost {
  readonly options: ResolvedRelayOptions;
  readonly metrics: RelayMetrics;
  authorize(blob: Buffer, peerIp: string): KeyDecision;
  sessionsForKey(fingerprint: string): number;
  emit<K extends keyof RelayEvents>(event: K, ...args: RelayEvents[K]): boolean;
}

/** What authentication needs of its session. */
export interface AuthSession {
  readonly ip: string;
  readonly peer: string;
  /** Runs `fn` after `ms` unless the session ends first. */
  timer(ms: number, fn: () => void): void;
  close(reason: string): void;
}

export interface Authenticated {
  key: AuthorizedKey;
  blob: Buffer;
  fingerprint: string;
}

export class SessionAuthentication {
  private failures = 0;
  /** Set once a key has been accepted. */
  accepted: Authenticated | undefined;

  constructor(
    private readonly host: AuthHost,
    private readonly session: AuthSession,
  ) {}

  handle(ctx: AuthContext): void {
    if (ctx.method === "none") {
      // The probe every client starts with; answering it lists the methods.
      ctx.reject(["publickey"]);
      return;
    }
    if (ctx.method !== "publickey") {
      this.refuse(ctx, `${ctx.method} authentication is not offered`);
      return;
    }
    this.publicKey(ctx);
  }

  private publicKey(ctx: PublicKeyAuthContext): void {
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
    const max = this.host.options.limits.maxSessionsPerKey;
    if (this.host.sessionsForKey(fingerprint) >= max) {
      this.refuse(ctx, `too many sessions for this key (limit ${max})`, fingerprint);
      return;
    }
    this.accepted = { key: decision.key, blob, fingerprint };
    ctx.accept();
  }

  /**
   * Answers a failed attempt only after a delay, so guessing is slow and the
   * answer's timing does not say which check failed.
   */
  private refuse(ctx: AuthContext, reason: string, fingerprint?: string): void {
    this.failures++;
    this.host.metrics.authFailures.inc({ reason: reasonLabel(reason) });
    this.host.emit("auth-refused", {
      peer: this.session.peer,
      ...(fingerprint ? { fingerprint, keyType: keyTypeOf((ctx as PublicKeyAuthContext).key.data) } : {}),
      method: ctx.method,
      username: ctx.username,
      reason,
    });
    const mean = this.host.options.authFailureDelayMs;
    const tooMany = this.failures >= this.host.options.limits.maxAuthAttempts;
    this.session.timer(mean * (0.6 + Math.random() * 0.8), () => {
      ctx.reject(["publickey"]);
      if (tooMany) this.session.close(`too many authentication failures (${this.failures})`);
    });
  }
}

/** A bounded label set for the auth-failure counter. */
function reasonLabel(reason: string): string {
  if (reason === "unknown-key" || reason === "from-not-allowed" || reason === "expired") return reason;
  if (reason === "bad signature") return "bad-signature";
  if (reason.startsWith("too many sessions")) return "session-limit";
  if (reason.endsWith("is not offered")) return "method";
  return "other";
}
