/**
 * Renewing a certificate the relay signed, over the agent's live session
 * (docs/enrollment.md "Renewal"): at the middle of the certificate's
 * validity the agent opens the `renew@revtun` subsystem, the relay signs
 * the session's own key for the session's own name again, and the new
 * certificate replaces `IDENTITY-cert.pub` atomically (the next login uses
 * it). A failure is retried every minute, or sooner near expiry; a relay
 * that does not renew (not ours, or the login was no certificate of its
 * CA) refuses the channel and is not asked again on this session.
 */
import { readFile } from "node:fs/promises";
import type { ClientChannel } from "ssh2";
import { RENEW_SUBSYSTEM } from "../relay/enrollment/enrollment-channel.js";
import { parseCertificate } from "../shared/certificates/index.js";
import { writeFileAtomic } from "../shared/write-atomic.js";

/** What the tunnel reports (its `certificate` event). */
export interface CertificateEvent {
  action: "renewed" | "renewal-failed" | "expired";
  file: string;
  validBefore?: Date;
  message: string;
}

const RETRY_MS = 60_000;
const ANSWER_TIMEOUT_MS = 30_000;
const MAX_ANSWER = 64 * 1024;

interface Held {
  file: string;
  publicKey: Buffer;
  validAfter: number;
  validBefore: number;
}

/** The user certificates in `files` (IDENTITY-cert.pub, CertificateFile), as far as readable. */
async function certificatesOf(files: string[]): Promise<Held[]> {
  const out: Held[] = [];
  for (const file of files) {
    const text = await readFile(file, "utf8").catch(() => undefined);
    const b64 = text?.trim().split(/\s+/)[1];
    if (!b64) continue;
    try {
      const c = parseCertificate(Buffer.from(b64, "base64"));
      if (c.certType !== "user") continue;
      out.push({
        file,
        publicKey: c.publicKey,
        validAfter: Number(c.validAfter) * 1000,
        validBefore: Number(c.validBefore) * 1000,
      });
    } catch {
      // Not a certificate we can read: not ours to renew.
    }
  }
  return out;
}

/**
 * One line for a login refused while a certificate beside an identity has
 * expired: the device was offline past its validity and must enroll again.
 */
export async function expiredCertificateHint(
  certificateFiles: string[],
  now = Date.now(),
): Promise<string | undefined> {
  const expired = (await certificatesOf(certificateFiles)).find((c) => c.validBefore <= now);
  if (!expired) return undefined;
  return `certificate ${expired.file} expired at ${new Date(expired.validBefore).toISOString()}: enroll again with a new token (revtun relay token --name NAME, then revtun enroll --token-file FILE -i ${expired.file.replace(/-cert\.pub$/, "")} RELAY)`;
}

/**
 * Runs renewals for one session until `stop()`. `open` opens the subsystem
 * on the live session.
 */
export function renewCertificates(o: {
  /** The certificates the session may have logged in with. */
  certificateFiles: string[];
  open: (subsystem: string) => Promise<ClientChannel>;
  report: (e: CertificateEvent) => void;
  now?: () => number;
}): { stop(): void } {
  const now = o.now ?? Date.now;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const schedule = (ms: number) => {
    if (stopped) return;
    timer = setTimeout(() => void attempt(), Math.max(1_000, ms));
    timer.unref();
  };
  const plan = async () => {
    const held = (await certificatesOf(o.certificateFiles)).filter((c) => c.validBefore > now());
    if (held.length === 0) return;
    const due = Math.min(...held.map((c) => (c.validAfter + c.validBefore) / 2));
    schedule(due - now());
  };
  const attempt = async () => {
    if (stopped) return;
    const held = await certificatesOf(o.certificateFiles);
    let channel: ClientChannel;
    try {
      channel = await o.open(RENEW_SUBSYSTEM);
    } catch {
      // The relay does not renew for this session: not asked again until the next one.
      return;
    }
    const answer: Record<string, unknown> = await readAnswer(channel).catch((err: Error) => ({
      ok: false,
      message: err.message,
    }));
    if (stopped) return;
    const cert = typeof answer.certificate === "string" ? answer.certificate : "";
    const blob = cert.split(" ")[1];
    let target: Held | undefined;
    if (answer.ok === true && blob) {
      try {
        const key = parseCertificate(Buffer.from(blob, "base64")).publicKey;
        target = held.find((h) => h.publicKey.equals(key));
      } catch {
        target = undefined;
      }
    }
    if (!target) {
      const soonest = Math.min(...held.map((h) => h.validBefore));
      o.report({
        action: "renewal-failed",
        file: held[0]?.file ?? "",
        message: `certificate renewal failed: ${String(answer.message ?? "the relay's answer is not a certificate for this key")}`,
      });
      if (answer.reason !== "revoked") schedule(Math.min(RETRY_MS, (soonest - now()) / 4));
      return;
    }
    await writeFileAtomic(target.file, `${cert}\n`, 0o644);
    const validBefore = new Date(Number(answer.validBefore) * 1000);
    o.report({
      action: "renewed",
      file: target.file,
      validBefore,
      message: `certificate ${target.file} renewed, valid until ${validBefore.toISOString()}`,
    });
    await plan();
  };
  void plan();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

function readAnswer(channel: ClientChannel): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const t = setTimeout(() => {
      channel.destroy();
      reject(new Error(`no answer within ${ANSWER_TIMEOUT_MS} ms`));
    }, ANSWER_TIMEOUT_MS);
    channel.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const nl = buf.indexOf(10);
      if (nl < 0 && buf.length < MAX_ANSWER) return;
      clearTimeout(t);
      channel.close();
      try {
        const v = JSON.parse(buf.subarray(0, nl < 0 ? buf.length : nl).toString("utf8"));
        resolve(typeof v === "object" && v !== null ? v : {});
      } catch {
        reject(new Error("the relay's answer is not JSON"));
      }
    });
    channel.stderr.on("data", () => {});
    channel.on("close", () => {
      clearTimeout(t);
      reject(new Error("the relay closed the renewal channel without an answer"));
    });
    channel.end(`${JSON.stringify({ v: 1 })}\n`);
  });
}
