/**
 * Tunnel names: a bind address that is not an IP address, "localhost", "*"
 * or empty names a tunnel (`ssh -R device42:22:localhost:22 relay`). The
 * relay records `name:port` for the session and opens no listener;
 * operators reach it through the relay with direct-tcpip (`ssh -J relay
 * root@device42`, `-W`, `-L`). Names are DNS host names (RFC 1123 labels,
 * dots allowed, so `device42.fleet` works with an operator's `Host *.fleet`),
 * compared case-insensitively.
 */
import net from "node:net";

/** RFC 1035: 63 bytes a label, 253 a name. */
export const MAX_NAME_LENGTH = 253;
const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/** Whether a bind address names a tunnel rather than an address to listen on. */
export function isTunnelName(address: string): boolean {
  const lower = address.toLowerCase();
  return lower !== "" && lower !== "*" && lower !== "localhost" && net.isIP(address) === 0;
}

/** The canonical (lowercase) name, or why `text` is not a valid tunnel name. */
export function parseTunnelName(text: string): { name: string } | { error: string } {
  if (text.length > MAX_NAME_LENGTH)
    return { error: `a tunnel name is at most ${MAX_NAME_LENGTH} characters` };
  const name = text.toLowerCase();
  const labels = name.split(".");
  if (labels.some((l) => !LABEL.test(l))) {
    return { error: "a tunnel name is DNS labels of letters, digits and inner hyphens, joined by dots" };
  }
  // All digits and dots would read as an (invalid) IPv4 address to ssh and to people.
  if (/^[\d.]+$/.test(name)) return { error: "a tunnel name is not all digits" };
  return { name };
}

/** `name:port`, the key a tunnel is held and reached under. */
export function tunnelKey(name: string, port: number): string {
  return `${name.toLowerCase()}:${port}`;
}
