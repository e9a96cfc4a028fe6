/**
 * OpenSSH's pattern language, as authorized_keys uses it: `*` and `?`
 * wildcards (ssh_config(5) PATTERNS) and comma-separated lists with `!`
 * negation, both from the shared ../patterns.ts (match.c), plus what is
 * relay-specific here: address/masklen CIDR entries in `from=` (sshd(8)
 * AUTHORIZED_KEYS FILE FORMAT, addrmatch.c), so a file written for sshd
 * means the same thing here.
 */
import net from "node:net";
import { matchPattern, patternListVerdict } from "../shared/patterns.js";

/** `::ffff:10.1.2.3` (an IPv4 peer on a dual-stack listener) → `10.1.2.3`; other addresses unchanged. */
export function normalizeIp(ip: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return m?.[1] ?? ip;
}

/** An IP literal as bytes (4 or 16), or undefined when `ip` is not one. */
export function ipBytes(ip: string): Uint8Array | undefined {
  if (net.isIPv4(ip)) return Uint8Array.from(ip.split(".").map(Number));
  if (!net.isIPv6(ip)) return undefined;
  let text = ip.replace(/%.*$/, "");
  // An embedded dotted quad (::ffff:1.2.3.4) becomes the last two groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4?.[1]) {
    const b = v4[1].split(".").map(Number);
    text = `${text.slice(0, -v4[1].length)}${(((b[0] ?? 0) << 8) | (b[1] ?? 0)).toString(16)}:${(((b[2] ?? 0) << 8) | (b[3] ?? 0)).toString(16)}`;
  }
  const [head = "", tail] = text.split("::");
  const headGroups = head ? head.split(":") : [];
  const tailGroups = tail ? tail.split(":") : [];
  const zeros = tail === undefined ? 0 : 8 - headGroups.length - tailGroups.length;
  const groups = [...headGroups, ...Array<string>(zeros).fill("0"), ...tailGroups];
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    const v = Number.parseInt(g, 16);
    out[i * 2] = v >> 8;
    out[i * 2 + 1] = v & 0xff;
  });
  return out;
}

/**
 * One address or network, matched by Node's net.BlockList. Only the family
 * is checked here: BlockList itself would let an IPv4 network match an
 * IPv4-mapped IPv6 address (and the reverse), which addrmatch.c does not;
 * peers are unmapped by normalizeIp() before they get here.
 */
type Cidr = { list: net.BlockList; family: "ipv4" | "ipv6" };

/**
 * `addr` or `addr/len`; "bad" when it is an address with host bits set
 * beyond the mask, as addrmatch.c rejects. BlockList accepts such a subnet
 * silently (10.0.0.1/8 matches all of 10/8), so that check is done on the
 * address bytes here.
 */
function parseCidr(entry: string): Cidr | "bad" | undefined {
  const slash = entry.indexOf("/");
  const addr = slash === -1 ? entry : entry.slice(0, slash);
  const bytes = ipBytes(addr);
  if (!bytes) return undefined;
  const family = bytes.length === 4 ? "ipv4" : "ipv6";
  const list = new net.BlockList();
  if (slash === -1) {
    list.addAddress(addr, family);
    return { list, family };
  }
  const lenText = entry.slice(slash + 1);
  if (!/^\d{1,3}$/.test(lenText)) return "bad";
  const bits = Number(lenText);
  if (bits > bytes.length * 8) return "bad";
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    const mask = keep === 0 ? 0 : (0xff << (8 - keep)) & 0xff;
    if (((bytes[i] ?? 0) & ~mask & 0xff) !== 0) return "bad";
  }
  list.addSubnet(addr, bits, family);
  return { list, family };
}

function inCidr(ip: string, c: Cidr): boolean {
  const family = net.isIPv4(ip) ? "ipv4" : net.isIPv6(ip) ? "ipv6" : undefined;
  return family === c.family && c.list.check(ip, family);
}

/**
 * addr_match_list(): CIDR/address entries compared numerically, anything
 * else as a wildcard on the address text. -2 means the list is malformed
 * (an empty entry, or a network with host bits set), which denies.
 */
export function addrMatchList(ip: string, list: string): -2 | -1 | 0 | 1 {
  let got: 0 | 1 = 0;
  for (const raw of list.split(",")) {
    const negated = raw.startsWith("!");
    const entry = negated ? raw.slice(1) : raw;
    if (entry === "") return -2;
    const cidr = parseCidr(entry);
    if (cidr === "bad") return -2;
    const hit = cidr ? inCidr(ip, cidr) : matchPattern(ip.toLowerCase(), entry.toLowerCase());
    if (!hit) continue;
    if (negated) return -1;
    got = 1;
  }
  return got;
}

/** Why a `from=` list is malformed, or undefined when it is fine. */
export function checkFromList(list: string): string | undefined {
  for (const raw of list.split(",")) {
    const entry = raw.startsWith("!") ? raw.slice(1) : raw;
    if (entry === "") return "empty entry";
    if (parseCidr(entry) === "bad") return `bad network "${entry}" (mask length, or host bits set)`;
  }
  return undefined;
}

/**
 * match_host_and_ip() for `from="pattern-list"`. The relay does no reverse
 * DNS (sshd's default, UseDNS no), so the "host name" is the address text
 * and hostname patterns only match addresses written as patterns.
 */
export function fromAllows(list: string, peerIp: string): boolean {
  const ip = normalizeIp(peerIp);
  const byAddr = addrMatchList(ip, list);
  if (byAddr === -2 || byAddr === -1) return false;
  // match_hostname(): the patterns are lowercased, as OpenSSH does for host names.
  const byName = patternListVerdict(ip.toLowerCase(), list.split(","), true);
  if (byName === -1) return false;
  return byName === 1 || byAddr === 1;
}

/**
 * addr_match_cidr_list() for a certificate's `source-address` critical
 * option: a comma list of addresses and CIDR networks only (no wildcards, no
 * negation). "malformed" when an entry is neither, which refuses the
 * certificate as sshd does (auth-options.c cert_option_list).
 */
export function sourceAddressAllows(list: string, peerIp: string): boolean | "malformed" {
  const ip = normalizeIp(peerIp);
  let hit = false;
  for (const entry of list.split(",")) {
    const cidr = parseCidr(entry.trim());
    if (cidr === undefined || cidr === "bad") return "malformed";
    if (inCidr(ip, cidr)) hit = true;
  }
  return hit;
}
