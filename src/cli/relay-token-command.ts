/**
 * `revtun relay token --name NAME [--ttl DURATION]`: asks the running relay
 * (its admin API, POST /api/tokens) for a one-time enrollment token and
 * prints it, one line on stdout, nothing else there (so `> token` works).
 * Where it expires goes to stderr.
 */
import { escapeControl } from "../shared/bounded-text.js";
import { RevtunError } from "../shared/errors.js";
import { ADMIN_FLAGS, ADMIN_USAGE, adminCall, adminTarget } from "./admin-client.js";
import { parseLongOptions } from "./long-options.js";
import { exitCodeFor, type Io } from "./process.js";

export const RELAY_TOKEN_USAGE = `usage: revtun relay token --name NAME [--ttl DURATION] [--admin host:port] [--admin-token-file FILE]

  --name NAME              the device's tunnel name (what operators reach: ssh -J relay root@NAME)
  --ttl DURATION           how long the token can be redeemed (default 1h; 1m to 7d)
${ADMIN_USAGE}  -h, --help               this text
`;

const OPTIONS = {
  name: { type: "string" },
  ttl: { type: "string" },
  ...ADMIN_FLAGS,
  help: { type: "boolean", short: "h" },
} as const;

export async function relayTokenCommand(
  argv: string[],
  io: Pick<Io, "stdout" | "stderr" | "env">,
): Promise<number> {
  let values: { name?: string; ttl?: string; admin?: string; "admin-token-file"?: string; help?: boolean };
  try {
    values = parseLongOptions(argv, OPTIONS) as typeof values;
    if (!values.help && !values.name) throw new RevtunError("USAGE", "--name NAME is required");
  } catch (err) {
    io.stderr.write(`revtun relay token: ${(err as Error).message}\n${RELAY_TOKEN_USAGE}`);
    return 2;
  }
  if (values.help) {
    io.stdout.write(RELAY_TOKEN_USAGE);
    return 0;
  }
  try {
    const target = await adminTarget(values, io.env);
    const answer = (await adminCall(target, "POST", "/api/tokens", {
      name: values.name,
      ...(values.ttl !== undefined ? { ttl: values.ttl } : {}),
    })) as { token?: unknown; name?: unknown; expiresAt?: unknown };
    if (typeof answer.token !== "string") throw new RevtunError("CONNECT", "the relay's answer has no token");
    io.stdout.write(`${answer.token}\n`);
    io.stderr.write(
      `revtun relay token: one-time token for ${escapeControl(String(answer.name))}, valid until ${escapeControl(String(answer.expiresAt))}\n`,
    );
    return 0;
  } catch (err) {
    io.stderr.write(`revtun relay token: ${(err as Error).message}\n`);
    return exitCodeFor(err);
  }
}
