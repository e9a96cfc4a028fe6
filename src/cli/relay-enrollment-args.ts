/**
 * `revtun relay`'s enrollment flags (docs/enrollment.md): --ca-key FILE,
 * --cert-validity DURATION, and the --state-dir DIR that relay-command.ts declares. Parsing names the offending
 * flag (USAGE); loading the CA key and opening the store happen at startup
 * (CONFIG), like the fleet's secrets.
 */

import { loadCertificateAuthority } from "../relay/enrollment/certificate-authority.js";
import { parseDuration } from "../relay/enrollment/duration.js";
import {
  DEFAULT_CERT_VALIDITY_MS,
  type EnrollmentOptions,
  MIN_CERT_VALIDITY_MS,
} from "../relay/enrollment/enrollment.js";
import { RedisStore } from "../relay/enrollment/redis-store.js";
import { StateDirStore } from "../relay/enrollment/state-dir-store.js";
import type { RedisTarget } from "../relay/fleet/fleet-options.js";
import { quote } from "../shared/bounded-text.js";
import { RevtunError } from "../shared/errors.js";

export interface EnrollmentArgs {
  caKeyFile: string;
  certValidityMs: number;
  stateDir?: string;
}

export const ENROLLMENT_FLAGS = {
  "ca-key": { type: "string" },
  "cert-validity": { type: "string" },
} as const;

export const ENROLLMENT_USAGE = `  --ca-key FILE            be the fleet's certificate authority for enrolled devices: an
                           OpenSSH private key, mode 600, the same file on every relay
  --cert-validity DURATION devices' certificates last this long, renewed at half (default 30d;
                           at least 10s; 30s, 10m, 12h, 7d, 2w)
`;

export function parseEnrollmentArgs(
  values: Record<string, unknown>,
  fleet: boolean,
): EnrollmentArgs | undefined {
  const ca = values["ca-key"];
  const validity = values["cert-validity"];
  const stateDir = values["state-dir"];
  if (typeof ca !== "string" || ca === "") {
    if (values["cert-validity"] !== undefined)
      throw new RevtunError("USAGE", "--cert-validity needs --ca-key");
    return undefined;
  }
  let certValidityMs = DEFAULT_CERT_VALIDITY_MS;
  if (typeof validity === "string") {
    const ms = parseDuration(validity);
    if (ms === undefined || ms < MIN_CERT_VALIDITY_MS)
      throw new RevtunError(
        "USAGE",
        `bad --cert-validity ${quote(validity)}: expected a duration of at least 10s (30s, 12h, 30d)`,
      );
    certValidityMs = ms;
  }
  if (!fleet && (typeof stateDir !== "string" || stateDir === ""))
    throw new RevtunError(
      "USAGE",
      "--ca-key needs --state-dir DIR (or --fleet): where tokens and devices are kept",
    );
  return { caKeyFile: ca, certValidityMs, ...(typeof stateDir === "string" && stateDir ? { stateDir } : {}) };
}

/** Loads the CA key and opens the store: Redis with a fleet, the state directory otherwise. */
export async function openEnrollment(
  args: EnrollmentArgs,
  fleet: { redis: RedisTarget; prefix?: string | undefined } | undefined,
): Promise<EnrollmentOptions> {
  const ca = await loadCertificateAuthority(args.caKeyFile);
  let store: EnrollmentOptions["store"];
  try {
    store = fleet
      ? await RedisStore.open(fleet.redis, fleet.prefix)
      : await StateDirStore.open(args.stateDir ?? "");
  } catch (err) {
    throw new RevtunError("CONFIG", `cannot open the enrollment store: ${(err as Error).message}`);
  }
  return { ca, store, certValidityMs: args.certValidityMs };
}
