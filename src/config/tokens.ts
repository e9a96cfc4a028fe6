/**
 * ssh_config's %-tokens (ssh_config(5) TOKENS): %h, %p, %r, %u, %d, %C, ...
 * expanded once every source has been applied, as ssh does, so %r, %p and %h
 * see the final user, port and host name (command-line values included).
 */

import { createHash } from "node:crypto";
import { hostname } from "node:os";
import type { ForwardSpec } from "../agent/forward-spec.js";
import { expandTilde } from "../shared/address.js";
import { quote } from "../shared/bounded-text.js";
import { RevtunError } from "../shared/errors.js";
import type { SshOptions } from "./directives.js";

/** What the tokens are computed from, besides the options. */
export interface TokenContext {
  /** The host as typed. */
  host: string;
  user?: string | undefined;
  localUser: string;
}

/** HostName takes only `%h` (the host as typed) and `%%`. */
export function expandHostName(hostName: string | undefined, typed: string): string {
  if (hostName === undefined) return typed;
  return percentExpand(hostName, { h: typed }, "HostName");
}

function percentExpand(value: string, tokens: Record<string, string>, directive: string): string {
  return value.replace(/%(.?)/g, (_m, key: string) => {
    if (key === "%") return "%";
    const v = tokens[key];
    if (v === undefined) {
      throw new RevtunError(
        "CONFIG",
        key === ""
          ? `${directive} ${quote(value)} ends with a lone %; write %% for a percent sign`
          : `${directive} ${quote(value)}: unknown token %${key} (supported: ${Object.keys(tokens)
              .map((k) => `%${k}`)
              .join(" ")} %%)`,
      );
    }
    return v;
  });
}

/**
 * ssh's token expansion, after every source has been applied so that %r, %p
 * and %h see the final user, port and host name (command-line values included).
 */
export function expandTokens(opts: SshOptions, ctx: TokenContext, home: string): void {
  // ssh lowercases the name it connects to, so %h is lowercase too.
  if (opts.hostName !== undefined) opts.hostName = expandHostName(opts.hostName, ctx.host).toLowerCase();
  const host = opts.hostName ?? ctx.host.toLowerCase();
  const user = opts.user ?? ctx.user ?? ctx.localUser;
  const port = String(opts.port ?? 22);
  const local = hostname();
  const tokens: Record<string, string> = {
    d: home,
    u: ctx.localUser,
    h: host,
    r: user,
    p: port,
    n: ctx.host,
    l: local,
    L: local.split(".")[0] ?? local,
    k: opts.hostKeyAlias ?? ctx.host,
    i: String(process.getuid?.() ?? ""),
    C: createHash("sha1").update(`${local}${host}${port}${user}`).digest("hex"),
  };
  const path = (directive: string) => (p: string) => percentExpand(expandTilde(p, home), tokens, directive);
  if (opts.identityFile) opts.identityFile = dedupe(opts.identityFile.map(path("IdentityFile")), (f) => f);
  if (opts.certificateFile)
    opts.certificateFile = dedupe(opts.certificateFile.map(path("CertificateFile")), (f) => f);
  if (opts.userKnownHostsFile) {
    const files = opts.userKnownHostsFile;
    // "none" is ssh's way to say no known_hosts file at all.
    opts.userKnownHostsFile =
      files.length === 1 && files[0]?.toLowerCase() === "none" ? [] : files.map(path("UserKnownHostsFile"));
  }
  const agent = opts.identityAgent;
  if (
    agent !== undefined &&
    agent.toLowerCase() !== "none" &&
    agent !== "SSH_AUTH_SOCK" &&
    !agent.startsWith("$")
  ) {
    opts.identityAgent = path("IdentityAgent")(agent);
  }
  // ssh drops repeated forwards: binding the same port twice would only fail.
  if (opts.remoteForward) opts.remoteForward = dedupe(opts.remoteForward, forwardKey);
}

function forwardKey(f: ForwardSpec): string {
  return JSON.stringify([f.bind, f.target]);
}

function dedupe<T>(items: T[], key: (t: T) => string): T[] {
  const seen = new Set<string>();
  return items.filter((t) => {
    const k = key(t);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}
