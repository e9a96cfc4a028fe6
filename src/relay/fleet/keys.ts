/**
 * Where a fleet's records live in Redis: one function builds every key, so
 * no two fleets, record kinds or ids can ever name the same key.
 *
 *   revtun:{<fleet>}:<kind>:<part>[:<part>...]
 *
 * Every variable component (the fleet name, each part) is escaped: any
 * character outside [A-Za-z0-9._-] is written %HH (UTF-8 bytes), so ':'
 * '{' '}' and '%' never appear raw inside a component, and the braces mark
 * where the fleet name ends. Why: the old layout was a bare prefix
 * (`revtun:` + `relay:<id>`, `revtun:<fleet>:` for a named fleet), under
 * which a fleet named `relay` and a default-fleet relay with id `relays`
 * shared `revtun:relay:relays` (issue 26). The fleet in braces is also a
 * Redis Cluster hash tag, so one fleet's keys stay in one slot should the
 * registry ever move to Cluster (its scripts build key names from an index).
 *
 * The default fleet is the empty name: `revtun:{}:relay:r1`.
 */

/** Kinds of record a fleet keeps; a new kind is added here, never spelled at a call site. */
export type FleetRecordKind =
  | "relay"
  | "names"
  | "holders"
  | "relays"
  | "devices"
  | "device"
  // The device inventory's chart samples and its change channel (inventory-store.ts).
  | "device-history"
  | "device-events";

const PLAIN = /^[A-Za-z0-9._-]*$/;

/** `part` with every character outside [A-Za-z0-9._-] written as %HH of its UTF-8 bytes. */
export function escapeKeyPart(part: string): string {
  if (PLAIN.test(part)) return part;
  let out = "";
  for (const byte of Buffer.from(part, "utf8")) {
    const c = String.fromCharCode(byte);
    out += byte < 0x80 && PLAIN.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

export class FleetKeyspace {
  /** `revtun:{<fleet>}:`, the start of every key of this fleet. */
  readonly base: string;

  /** `fleet`: the fleet's name ("" for the default fleet). */
  constructor(readonly fleet = "") {
    this.base = `revtun:{${escapeKeyPart(fleet)}}:`;
  }

  /** The key of a record of `kind` named by `parts` (none for a fleet-wide record such as `relays`). */
  key(kind: FleetRecordKind, ...parts: string[]): string {
    return this.base + [kind, ...parts.map(escapeKeyPart)].join(":");
  }

  /**
   * The start of every key `key(kind, x)`, for a Lua script that appends an
   * id it read from Redis: it must append escapeKeyPart(x), which for a
   * relay id ([A-Za-z0-9._-]) is the id itself.
   */
  stem(kind: FleetRecordKind): string {
    return `${this.base}${kind}:`;
  }

  /** relay:<id>: a relay's address and host key, with its MAC. */
  relay(relayId: string): string {
    return this.key("relay", relayId);
  }

  /** names:<id>: the names a relay holds, name:port -> hold. */
  names(relayId: string): string {
    return this.key("names", relayId);
  }

  /** holders:<name:port>: which relays hold a name (an index). */
  holders(tunnelKey: string): string {
    return this.key("holders", tunnelKey);
  }

  /** The live relays' last renewals (housekeeping). */
  relays(): string {
    return this.key("relays");
  }
}
