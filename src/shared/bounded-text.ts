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
const CLIENT_FIELDS = new Set(["username", "method", "address", "clientVersion", "type"]);

// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it replaces
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g;

/**
 * `text` if it is at most `max` characters; otherwise its first `max`, `…`
 * and `(N chars)`. Control characters become `\xNN`, so a peer's string can
 * never start a forged line in a text log.
 */
export function boundText(text: string, max = CLIENT_TEXT_MAX): string {
  const head = text.length <= max ? text : text.slice(0, max);
  const safe = head.replace(CONTROL, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
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
