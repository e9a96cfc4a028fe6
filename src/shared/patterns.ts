/**
 * OpenSSH's pattern matching (match.c), shared by known_hosts, ssh_config
 * and the relay's authorized_keys options: `*` matches any run, `?` exactly
 * one character, and in a list a matching `!negation` wins over any positive
 * match, whatever the order.
 */

/** Whole-string glob with `*` and `?`, as ssh's match_pattern. */
export function matchPattern(s: string, p: string): boolean {
  let si = 0;
  let pi = 0;
  // Where the last `*` was and how much of s it has swallowed, to backtrack to on mismatch.
  let star = -1;
  let starSi = 0;
  while (si < s.length) {
    if (pi < p.length && (p[pi] === "?" || p[pi] === s[si])) {
      si++;
      pi++;
    } else if (pi < p.length && p[pi] === "*") {
      star = pi++;
      starSi = si;
    } else if (star >= 0) {
      pi = star + 1;
      si = ++starSi;
    } else {
      return false;
    }
  }
  while (p[pi] === "*") pi++;
  return pi === p.length;
}

/**
 * match_pattern_list()'s three-way answer: -1 when a negated pattern matches
 * (that wins over any positive match, whatever the order), 1 when only
 * positive ones do, 0 when none does. `lower` lowercases the patterns (the
 * name is the caller's to normalise), as match_pattern_list's dolower.
 * Empty patterns never match.
 */
export function patternListVerdict(name: string, patterns: Iterable<string>, lower = false): -1 | 0 | 1 {
  let hit: 0 | 1 = 0;
  for (const item of patterns) {
    const negated = item.startsWith("!");
    let p = negated ? item.slice(1) : item;
    if (lower) p = p.toLowerCase();
    if (p === "" || !matchPattern(name, p)) continue;
    if (negated) return -1;
    hit = 1;
  }
  return hit;
}

/** True if some pattern matches and no negated one does (see patternListVerdict). */
export function matchPatterns(name: string, patterns: Iterable<string>, lower = false): boolean {
  return patternListVerdict(name, patterns, lower) === 1;
}

/** ssh's match_pattern_list over a comma-separated list. */
export function matchPatternList(name: string, list: string, lower = false): boolean {
  return matchPatterns(name, list.split(","), lower);
}
