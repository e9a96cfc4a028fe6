/**
 * `revtun relay`'s fleet flags: --fleet (or REVTUN_FLEET), --fleet-key,
 * --fleet-name, --fleet-password-file (or REVTUN_FLEET_PASSWORD),
 * --relay-id, --advertise. Parsing names the offending flag or variable in
 * one line (USAGE); loading the secrets is separate, at startup (CONFIG).
 */
import { readFile } from "node:fs/promises";
import { hostname } from "node:os";
import { parseFleetUrl, type RedisTarget } from "../relay/fleet/fleet-options.js";
import { loadFleetPassword } from "../relay/fleet/fleet-secrets.js";
import { formatHostPort } from "../shared/address.js";
import { quote } from "../shared/bounded-text.js";
import { RevtunError } from "../shared/errors.js";
import { parseListen } from "../shared/metrics-server.js";

export interface FleetArgs {
  /** Without the password: that is read at startup (fleetPassword). */
  redis: RedisTarget;
  keyFile: string;
  relayId: string;
  /** host:port peers dial; its host alone for a worker's own peer listener. */
  advertise: string;
  advertiseHost: string;
  /** `--fleet-name NAME`: Redis key prefix `revtun:NAME:`; absent, "revtun:". */
  prefix?: string;
  passwordFile?: string;
  /** `--fleet-ca-file FILE`: PEM CA certificate(s) the rediss:// server's certificate must chain to. */
  caFile?: string;
}

const WILDCARDS = new Set(["", "*", "0.0.0.0", "::"]);
const FLEET_NAME = /^[A-Za-z0-9_.-]{1,32}$/;
const FLEET_ONLY = [
  "fleet-key",
  "fleet-name",
  "fleet-password-file",
  "fleet-ca-file",
  "relay-id",
  "advertise",
];

/** The --fleet group; REVTUN_FLEET stands in for --fleet (the CLI reads the environment; the library never does). */
export function parseFleetArgs(
  values: Record<string, unknown>,
  listen: { host?: string; port: number },
  env: Record<string, string | undefined>,
): FleetArgs | undefined {
  const url = typeof values.fleet === "string" ? values.fleet : env.REVTUN_FLEET;
  const source = typeof values.fleet === "string" ? "--fleet" : "REVTUN_FLEET";
  const keyFile = values["fleet-key"];
  if (url === undefined || url === "") {
    for (const f of FLEET_ONLY)
      if (values[f] !== undefined) throw new RevtunError("USAGE", `--${f} needs --fleet (or REVTUN_FLEET)`);
    return undefined;
  }
  const redis = parseFleetUrl(url, source);
  if (typeof keyFile !== "string" || keyFile === "")
    throw new RevtunError("USAGE", `${source} needs --fleet-key FILE (the fleet's ed25519 private key)`);
  const idText = values["relay-id"];
  const relayId =
    typeof idText === "string"
      ? idText
      : `${hostname()
          .replace(/[^A-Za-z0-9._-]/g, "-")
          .slice(0, 50)}-${listen.port}`;
  if (!/^[A-Za-z0-9._-]{1,60}$/.test(relayId))
    throw new RevtunError("USAGE", `bad --relay-id ${quote(relayId)}: expected 1-60 of A-Z a-z 0-9 . _ -`);
  const name = values["fleet-name"];
  if (typeof name === "string" && !FLEET_NAME.test(name))
    throw new RevtunError("USAGE", `bad --fleet-name ${quote(name)}: expected 1-32 of A-Z a-z 0-9 . _ -`);
  const passwordFile = values["fleet-password-file"];
  if (passwordFile === "") throw new RevtunError("USAGE", "--fleet-password-file needs a file name");
  const caFile = values["fleet-ca-file"];
  if (caFile === "") throw new RevtunError("USAGE", "--fleet-ca-file needs a file name");
  if (typeof caFile === "string" && !redis.tls)
    throw new RevtunError("USAGE", `--fleet-ca-file needs a TLS address: rediss:// or rediss+sentinel://`);
  const given = values.advertise;
  let host: string;
  let port: number;
  if (typeof given !== "string") {
    if (listen.host === undefined || WILDCARDS.has(listen.host) || listen.port === 0)
      throw new RevtunError(
        "USAGE",
        `${source} needs --advertise host:port: --listen ${listen.host === undefined ? listen.port : formatHostPort(listen.host, listen.port)} is not an address and port peers can dial`,
      );
    ({ host, port } = { host: listen.host, port: listen.port });
  } else {
    const a = parseListen(given, "--advertise");
    if (WILDCARDS.has(a.host) || a.port === 0)
      throw new RevtunError(
        "USAGE",
        `bad --advertise ${quote(given)}: give an address and port peers can dial`,
      );
    ({ host, port } = a);
  }
  return {
    redis,
    keyFile,
    relayId,
    advertise: formatHostPort(host, port),
    advertiseHost: host,
    ...(typeof name === "string" ? { prefix: `revtun:${name}:` } : {}),
    ...(typeof passwordFile === "string" ? { passwordFile } : {}),
    ...(typeof caFile === "string" ? { caFile } : {}),
  };
}

/** The CA for rediss:// (--fleet-ca-file), read at startup; a file without a certificate is a CONFIG error naming it. */
export async function fleetCa(fleet: FleetArgs): Promise<Partial<RedisTarget>> {
  if (fleet.caFile === undefined) return {};
  let pem: string;
  try {
    pem = await readFile(fleet.caFile, "utf8");
  } catch (err) {
    throw new RevtunError("CONFIG", `cannot read --fleet-ca-file ${fleet.caFile}: ${(err as Error).message}`);
  }
  if (!pem.includes("-----BEGIN CERTIFICATE-----"))
    throw new RevtunError("CONFIG", `--fleet-ca-file ${fleet.caFile} holds no PEM certificate`);
  return { tls: { ca: pem } };
}

/**
 * The Redis password: --fleet-password-file (mode 600, first line) or else
 * REVTUN_FLEET_PASSWORD; undefined for none. Never argv, never logged.
 */
export async function fleetPassword(
  fleet: FleetArgs,
  env: Record<string, string | undefined>,
): Promise<string | undefined> {
  if (fleet.passwordFile !== undefined) return loadFleetPassword(fleet.passwordFile);
  const v = env.REVTUN_FLEET_PASSWORD;
  return v === undefined || v === "" ? undefined : v;
}

/**
 * What to add to a Redis auth error (redis-auth.ts, reason "auth"): where
 * the password came from, or where to give it. The password itself never.
 */
export function fleetAuthHint(
  err: unknown,
  fleet: FleetArgs | undefined,
  env: Record<string, string | undefined>,
): string {
  if (!fleet || !(err instanceof RevtunError) || err.reason !== "auth") return "";
  if (fleet.passwordFile !== undefined)
    return ` (the password in --fleet-password-file ${fleet.passwordFile})`;
  if (env.REVTUN_FLEET_PASSWORD) return " (the password in REVTUN_FLEET_PASSWORD)";
  return ": give it with --fleet-password-file FILE or REVTUN_FLEET_PASSWORD";
}
