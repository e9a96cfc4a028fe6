/**
 * `revtun relay devices [--json]`: the enrolled devices (admin API, GET
 * /api/enrollments): name, key fingerprint, certificate serial and expiry,
 * enrolled at, revoked.
 */
import type { DeviceRecord } from "../relay/enrollment/store.js";
import { escapeControl } from "../shared/bounded-text.js";
import { RevtunError } from "../shared/errors.js";
import { ADMIN_FLAGS, ADMIN_USAGE, adminCall, adminTarget } from "./admin-client.js";
import { parseLongOptions } from "./long-options.js";
import { exitCodeFor, type Io } from "./process.js";

export const RELAY_DEVICES_USAGE = `usage: revtun relay devices [--json] [--admin host:port] [--admin-token-file FILE]

  --json                   the devices as JSON, as /api/enrollments serves them
${ADMIN_USAGE}  -h, --help               this text
`;

const OPTIONS = { ...ADMIN_FLAGS, json: { type: "boolean" }, help: { type: "boolean", short: "h" } } as const;

const iso = (ms: number | undefined) =>
  ms === undefined ? "-" : new Date(ms).toISOString().replace(/\.\d+Z$/, "Z");

export function formatDevices(devices: DeviceRecord[]): string {
  if (devices.length === 0) return "no enrolled devices\n";
  const head = ["NAME", "FINGERPRINT", "SERIAL", "EXPIRES", "ENROLLED", "REVOKED"];
  const rows = devices.map((d) => [
    escapeControl(d.name),
    d.fingerprint,
    d.serial,
    iso(d.validBefore),
    iso(d.enrolledAt),
    iso(d.revokedAt),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join("  ")
      .trimEnd();
  return `${[head, ...rows].map(line).join("\n")}\n`;
}

export async function relayDevicesCommand(
  argv: string[],
  io: Pick<Io, "stdout" | "stderr" | "env">,
): Promise<number> {
  let values: { admin?: string; "admin-token-file"?: string; json?: boolean; help?: boolean };
  try {
    values = parseLongOptions(argv, OPTIONS) as typeof values;
  } catch (err) {
    io.stderr.write(`revtun relay devices: ${(err as Error).message}\n${RELAY_DEVICES_USAGE}`);
    return 2;
  }
  if (values.help) {
    io.stdout.write(RELAY_DEVICES_USAGE);
    return 0;
  }
  try {
    const answer = (await adminCall(await adminTarget(values, io.env), "GET", "/api/enrollments")) as {
      devices?: DeviceRecord[];
    };
    if (!Array.isArray(answer.devices)) throw new RevtunError("CONNECT", "the relay's answer has no devices");
    io.stdout.write(
      values.json ? `${JSON.stringify(answer.devices, null, 2)}\n` : formatDevices(answer.devices),
    );
    return 0;
  } catch (err) {
    io.stderr.write(`revtun relay devices: ${(err as Error).message}\n`);
    return exitCodeFor(err);
  }
}
