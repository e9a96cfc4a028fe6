/**
 * Addresses as users write them and as messages show them: `host:port` with
 * IPv6 hosts in brackets, ssh's `[host]:port` names, `[user@]host[:port]`
 * destinations, `~` paths, and the endpoints a forward connects to.
 */

import { homedir } from "node:os";
import { join } from "node:path";
import { quote } from "./bounded-text.js";
import { RevtunError } from "./errors.js";

/** Where a forwarded connection goes: a TCP host and port, or a unix socket. */
export type Endpoint = { kind: "tcp"; host: string; port: number } | { kind: "unix"; path: string };

/** `host:port`, `[v6]:port`. */
export function formatHostPort(host: string, port: number | string): string {
  return `${host.includes(":") ? `[${host}]` : host}:${port}`;
}

/** A forward's bind address and port as ssh shows it: "" (all interfaces) as `*`. */
export function formatBindAddress(address: string, port: number): string {
  return formatHostPort(address === "" ? "*" : address, port);
}

/** ssh's name for a server: `host` on port 22, `[host]:port` otherwise (known_hosts, prompts, messages). */
export function sshHostName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

export function formatEndpoint(e: Endpoint): string {
  return e.kind === "unix" ? e.path : formatHostPort(e.host, e.port);
}

/** `~` and `~/x` against `home` (the process's home directory when not given). */
export function expandTilde(p: string, home: string = homedir()): string {
  if (p === "~") return home;
  if (p.startsWith("~/")) return join(home, p.slice(2));
  return p;
}

/** One parsed `[user@]host[:port]`. */
export interface UserHostPort {
  user?: string;
  host: string;
  port?: number;
}

/**
 * Parses `[user@]host[:port]`, `ssh://[user@]host[:port]`, with an IPv6 host
 * in brackets; `what` names the value in errors ("destination", "jump host").
 * `allowPort: false` reads a colon as part of the host, as ssh reads its
 * destination argument (the port there comes from -p or ssh://); `where`
 * follows the value in errors ("in -J/ProxyJump").
 */
export function parseUserHostPort(
  text: string,
  what: string,
  opts: { allowPort?: boolean; where?: string } = {},
): UserHostPort {
  const where = opts.where ? ` ${opts.where}` : "";
  const bad = (why: string) => new RevtunError("USAGE", `bad ${what} ${quote(text)}${where}: ${why}`);
  const uri = text.startsWith("ssh://");
  let rest = uri ? text.slice("ssh://".length).replace(/\/$/, "") : text;
  const allowPort = uri || (opts.allowPort ?? true);
  if (rest === "") throw bad("it is empty");
  let user: string | undefined;
  const at = rest.lastIndexOf("@");
  if (at >= 0) {
    user = rest.slice(0, at);
    rest = rest.slice(at + 1);
    if (user === "") throw bad("the user before @ is empty");
  }
  let host = rest;
  let portText: string | undefined;
  const bracketed = /^\[([^\]]+)\](?::(.*))?$/.exec(rest);
  if (bracketed) {
    host = bracketed[1] ?? "";
    portText = bracketed[2];
  } else if (allowPort && rest.includes(":")) {
    const parts = rest.split(":");
    if (parts.length !== 2) throw bad("write an IPv6 address in brackets, e.g. [::1]:22");
    host = parts[0] ?? "";
    portText = parts[1];
  }
  if (portText !== undefined && !allowPort) throw bad("give the port with -p or as ssh://host:port");
  if (host === "") throw bad("the host is empty");
  let port: number | undefined;
  if (portText !== undefined) {
    if (!/^\d+$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
      throw bad(`port ${quote(portText)} is not 1-65535`);
    }
    port = Number(portText);
  }
  return { ...(user !== undefined ? { user } : {}), host, ...(port !== undefined ? { port } : {}) };
}
