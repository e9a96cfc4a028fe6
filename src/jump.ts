/**
 * Jump hosts (-J, ProxyJump): each hop is an SSH session whose direct-tcpip
 * channel carries the next one; the last channel, to the target, is the
 * stream the supervisor's session runs SSH over.
 *
 * Hops authenticate with the target's identities, agent and password and are
 * checked against the same known_hosts files and StrictHostKeyChecking policy
 * (OpenSSH would use each hop's own ssh_config for these; with a config
 * context, the hop's HostName, Port and User do come from ssh_config).
 */
import { userInfo } from "node:os";
import type { Duplex } from "node:stream";
import { type Identity, loadIdentities } from "./auth.js";
import { RevtunError } from "./errors.js";
import type { SshOptions } from "./options.js";
import { Session } from "./session.js";
import { applySshConfig } from "./ssh-config.js";
import { sessionConfig, type TunnelOptions } from "./supervisor.js";

/** One `[user@]host[:port]` of a -J list, as written. */
export interface JumpSpec {
  user?: string | undefined;
  host: string;
  port?: number | undefined;
  text: string;
}

export interface JumpContext {
  /**
   * SSH_AUTH_SOCK as the CLI saw it. Hops use the target's agent setting
   * (`options.agent`, already resolved from IdentityAgent/SSH_AUTH_SOCK), so
   * this is informational only.
   */
  authSock?: string | undefined;
  /** Default login on hops that name no user (ssh's: the local user). */
  localUser?: string;
  /** When given, each hop's HostName, Port and User are looked up in ssh_config, as ssh does. */
  config?: { file?: string | undefined; home?: string } | undefined;
}

interface Hop {
  host: string;
  port: number;
  user: string;
  /** `jump host user@host:port`, the prefix of every message about this hop. */
  label: string;
}

/** Waits this long after our side has finished writing for the channel to close before closing hops anyway. */
const CLOSE_GRACE_MS = 2_000;

function hostPort(host: string, port: number): string {
  return `${host.includes(":") ? `[${host}]` : host}:${port}`;
}

function badJump(value: string, why: string): RevtunError {
  return new RevtunError("USAGE", `bad jump host "${value}" in -J/ProxyJump: ${why}`);
}

/** Parses `[user@]host[:port][,...]` (also `ssh://[user@]host[:port]`), as ssh's -J. */
export function parseJumpHosts(value: string): JumpSpec[] {
  return value.split(",").map((raw) => {
    const text = raw.trim();
    let rest = text.startsWith("ssh://") ? text.slice("ssh://".length).replace(/\/$/, "") : text;
    if (rest === "") throw badJump(value, "an entry is empty");
    let user: string | undefined;
    const at = rest.lastIndexOf("@");
    if (at >= 0) {
      user = rest.slice(0, at);
      rest = rest.slice(at + 1);
      if (user === "") throw badJump(text, "the user before @ is empty");
    }
    let host = rest;
    let portText: string | undefined;
    const bracketed = /^\[([^\]]+)\](?::(.*))?$/.exec(rest);
    if (bracketed) {
      host = bracketed[1] ?? "";
      portText = bracketed[2];
    } else if (rest.includes(":")) {
      const parts = rest.split(":");
      if (parts.length !== 2) throw badJump(text, "write an IPv6 address in brackets, e.g. [::1]:22");
      host = parts[0] ?? "";
      portText = parts[1];
    }
    if (host === "") throw badJump(text, "the host is empty");
    let port: number | undefined;
    if (portText !== undefined) {
      if (!/^\d+$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
        throw badJump(text, `port "${portText}" is not 1-65535`);
      }
      port = Number(portText);
    }
    return { user, host, port, text };
  });
}

async function resolveHop(spec: JumpSpec, ctx: JumpContext): Promise<Hop> {
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
  const host = opts.hostName ?? spec.host;
  const port = opts.port ?? 22;
  const user = opts.user ?? localUser;
  return { host, port, user, label: `jump host ${user}@${hostPort(host, port)}` };
}

/**
 * Returns a copy of `options` whose `dial` opens the chain of jump hosts anew
 * for every connection attempt, or `options` itself for none.
 */
export async function withJumpHosts(
  options: TunnelOptions,
  proxyJump: string | undefined,
  ctx: JumpContext = {},
): Promise<TunnelOptions> {
  if (proxyJump === undefined || proxyJump.trim().toLowerCase() === "none") return options;
  const hops: Hop[] = [];
  for (const spec of parseJumpHosts(proxyJump)) hops.push(await resolveHop(spec, ctx));
  let identities: Promise<Identity[]> | undefined;
  const dial = async (): Promise<Duplex> => {
    identities ??= loadIdentities({
      username: options.username,
      identityFiles: options.identityFiles ?? [],
      passphrase: options.passphrase,
      ...(options.home ? { home: options.home } : {}),
    });
    return openChain(hops, options, await identities);
  };
  return { ...options, dial };
}

/**
 * Connects hop by hop and returns the channel to the target. Whatever happens,
 * the hop sessions end with it: when it closes, when any hop drops, or when
 * building the chain fails half-way.
 */
async function openChain(hops: Hop[], o: TunnelOptions, identities: Identity[]): Promise<Duplex> {
  const base = sessionConfig(o, identities);
  const sessions: Session[] = [];
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    for (const s of [...sessions].reverse()) s.destroy();
  };
  try {
    let sock: Duplex | undefined;
    for (let i = 0; i < hops.length; i++) {
      const hop = hops[i] as Hop;
      // Each hop is checked under its own name and port; ssh passes neither
      // -c nor HostKeyAlias to hops.
      const session = new Session({
        ...base,
        host: hop.host,
        port: hop.port,
        username: hop.user,
        hostKey: { ...base.hostKey, alias: undefined },
        ciphers: undefined,
        sock,
        label: hop.label,
      });
      sessions.push(session);
      await session.connect();
      const next = hops[i + 1];
      sock = await session.openChannel(
        next ? next.host : o.host,
        next ? next.port : (o.port ?? 22),
        base.connectTimeoutMs,
      );
    }
    if (!sock) throw new RevtunError("USAGE", "no jump host given");
    const channel = sock;
    channel.once("close", release);
    // Our side is done once the session has ended its writes; a dead hop may never confirm the close.
    channel.once("finish", () => setTimeout(release, CLOSE_GRACE_MS).unref());
    // A dropped hop has already closed the channels it carried (ssh2 does on close), the target's with them.
    for (const s of sessions) s.once("close", release);
    return channel;
  } catch (err) {
    release();
    throw err;
  }
}
