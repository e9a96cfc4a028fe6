/**
 * ssh2's algorithm settings from OpenSSH's syntax: the Ciphers list with its
 * +, - and ^ prefixes, and the host key algorithm order.
 */
import type { ConnectConfig, ServerHostKeyAlgorithm } from "ssh2";

/** ssh2's default host key algorithms (lib/protocol/constants.js), in its order. */
const HOST_KEY_ALGORITHMS = [
  "ssh-ed25519",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "rsa-sha2-512",
  "rsa-sha2-256",
  "ssh-rsa",
];

/**
 * Asks for the key types known_hosts already has first, as OpenSSH does, so a
 * server with several host keys offers one we can check. ssh2's `prepend`
 * ignores names already in its list, hence a full ordered list.
 */
export function hostKeyOrder(known: string[]): ServerHostKeyAlgorithm[] {
  const usable = known.filter((k) => HOST_KEY_ALGORITHMS.includes(k));
  return [...new Set([...usable, ...HOST_KEY_ALGORITHMS])] as ServerHostKeyAlgorithm[];
}

type CipherSetting = NonNullable<NonNullable<ConnectConfig["algorithms"]>["cipher"]>;

/** OpenSSH's Ciphers syntax: a list, or +append, -remove, ^prepend. */
export function cipherList(ciphers: string[]): CipherSetting {
  const first = ciphers[0] ?? "";
  const strip = (list: string[]) => list.map((c, i) => (i === 0 ? c.slice(1) : c));
  if (first.startsWith("+")) return { append: strip(ciphers) } as CipherSetting;
  if (first.startsWith("-")) return { remove: strip(ciphers) } as CipherSetting;
  if (first.startsWith("^")) return { prepend: strip(ciphers) } as CipherSetting;
  return ciphers as CipherSetting;
}
