/**
 * -J / ProxyJump: `[user@]host[:port][,...]` (also `ssh://…`), each hop's
 * HostName, Port and User looked up in ssh_config as ssh does, into the
 * resolved hops the agent's TunnelOptions.jumpHosts takes.
 */
import { userInfo } from "node:os";
import type { JumpHost } from "../agent/options.js";
import { parseUserHostPort } from "../shared/address.js";
import { quote } from "../shared/bounded-text.js";
import { RevtunError } from "../shared/errors.js";
import type { SshOptions } from "./directives.js";
import { applySshConfig } from "./ssh-config.js";

/** One `[user@]host[:port]` of a -J list, as written. */
export interface JumpSpec {
  user?: string | undefined;
  host: string;
  port?: number | undefined;
  text: string;
}

export interface JumpContext {
  /** Default login on hops that name no user (ssh's: the local user). */
  localUser?: string;
  /** When given, each hop's HostName, Port and User are looked up in ssh_config, as ssh does. */
  config?: { file?: string | undefined; home?: string } | undefined;
}

/** Parses `[user@]host[:port][,...]` (also `ssh://[user@]host[:port]`), as ssh's -J. */
export function parseJumpHosts(value: string): JumpSpec[] {
  return value.split(",").map((raw) => {
    const text = raw.trim();
    if (text === "")
      throw new RevtunError("USAGE", `bad jump host ${quote(value)} in -J/ProxyJump: an entry is empty`);
    return { ...parseUserHostPort(text, "jump host", { where: "in -J/ProxyJump" }), text };
  });
}

async function resolveHop(spec: JumpSpec, ctx: JumpContext): Promise<JumpHost> {
  const localUser = ctx.localUser ?? userInfo().username;
  const opts: SshOptions = {};
  if (spec.user !== undefined) opts.user = spec.user;
  if (spec.port !== undefined) opts.port = spec.port;
  if (ctx.config) {
    await applySshConfig(opts, {
      host: spec.host,
      file: ctx.config.file,
      localUser,
      ...(ctx.config.home ? { home: ctx.config.home } : {}),
      ...(spec.user ? { user: spec.user } : {}),
    });
  }
  return { host: opts.hostName ?? spec.host, port: opts.port ?? 22, username: opts.user ?? localUser };
}

/** The hops of a ProxyJump value; none for undefined or "none". */
export async function resolveJumpHosts(
  proxyJump: string | undefined,
  ctx: JumpContext = {},
): Promise<JumpHost[]> {
  if (proxyJump === undefined || proxyJump.trim().toLowerCase() === "none") return [];
  const hops: JumpHost[] = [];
  for (const spec of parseJumpHosts(proxyJump)) hops.push(await resolveHop(spec, ctx));
  return hops;
}
