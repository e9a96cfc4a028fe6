/**
 * Durations as people write them for validity and TTLs: sshd's TIME FORMATS
 * (`30s`, `10m`, `1h30m`, `7d`, `2w`; a bare number is seconds), as in
 * `ssh-keygen -V +52w` and sshd_config.
 */
const UNITS: Record<string, number> = {
  "": 1000,
  s: 1000,
  m: 60_000,
  h: 3600_000,
  d: 86_400_000,
  w: 604_800_000,
};

/** Milliseconds, or undefined when `text` is not a duration. */
export function parseDuration(text: string): number | undefined {
  const t = text.trim().toLowerCase();
  if (!/^(\d+[smhdw]?)+$/.test(t)) return undefined;
  let ms = 0;
  for (const m of t.matchAll(/(\d+)([smhdw]?)/g)) ms += Number(m[1]) * (UNITS[m[2] ?? ""] ?? 0);
  return Number.isSafeInteger(ms) ? ms : undefined;
}

/** The shortest sshd-style spelling of `ms` (whole seconds). */
export function formatDuration(ms: number): string {
  let s = Math.round(ms / 1000);
  const out: string[] = [];
  for (const [u, n] of [
    ["d", 86400],
    ["h", 3600],
    ["m", 60],
  ] as const) {
    if (s >= n) {
      out.push(`${Math.floor(s / n)}${u}`);
      s %= n;
    }
  }
  if (s || out.length === 0) out.push(`${s}s`);
  return out.join("");
}
