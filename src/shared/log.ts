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
  if (typeof v === "string") return /[\s"=]/.test(v) ? JSON.stringify(v) : v;
  return JSON.stringify(v);
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
  return `${time} ${level.padEnd(5)} ${String(rec.msg ?? "")}${extras.length ? ` ${extras.join(" ")}` : ""}\n`;
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
