/**
 * Logging: pino, because log shippers want one JSON object per line and pino
 * writes exactly that, fast, with redaction built in. On a terminal the same
 * records are rewritten as one readable line each.
 *
 * Convention: every record has `event` (a stable name such as "connected",
 * "forward-bound") and `msg` (the human sentence); other fields are context.
 */
import { Writable } from "node:stream";
import { type Logger, pino } from "pino";
import { escapeControl } from "./bounded-text.js";

export type { Logger };
export type LogFormat = "text" | "json";
export type LogLevel = "error" | "warn" | "info" | "debug";

export interface LoggerOptions {
  format: LogFormat;
  level: LogLevel;
  /** Defaults to process.stderr (ssh prints its diagnostics there too). */
  stream?: NodeJS.WritableStream;
}

/** Secrets must never reach a log, even if a caller passes a whole options object. */
const REDACT = [
  "password",
  "passphrase",
  "privateKey",
  "*.password",
  "*.passphrase",
  "*.privateKey",
  "*.*.password",
  "*.*.passphrase",
  "*.*.privateKey",
];

const LEVEL_NAMES: Record<number, string> = {
  10: "TRACE",
  20: "DEBUG",
  30: "INFO",
  40: "WARN",
  50: "ERROR",
  60: "FATAL",
};
const OMIT = new Set(["level", "time", "msg", "pid", "hostname", "event"]);

function formatValue(v: unknown): string {
  // JSON.stringify escapes C0 but not DEL, C1 or U+2028/9: escape what is left.
  if (typeof v === "string") return /[\s"=]/.test(v) ? escapeControl(JSON.stringify(v)) : escapeControl(v);
  return escapeControl(JSON.stringify(v) ?? String(v));
}

/** One pino JSON record → `HH:MM:SS.mmm LEVEL message key=value ...`. */
export function textLine(json: string): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const time = new Date(typeof rec.time === "number" ? rec.time : Date.now()).toISOString().slice(11, 23);
  const level = LEVEL_NAMES[rec.level as number] ?? String(rec.level);
  const extras = Object.entries(rec)
    .filter(([k, v]) => !OMIT.has(k) && v !== undefined)
    .map(([k, v]) => `${k}=${formatValue(v)}`);
  return `${time} ${level.padEnd(5)} ${escapeControl(String(rec.msg ?? ""))}${extras.length ? ` ${extras.join(" ")}` : ""}\n`;
}

export function createLogger(opts: LoggerOptions): Logger {
  const out = opts.stream ?? process.stderr;
  const dest =
    opts.format === "json"
      ? out
      : new Writable({
          write(chunk: Buffer, _enc, cb) {
            for (const line of chunk.toString("utf8").split("\n")) if (line) out.write(textLine(line));
            cb();
          },
        });
  return pino(
    {
      level: opts.level,
      base: { pid: process.pid },
      redact: { paths: REDACT, censor: "[redacted]" },
      timestamp: opts.format === "json" ? pino.stdTimeFunctions.isoTime : pino.stdTimeFunctions.epochTime,
    },
    dest,
  );
}

/** A logger that drops everything, for library users who pass none. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}

/** One key's repeats, when its window ends: what was logged first, and how many were held back. */
export interface Repeats<T> {
  key: string;
  first: T;
  count: number;
}

export interface RepeatCollapserOptions {
  /** How long after a line its repeats are only counted. */
  windowMs: number;
  /** Keys tracked at once; past it the oldest window is ended early (memory stays bounded). */
  maxKeys: number;
  now?: () => number;
}

/**
 * Collapses repeated log lines: the first line of a key is logged, its
 * repeats within `windowMs` are only counted, and when the window ends the
 * count comes back as one summary. Made for a flood such as one address
 * holding a session's channel limit, which logged 745 identical WARN lines
 * in a few seconds (issue 12 item 8). Memory: at most `maxKeys` entries.
 */
export class RepeatCollapser<T> {
  private readonly entries = new Map<string, { start: number; first: T; count: number }>();
  private readonly now: () => number;

  constructor(private readonly opts: RepeatCollapserOptions) {
    this.now = opts.now ?? Date.now;
  }

  get size(): number {
    return this.entries.size;
  }

  /**
   * Records one occurrence of `key`. `log` says whether to write it now;
   * `ended` holds the summaries of windows this call closed (this key's
   * expired one, or the oldest when the table was full), to write first.
   */
  admit(key: string, sample: T): { log: boolean; ended: Repeats<T>[] } {
    const t = this.now();
    const ended: Repeats<T>[] = [];
    const e = this.entries.get(key);
    if (e) {
      if (t - e.start < this.opts.windowMs) {
        e.count++;
        return { log: false, ended };
      }
      this.entries.delete(key);
      if (e.count > 0) ended.push({ key, first: e.first, count: e.count });
    }
    ended.push(...this.flush());
    while (this.entries.size >= this.opts.maxKeys) {
      const [oldKey, old] = this.entries.entries().next().value as [string, { first: T; count: number }];
      this.entries.delete(oldKey);
      if (old.count > 0) ended.push({ key: oldKey, first: old.first, count: old.count });
    }
    this.entries.set(key, { start: t, first: sample, count: 0 });
    return { log: true, ended };
  }

  /** Ends the windows that are over (all of them with `all`), returning those with repeats. */
  flush(all = false): Repeats<T>[] {
    const t = this.now();
    const ended: Repeats<T>[] = [];
    for (const [key, e] of this.entries) {
      if (!all && t - e.start < this.opts.windowMs) continue;
      this.entries.delete(key);
      if (e.count > 0) ended.push({ key, first: e.first, count: e.count });
    }
    return ended;
  }
}
