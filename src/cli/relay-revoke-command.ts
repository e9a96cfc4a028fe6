/**
 * `revtun relay revoke NAME`: the running relay (admin API, POST
 * /api/enrollments/NAME/revoke) revokes the device's enrollment: its
 * certificates are refused, its sessions on every relay of the fleet close,
 * and the name is free for a new token.
 */

import { parseArgs } from "node:util";
import { escapeControl } from "../shared/bounded-text.js";
import { RevtunError } from "../shared/errors.js";
import { ADMIN_FLAGS, ADMIN_USAGE, adminCall, adminTarget } from "./admin-client.js";
import { exitCodeFor, type Io } from "./process.js";

export const RELAY_REVOKE_USAGE = `usage: revtun relay revoke NAME [--admin host:port] [--admin-token-file FILE]

${ADMIN_USAGE}  -h, --help               this text
`;

const OPTIONS = { ...ADMIN_FLAGS, help: { type: "boolean", short: "h" } } as const;

export async function relayRevokeCommand(
  argv: string[],
  io: Pick<Io, "stdout" | "stderr" | "env">,
): Promise<number> {
  let values: { admin?: string; "admin-token-file"?: string; help?: boolean };
  let name: string | undefined;
  try {
    const parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
    values = parsed.values;
    if (!values.help && parsed.positionals.length !== 1)
      throw new RevtunError("USAGE", "give exactly one NAME to revoke");
    name = parsed.positionals[0];
  } catch (err) {
    io.stderr.write(
      `revtun relay revoke: ${escapeControl((err as Error).message.split("\n")[0] ?? "")}\n${RELAY_REVOKE_USAGE}`,
    );
    return 2;
  }
  if (values.help || name === undefined) {
    io.stdout.write(RELAY_REVOKE_USAGE);
    return 0;
  }
  try {
    const target = await adminTarget(values, io.env);
    const answer = (await adminCall(
      target,
      "POST",
      `/api/enrollments/${encodeURIComponent(name)}/revoke`,
      {},
    )) as {
      device?: { name?: unknown; fingerprint?: unknown };
    };
    io.stdout.write(
      `revoked ${escapeControl(String(answer.device?.name))} (${escapeControl(String(answer.device?.fingerprint))})\n`,
    );
    return 0;
  } catch (err) {
    io.stderr.write(`revtun relay revoke: ${(err as Error).message}\n`);
    return exitCodeFor(err);
  }
}
