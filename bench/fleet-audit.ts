/**
 * The fleet bench's look into Redis: the registry (src/relay/fleet/registry.ts
 * layout, prefix "revtun:") compared with what the bench knows is live, the
 * relays up and the names each relay's device links hold.
 *
 *   staleRelays   relay:<id> records of relays that are not up
 *   staleNames    names:<id> entries no link of that relay holds
 *   missingNames  names a relay's links hold that names:<id> lacks
 *   wrongHolders  keys whose live holders (the HOLDERS script's rule: relay:<id>
 *                 exists and names:<id> has the key) differ from the relays
 *                 holding it
 *   indexLeftovers holders:<key> entries failing that rule: harmless (the
 *                 script drops them when it reads the key), counted only
 */
import { Redis } from "ioredis";
import { sleep } from "./fleet-parties.js";

export interface Audit {
  staleRelays: number;
  staleNames: number;
  missingNames: number;
  wrongHolders: number;
  indexLeftovers: number;
  /** A few of the differences, for the report. */
  examples: string[];
}

const PREFIX = "revtun:";

export async function auditRegistry(
  port: number,
  /** relay id -> the keys (name:port) its links hold. */
  expected: ReadonlyMap<string, ReadonlySet<string>>,
): Promise<Audit> {
  const r = new Redis({ host: "127.0.0.1", port, lazyConnect: true, maxRetriesPerRequest: 1 });
  r.on("error", () => {});
  await r.connect();
  try {
    const a: Audit = {
      staleRelays: 0,
      staleNames: 0,
      missingNames: 0,
      wrongHolders: 0,
      indexLeftovers: 0,
      examples: [],
    };
    const note = (s: string) => {
      if (a.examples.length < 6) a.examples.push(s);
    };
    const keys: string[] = [];
    let cursor = "0";
    do {
      const [c, batch] = await r.scan(cursor, "MATCH", `${PREFIX}*`, "COUNT", 1000);
      cursor = c;
      keys.push(...batch);
    } while (cursor !== "0");
    const records = new Set(
      keys.filter((k) => k.startsWith(`${PREFIX}relay:`)).map((k) => k.slice(PREFIX.length + 6)),
    );
    for (const id of records)
      if (!expected.has(id)) {
        a.staleRelays++;
        note(`relay:${id} of a relay that is not up`);
      }
    const names = new Map<string, Set<string>>();
    for (const id of new Set([...records, ...expected.keys()])) {
      const held = new Set(await r.hkeys(`${PREFIX}names:${id}`));
      names.set(id, held);
      const want = expected.get(id) ?? new Set<string>();
      for (const k of held)
        if (!want.has(k)) {
          a.staleNames++;
          note(`names:${id} lists ${k}, which none of its links holds`);
        }
      for (const k of want)
        if (!held.has(k)) {
          a.missingNames++;
          note(`names:${id} lacks ${k}, which a link of it holds`);
        }
    }
    const allKeys = new Set<string>();
    for (const s of expected.values()) for (const k of s) allKeys.add(k);
    for (const k of keys) if (k.startsWith(`${PREFIX}holders:`)) allKeys.add(k.slice(PREFIX.length + 8));
    for (const key of allKeys) {
      const ids = await r.zrange(`${PREFIX}holders:${key}`, 0, -1);
      const live = new Set(ids.filter((id) => records.has(id) && names.get(id)?.has(key)));
      a.indexLeftovers += ids.length - live.size;
      const want = [...expected].filter(([, s]) => s.has(key)).map(([id]) => id);
      if (want.length !== live.size || want.some((id) => !live.has(id))) {
        a.wrongHolders++;
        note(
          `${key}: the registry finds ${[...live].join(",") || "none"}, held on ${want.join(",") || "none"}`,
        );
      }
    }
    return a;
  } finally {
    r.disconnect();
  }
}

/** Audits every 250 ms until nothing differs or `ms` passes; the last audit, and how long it took. */
export async function auditUntilClean(
  port: number,
  expected: () => ReadonlyMap<string, ReadonlySet<string>>,
  ms: number,
): Promise<{ audit: Audit; ms: number }> {
  const t0 = performance.now();
  for (;;) {
    const audit = await auditRegistry(port, expected());
    const clean = audit.staleRelays + audit.staleNames + audit.missingNames + audit.wrongHolders === 0;
    if (clean || performance.now() - t0 > ms) return { audit, ms: performance.now() - t0 };
    await sleep(250);
  }
}

/** Empties the bench's Redis between setups, so one setup's leftovers are not the next one's stale records. */
export async function flushRegistry(port: number): Promise<void> {
  const r = new Redis({ host: "127.0.0.1", port, lazyConnect: true, maxRetriesPerRequest: 1 });
  r.on("error", () => {});
  await r.connect();
  try {
    await r.flushdb();
  } finally {
    r.disconnect();
  }
}
