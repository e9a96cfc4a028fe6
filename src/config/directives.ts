/**
 * OpenSSH options (`-o Name=value`, ssh_config directives, YAML tunnel keys):
 * one table of the directives revtun understands, each with its parser, used
 * by every source so a value means the same wherever it is written.
 *
 * Precedence is OpenSSH's: the first value obtained wins (command line before
 * config files), except for the list options, which accumulate.
 */

import { type ForwardSpec, parseConfigRemoteForward } from "../agent/forward-spec.js";
import type { StrictHostKeyChecking } from "../agent/known-hosts.js";
import { quote } from "../shared/bounded-text.js";
import { RevtunError } from "../shared/errors.js";

export interface SshOptions {
  hostName?: string;
  port?: number;
  user?: string;
  identityFile?: string[];
  certificateFile?: string[];
  identitiesOnly?: boolean;
  userKnownHostsFile?: string[];
  strictHostKeyChecking?: StrictHostKeyChecking;
  hashKnownHosts?: boolean;
  hostKeyAlias?: string;
  connectTimeout?: number;
  ciphers?: string[];
  exitOnForwardFailure?: boolean;
  serverAliveInterval?: number;
  serverAliveCountMax?: number;
  tcpKeepAlive?: boolean;
  batchMode?: boolean;
  addressFamily?: "any" | "inet" | "inet6";
  remoteForward?: ForwardSpec[];
  proxyJump?: string;
  streamLocalBindUnlink?: boolean;
  identityAgent?: string;
  pubkeyAuthentication?: boolean;
  passwordAuthentication?: boolean;
  kbdInteractiveAuthentication?: boolean;
  preferredAuthentications?: string[];
}

type Parser<K extends keyof SshOptions> = (value: string, name: string) => NonNullable<SshOptions[K]>;

interface Directive<K extends keyof SshOptions = keyof SshOptions> {
  key: K;
  parse: Parser<K>;
  /** List options accumulate across sources instead of first-wins. */
  list?: boolean;
}

function bad(name: string, value: string, expected: string): RevtunError {
  return new RevtunError("USAGE", `bad value for ${name}: ${quote(value)} (expected ${expected})`);
}

const yesNo = (value: string, name: string): boolean => {
  const v = value.toLowerCase();
  if (v === "yes" || v === "true") return true;
  if (v === "no" || v === "false") return false;
  throw bad(name, value, "yes or no");
};

const int =
  (min: number, max: number) =>
  (value: string, name: string): number => {
    if (!/^\d+$/.test(value.trim())) throw bad(name, value, `a whole number from ${min} to ${max}`);
    const n = Number(value);
    if (n < min || n > max) throw bad(name, value, `a whole number from ${min} to ${max}`);
    return n;
  };

const str = (value: string, name: string): string => {
  if (value.trim() === "") throw bad(name, value, "a non-empty value");
  return value.trim();
};

const list = (value: string, name: string): string[] => {
  const items = value
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  if (items.length === 0) throw bad(name, value, "a comma-separated list");
  return items;
};

const oneOf =
  <T extends string>(...allowed: T[]) =>
  (value: string, name: string): T => {
    const v = value.toLowerCase() as T;
    if (!allowed.includes(v)) throw bad(name, value, allowed.join(", "));
    return v;
  };

const strict = (value: string, name: string): StrictHostKeyChecking => {
  const v = value.toLowerCase();
  if (v === "yes" || v === "true") return "yes";
  if (v === "no" || v === "off" || v === "false") return "no";
  if (v === "accept-new") return "accept-new";
  if (v === "ask") return "ask";
  throw bad(name, value, "yes, accept-new, no or ask");
};

function d<K extends keyof SshOptions>(key: K, parse: Parser<K>, isList = false): Directive<K> {
  return { key, parse, list: isList };
}

/** Directives revtun acts on, by lower-case name (OpenSSH names are case-insensitive). */
const DIRECTIVES: Record<string, Directive> = {
  hostname: d("hostName", str),
  port: d("port", int(1, 65535)),
  user: d("user", str),
  identityfile: d("identityFile", (v) => [str(v, "IdentityFile")], true),
  certificatefile: d("certificateFile", (v) => [str(v, "CertificateFile")], true),
  identitiesonly: d("identitiesOnly", yesNo),
  userknownhostsfile: d("userKnownHostsFile", (v) => v.trim().split(/\s+/).filter(Boolean)),
  stricthostkeychecking: d("strictHostKeyChecking", strict),
  hashknownhosts: d("hashKnownHosts", yesNo),
  hostkeyalias: d("hostKeyAlias", str),
  connecttimeout: d("connectTimeout", int(1, 86_400)),
  ciphers: d("ciphers", list),
  exitonforwardfailure: d("exitOnForwardFailure", yesNo),
  serveraliveinterval: d("serverAliveInterval", int(0, 86_400)),
  serveralivecountmax: d("serverAliveCountMax", int(1, 1_000)),
  tcpkeepalive: d("tcpKeepAlive", yesNo),
  batchmode: d("batchMode", yesNo),
  addressfamily: d("addressFamily", oneOf("any", "inet", "inet6")),
  remoteforward: d("remoteForward", (v) => [parseConfigRemoteForward(v)], true),
  proxyjump: d("proxyJump", str),
  streamlocalbindunlink: d("streamLocalBindUnlink", yesNo),
  identityagent: d("identityAgent", str),
  pubkeyauthentication: d("pubkeyAuthentication", yesNo),
  passwordauthentication: d("passwordAuthentication", yesNo),
  kbdinteractiveauthentication: d("kbdInteractiveAuthentication", yesNo),
  preferredauthentications: d("preferredAuthentications", list),
};

