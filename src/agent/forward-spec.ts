/**
 * Remote forward specifications, in OpenSSH's two spellings:
 *   -R [bind_address:]port:host:hostport        (command line)
 *   RemoteForward [bind_address:]port host:hostport   (ssh_config)
 * Either side may be a unix socket path instead (streamlocal, RFC-less OpenSSH extension).
 */

import type { Endpoint } from "../shared/address.js";
import { formatHostPort } from "../shared/address.js";
import { quote } from "../shared/bounded-text.js";
import { RevtunError } from "../shared/errors.js";

/** Where the server listens. `address` undefined means ssh's default (loopback). */
export type BindSpec =
  | { kind: "tcp"; address: string | undefined; port: number }
  | { kind: "unix"; path: string };

export interface ForwardSpec {
  bind: BindSpec;
  target: Endpoint;
  /** The text the user wrote, for messages. */
  text: string;
}

/**
 * The address sent in `tcpip-forward`, as OpenSSH's channel_rfwd_bind_host():
 * none → "localhost"; "" or "*" → "" (all interfaces, if the server allows).
 * ssh2 matches incoming channels by the exact string the server echoes back,
 * so the wire form must be computed in one place.
 */
export function wireBindAddress(address: string | undefined): string {
  if (address === undefined) return "localhost";
  if (address === "" || address === "*") return "";
  return address;
}

/** Splits on ':' outside brackets, as OpenSSH's hpdelim(). */
function splitFields(text: string): string[] {
  const out: string[] = [];
  let cur = "";
  let depth = 0;
  for (const ch of text) {
    if (ch === "[") depth++;
    else if (ch === "]") depth = Math.max(0, depth - 1);
    if (ch === ":" && depth === 0) {
      out.push(cur);
      cur = "";
    } else cur += ch;
  }
  out.push(cur);
  return out;
}

function unbracket(host: string): string {
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}

function parsePort(value: string, what: string, bad: string, allowZero: boolean): number {
  if (!/^\d+$/.test(value)) {
    throw new RevtunError("USAGE", `${bad}: ${what} ${quote(value)} is not a port number`);
  }
  const n = Number(value);
  if (n > 65535 || (!allowZero && n === 0)) {
    throw new RevtunError("USAGE", `${bad}: ${what} ${n} is out of range (${allowZero ? 0 : 1}-65535)`);
  }
  return n;
}

const isPath = (s: string) => s.startsWith("/") || s.startsWith("./") || s.startsWith("~/");

function parseTarget(fields: string[], bad: string): Endpoint {
  if (fields.length === 1 && fields[0] !== undefined && isPath(fields[0])) {
    return { kind: "unix", path: fields[0] };
  }
  if (fields.length !== 2) {
    throw new RevtunError("USAGE", `${bad}: expected host:hostport or /path/to/socket`);
  }
  const [host = "", port = ""] = fields;
  if (host === "") throw new RevtunError("USAGE", `${bad}: the target host is empty`);
  return { kind: "tcp", host: unbracket(host), port: parsePort(port, "hostport", bad, false) };
}

function parseBind(fields: string[], bad: string): BindSpec {
  if (fields.length === 1 && fields[0] !== undefined && isPath(fields[0])) {
    return { kind: "unix", path: fields[0] };
  }
  if (fields.length === 1) {
    return { kind: "tcp", address: undefined, port: parsePort(fields[0] ?? "", "port", bad, true) };
  }
  if (fields.length === 2) {
    const [addr = "", port = ""] = fields;
    return { kind: "tcp", address: unbracket(addr), port: parsePort(port, "port", bad, true) };
  }
  throw new RevtunError("USAGE", `${bad}: too many ':'-separated fields`);
}

/** Parses a `-R` argument. */
export function parseRemoteForward(spec: string): ForwardSpec {
  return parseSpec(spec, `bad forward spec ${quote(spec)}`);
}

/** `bad` starts every error message: it names the value as the user wrote it. */
function parseSpec(spec: string, bad: string): ForwardSpec {
  const text = spec.trim();
  if (text === "") throw new RevtunError("USAGE", `${bad}: it is empty`);
  const fields = splitFields(text);
  // Try the split between bind and target that leaves a valid target:
  // target is host:port (2 fields) or a socket path (1 field).
  const last = fields[fields.length - 1] ?? "";
  const targetFields = isPath(last) ? 1 : 2;
  if (fields.length <= targetFields) {
    throw new RevtunError(
      "USAGE",
      `${bad}: expected [bind_address:]port:host:hostport (dynamic -R port forwarding is not supported)`,
    );
  }
  const bind = parseBind(fields.slice(0, fields.length - targetFields), bad);
  const target = parseTarget(fields.slice(fields.length - targetFields), bad);
  return { bind, target, text };
}

/** Parses an ssh_config `RemoteForward` value: `[bind:]port host:hostport`. */
export function parseConfigRemoteForward(value: string): ForwardSpec {
  const parts = value.trim().split(/\s+/);
  if (parts.length !== 2) {
    throw new RevtunError(
      "USAGE",
      `bad RemoteForward ${quote(value)}: expected "[bind_address:]port host:hostport" (two fields)`,
    );
  }
  const parsed = parseSpec(`${parts[0]}:${parts[1]}`, `bad RemoteForward ${quote(value)}`);
  return { ...parsed, text: value.trim() };
}

export function formatBind(bind: BindSpec): string {
  if (bind.kind === "unix") return bind.path;
  const a = bind.address;
  if (a === undefined) return String(bind.port);
  return formatHostPort(a, bind.port);
}
