/**
 * The SSH side of enrollment and renewal (docs/enrollment.md "The
 * handshake"): a `session` channel whose only accepted request is the
 * subsystem the session is allowed (`enroll@revtun` for a session that
 * logged in as revtun-enroll, `renew@revtun` for one that logged in with a
 * certificate of ours), then one JSON line each way, exit status 0, close.
 * The request line is bounded (64 KiB) and must arrive within the session's
 * own timers; everything else on the channel is refused by ssh2 itself (a
 * request with no listener is answered with failure).
 */
import type { ServerChannel } from "ssh2";

export const ENROLL_SUBSYSTEM = "enroll@revtun";
export const RENEW_SUBSYSTEM = "renew@revtun";
export const MAX_REQUEST_BYTES = 64 * 1024;

type AcceptSession = () => {
  on(
    event: "subsystem",
    fn: (accept: () => ServerChannel, reject: () => void, info: { name: string }) => void,
  ): unknown;
  once(event: "close", fn: () => void): unknown;
};

/**
 * Accepts one session channel for `subsystem` and answers its one request
 * line with `answer(line)`; `delayRefusal` is how long a refusal waits (the
 * relay's authentication failure delay, so guessing tokens is as slow as
 * guessing keys).
 */
export function serveSubsystem(
  acceptSession: AcceptSession,
  subsystem: string,
  answer: (line: string) => Promise<{ ok: boolean }>,
  timer: (ms: number, fn: () => void) => void,
  delayRefusal: () => number,
  /** After the answer is written (an enrollment connection is then closed). */
  answered: () => void = () => {},
): void {
  const session = acceptSession();
  session.on("subsystem", (accept, reject, info) => {
    if (info.name !== subsystem) {
      reject();
      return;
    }
    const stream = accept();
    let buffered = Buffer.alloc(0);
    let done = false;
    const reply = (body: object, ok: boolean) => {
      const send = () => {
        if (stream.destroyed) return;
        stream.write(`${JSON.stringify(body)}\n`);
        stream.exit(0);
        stream.end();
        answered();
      };
      if (ok) send();
      else timer(delayRefusal(), send);
    };
    stream.on("error", () => {});
    stream.on("data", (chunk: Buffer) => {
      if (done) return;
      buffered = Buffer.concat([buffered, chunk]);
      const nl = buffered.indexOf(10);
      if (nl < 0 && buffered.length <= MAX_REQUEST_BYTES) return;
      done = true;
      if (nl < 0 || nl > MAX_REQUEST_BYTES) {
        reply(
          { ok: false, reason: "invalid", message: `request longer than ${MAX_REQUEST_BYTES} bytes` },
          false,
        );
        return;
      }
      const line = buffered.subarray(0, nl).toString("utf8");
      void answer(line).then((body) => reply(body, body.ok));
    });
  });
}