/**
 * Accepted and deliberately without effect: they only concern sessions that
 * run commands or terminals, which revtun never opens.
 */
export const IGNORED_OPTIONS = [
  "RequestTTY",
  "ForwardAgent",
  "ForwardX11",
  "ForwardX11Trusted",
  "EscapeChar",
  "LogLevel",
  "CheckHostIP",
  "UpdateHostKeys",
  "VisualHostKey",
  "SendEnv",
  "SetEnv",
  "PermitLocalCommand",
  "ControlMaster",
  "ControlPath",
  "ControlPersist",
  "GSSAPIAuthentication",
  "AddKeysToAgent",
];
const IGNORED = new Set(IGNORED_OPTIONS.map((s) => s.toLowerCase()));

/** Canonical spelling of every directive revtun acts on, for help and errors. */
export const SUPPORTED_OPTIONS = [
  "HostName",
  "Port",
  "User",
  "IdentityFile",
  "CertificateFile",
  "IdentitiesOnly",
  "IdentityAgent",
  "UserKnownHostsFile",
  "StrictHostKeyChecking",
  "HashKnownHosts",
  "HostKeyAlias",
  "ConnectTimeout",
  "Ciphers",
  "ExitOnForwardFailure",
  "ServerAliveInterval",
  "ServerAliveCountMax",
  "TCPKeepAlive",
  "BatchMode",
  "AddressFamily",
  "RemoteForward",
  "ProxyJump",
  "StreamLocalBindUnlink",
  "PubkeyAuthentication",
  "PasswordAuthentication",
  "KbdInteractiveAuthentication",
  "PreferredAuthentications",
];

export type SetResult = "set" | "kept" | "ignored" | "unsupported";

/**
 * Applies `name value` to `opts` with first-value-wins. Returns what happened,
 * so the caller decides whether an unsupported name is an error (`-o`) or a
 * debug note (ssh_config files carry many directives revtun has no use for).
 */
export function setOption(opts: SshOptions, name: string, value: string): SetResult {
  const lname = name.toLowerCase();
  if (IGNORED.has(lname)) return "ignored";
  const dir = DIRECTIVES[lname];
  if (!dir) return "unsupported";
  const parsed = dir.parse(value, canonicalName(name));
  const target = opts as Record<string, unknown>;
  if (dir.list) {
    target[dir.key] = [...((target[dir.key] as unknown[] | undefined) ?? []), ...(parsed as unknown[])];
    return "set";
  }
  if (target[dir.key] !== undefined) return "kept";
  target[dir.key] = parsed;
  return "set";
}

export function canonicalName(name: string): string {
  const l = name.toLowerCase();
  return [...SUPPORTED_OPTIONS, ...IGNORED_OPTIONS].find((n) => n.toLowerCase() === l) ?? name;
}

/** Parses one `-o` argument: `Name=value`, `Name value` or `Name = value`. */
export function parseDashO(arg: string): { name: string; value: string } {
  const m = /^\s*([A-Za-z][A-Za-z0-9]*)\s*(?:=\s*|\s+)(.*)$/.exec(arg);
  if (!m?.[1] || m[2] === undefined || m[2].trim() === "") {
    throw new RevtunError(
      "USAGE",
      `bad -o argument ${quote(arg)}: expected Option=value, e.g. -o ServerAliveInterval=15`,
    );
  }
  return { name: m[1], value: m[2].trim() };
}

/** Applies a `-o` argument; unlike ssh_config, an unknown option is an error here. */
export function applyDashO(opts: SshOptions, arg: string): void {
  const { name, value } = parseDashO(arg);
  if (setOption(opts, name, value) === "unsupported") {
    throw new RevtunError(
      "USAGE",
      `unsupported option ${quote(name)} in -o ${arg}; revtun supports: ${SUPPORTED_OPTIONS.join(", ")}`,
    );
  }
}
