/**
 * Everything the CLI owns of the process, in one place: its streams and
 * environment (Io), signals, secrets, exit codes and version. The library
 * touches none of these.
 */
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { RevtunError } from "../shared/errors.js";

export interface Io {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  env: NodeJS.ProcessEnv;
  /** Whether a person can answer prompts (stdin is a terminal). */
  interactive: boolean;
}

export const processIo = (): Io => ({
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  interactive: Boolean(process.stdin.isTTY),
});

/**
 * ssh's exit codes: 2 for usage and configuration errors, 255 for connection,
 * authentication and host key failures and anything else that went wrong.
 */
export function exitCodeFor(err: unknown): number {
  return err instanceof RevtunError && (err.code === "USAGE" || err.code === "CONFIG") ? 2 : 255;
}

export function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  return pkg.version;
}

/**
 * Calls `handler` on SIGINT or SIGTERM (`immediate` from the second signal
 * on) and `onHup` on SIGHUP; returns the function that removes them. Install
 * it before anything is started or written: a signal then always means a
 * clean stop, never Node's default exit.
 */
export function onSignals(
  handler: (immediate: boolean, signal: NodeJS.Signals) => void,
  onHup?: () => void,
): () => void {
  let count = 0;
  const h = (signal: NodeJS.Signals) => handler(count++ > 0, signal);
  process.on("SIGINT", h);
  process.on("SIGTERM", h);
  if (onHup) process.on("SIGHUP", onHup);
  return () => {
    process.off("SIGINT", h);
    process.off("SIGTERM", h);
    if (onHup) process.off("SIGHUP", onHup);
  };
}

/** Reads a secret from a file (first line) or an environment variable; never from argv. */
export async function readSecret(
  file: string | undefined,
  envValue: string | undefined,
): Promise<string | undefined> {
  if (file !== undefined) {
    try {
      return (await readFile(file, "utf8")).split(/\r?\n/)[0];
    } catch (err) {
      throw new RevtunError("USAGE", `cannot read secret file ${file}: ${(err as Error).message}`);
    }
  }
  return envValue;
}
