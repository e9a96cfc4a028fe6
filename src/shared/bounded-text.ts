/**
 * Client-supplied text on its way into a log record or an event: a bounded
 * prefix, an ellipsis and the original length, so `aaaa…(100000 chars)`
 * still says what was sent without storing it. Measured before (issue 12
 * item 1): a 100 KB user name, logged whole on each refused attempt, grew
 * the relay's log by 120 MB from 138 KB sent (zlib-compressed).
 */

/** Prefix kept of names a peer chooses: user name, method, bind address, client version. */
export const CLIENT_TEXT_MAX = 64;
/** Prefix kept of any other text field (reasons and errors, which may quote the peer). */
export const RECORD_TEXT_MAX = 256;

/** Fields of relay records whose value the peer chose outright. */
const CLIENT_FIELDS = new Set([
  "username",
  "method",
  "address",
  "clientVersion",
  "type",
  // A refused certificate's fields are whatever its sender wrote.
  "certKeyId",
  "certPrincipals",
]);

/**
 * Control characters a terminal or a line-based log shipper would act on:
 * C0 (newline, carriage return, ESC...), DEL, C1, and the Unicode line and
 * paragraph separators. Peers choose some of what is logged (a pre-auth
 * disconnect description, a tcpip-forward bind address), and a raw newline
 * there let a client forge a whole line such as
 * `19:99:99.000 INFO session 1 opened: SHA256:FORGED` (issue 12 item 6).
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
const NAMED: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

/** `s` with every control character written as `\n`, `\r`, `\t` or `\xHH` / `\uHHHH`. */
export function escapeControl(s: string): string {
  return s.replace(CONTROL, (c) => {
    const named = NAMED[c];
    if (named) return named;
    const code = c.charCodeAt(0);
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16)}`;
  });
}

/**
 * `text` if it is at most `max` characters; otherwise its first `max`, `…`
 * and `(N chars)`. Control characters are escaped (escapeControl), so a peer's string can
 * never start a forged line in a text log.
 */
export function boundText(text: string, max = CLIENT_TEXT_MAX): string {
  const head = text.length <= max ? text : text.slice(0, max);
  const safe = escapeControl(head);
  if (text.length <= max && safe.length <= max) return safe;
  return `${safe.slice(0, max)}…(${text.length} chars)`;
}

/** Room for the `…(N chars)` a bounded string ends with, so bounding twice changes nothing. */
const SUFFIX_ROOM = 24;

function boundOnce(text: string, max: number): string {
  CONTROL.lastIndex = 0;
  if (text.length <= max + SUFFIX_ROOM && !CONTROL.test(text)) return text;
  return boundText(text, max);
}

/**
 * A record with every string field (and string in an array field) bounded:
 * CLIENT_TEXT_MAX for the fields a peer names, RECORD_TEXT_MAX for the rest.
 * The relay applies it to every event it emits, so no code path can forget.
 */
export function boundRecord<T>(record: T): T {
  if (record === null || typeof record !== "object" || Array.isArray(record)) return record;
  let out: Record<string, unknown> | undefined;
  for (const [k, v] of Object.entries(record)) {
    const max = CLIENT_FIELDS.has(k) ? CLIENT_TEXT_MAX : RECORD_TEXT_MAX;
    let b: unknown = v;
    if (typeof v === "string") b = boundOnce(v, max);
    else if (Array.isArray(v) && v.some((x) => typeof x === "string" && boundOnce(x, max) !== x))
      b = v.map((x) => (typeof x === "string" ? boundOnce(x, max) : x));
    if (b !== v) {
      out ??= { ...(record as Record<string, unknown>) };
      out[k] = b;
    }
  }
  return (out ?? record) as T;
}

/** Longest value a one-line error message quotes whole. */
const QUOTE_MAX = 120;

/**
 * A value for a one-line message, in double quotes: bounded (boundText) and
 * with control characters escaped, so a newline in a spec or a file cannot
 * split the line a user reads. Every parser of outside input quotes with it.
 */
export function quote(value: string): string {
  return `"${boundText(value, QUOTE_MAX)}"`;
}
