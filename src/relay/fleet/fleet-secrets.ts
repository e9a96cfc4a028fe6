/**
 * Reading the fleet's secrets from files only their owner can read: the
 * fleet key (fleet-key.ts) and the Redis password (`--fleet-password-file`).
 * A secret never comes from the command line, where every local user can
 * read it (`ps`, /proc/<pid>/cmdline); the CLI also takes the password from
 * the environment (REVTUN_FLEET_PASSWORD), which only the process's user
 * and root can read.
 */
import { readFile, stat } from "node:fs/promises";
import { RevtunError } from "../../shared/errors.js";

/**
 * Reads `file`, refusing it readable by group or others as ssh refuses such
 * a private key; `what` names it in the one-line CONFIG error.
 */
export async function readPrivateFile(file: string, what: string): Promise<string> {
  try {
    const st = await stat(file);
    if ((st.mode & 0o077) !== 0)
      throw new RevtunError(
        "CONFIG",
        `${what} ${file} is readable by group or others (mode ${(st.mode & 0o777).toString(8)}): chmod 600 it`,
      );
    return await readFile(file, "utf8");
  } catch (err) {
    if (err instanceof RevtunError) throw err;
    throw new RevtunError("CONFIG", `cannot read ${what} ${file}: ${(err as Error).message}`);
  }
}

/** The Redis password in a file: its first line, which must not be empty. */
export async function loadFleetPassword(file: string): Promise<string> {
  const line = (await readPrivateFile(file, "fleet password file")).split(/\r?\n/)[0] ?? "";
  if (line === "")
    throw new RevtunError("CONFIG", `fleet password file ${file} is empty: its first line is the password`);
  return line;
}
