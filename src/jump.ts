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
import net from "node:net";
import { userInfo } from "node:os";
import type { Duplex } from "node:stream";
import ssh2, { type Client, type ConnectConfig, type ServerHostKeyAlgorithm } from "ssh2";
import { Authenticator, type Identity, loadIdentities } from "./auth.js";
import { RevtunError } from "./errors.js";
import { checkHostKey, knownKeyAlgorithms } from "./known-hosts.js";
import type { SshOptions } from "./options.js";
import { classify } from "./session.js";
import { applySshConfig } from "./ssh-config.js";
import type { TunnelOptions } from "./supervisor.js";

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
  const clients: Client[] = [];
  let tcp: net.Socket | undefined;
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    for (const c of [...clients].reverse()) {
      try {
        c.end();
      } catch {
        // already gone
      }
    }
    // end() says goodbye politely; a peer that never answers must not keep the socket.
    const s = tcp;
    if (s) setTimeout(() => s.destroy(), 1_000).unref();
  };
  try {
    const first = hops[0];
    if (!first) throw new RevtunError("USAGE", "no jump host given");
    tcp = await dialTcp(first, o);
    let sock: Duplex = tcp;
    for (let i = 0; i < hops.length; i++) {
      const hop = hops[i] as Hop;
      const client = new ssh2.Client();
      clients.push(client);
      await connectHop(client, hop, sock, o, identities);
      const next = hops[i + 1];
      sock = await openChannel(
        client,
        hop,
        next ? next.host : o.host,
        next ? next.port : (o.port ?? 22),
        (o.connectTimeout ?? 15) * 1000,
      );
    }
    const channel = sock;
    channel.once("close", release);
    // Our side is done once the session has ended its writes; a dead hop may never confirm the close.
    channel.once("finish", () => setTimeout(release, CLOSE_GRACE_MS).unref());
    // A dropped hop has already closed the channels it carried (ssh2 does on close), the target's with them.
    for (const c of clients) c.once("close", release);
    return channel;
  } catch (err) {
    release();
    tcp?.destroy();
    throw err;
  }
}

function dialTcp(hop: Hop, o: TunnelOptions): Promise<net.Socket> {
  const timeoutMs = (o.connectTimeout ?? 15) * 1000;
  const family = o.addressFamily === "inet" ? 4 : o.addressFamily === "inet6" ? 6 : undefined;
  return new Promise((resolve, reject) => {
    const sock = net.connect({
      host: hop.host,
      port: hop.port,
      noDelay: true,
      ...(family ? { family } : {}),
    });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(
        Object.assign(new RevtunError("CONNECT", `${hop.label}: connect timed out after ${timeoutMs} ms`), {
          reason: "timeout",
        }),
      );
    }, timeoutMs);
    sock.once("connect", () => {
      clearTimeout(timer);
      sock.removeAllListeners("error");
      if (o.tcpKeepAlive ?? true) sock.setKeepAlive(true, Math.max(1, o.serverAliveInterval || 15) * 1000);
      resolve(sock);
    });
    sock.once("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      sock.destroy();
      const what =
        err.code === "ECONNREFUSED"
          ? "connection refused"
          : err.code === "ENOTFOUND" || err.code === "EAI_AGAIN"
            ? `cannot resolve ${hop.host}`
            : err.message;
      reject(Object.assign(new RevtunError("CONNECT", `${hop.label}: ${what}`), { reason: classify(err) }));
    });
  });
}

/** ssh2's default host key algorithms, in its order (as session.ts). */
const HOST_KEY_ALGORITHMS: ServerHostKeyAlgorithm[] = [
  "ssh-ed25519",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "rsa-sha2-512",
  "rsa-sha2-256",
  "ssh-rsa",
];

async function connectHop(
  client: Client,
  hop: Hop,
  sock: Duplex,
  o: TunnelOptions,
  identities: Identity[],
): Promise<void> {
  const files = o.knownHostsFiles ?? [];
  // Ask for the key types known_hosts has for this hop first, so a multi-key server offers one we can check.
  const known = (await knownKeyAlgorithms(hop.host, hop.port, files).catch(() => [] as string[])).filter(
    (k): k is ServerHostKeyAlgorithm => (HOST_KEY_ALGORITHMS as string[]).includes(k),
  );
  const auth = new Authenticator(
    {
      username: hop.user,
      identityFiles: [],
      identitiesOnly: o.identitiesOnly ?? false,
      agent: o.agent,
      password: o.password,
    },
    identities,
  );
  const interval = o.serverAliveInterval ?? 15;
  let failure: Error | undefined;
  let ready = false;
  const config: ConnectConfig = {
    sock: sock as ConnectConfig["sock"],
    username: hop.user,
    readyTimeout: (o.connectTimeout ?? 15) * 1000,
    keepaliveInterval: interval * 1000,
    keepaliveCountMax: o.serverAliveCountMax ?? 3,
    authHandler: auth.handler,
    ...(known.length
      ? { algorithms: { serverHostKey: [...new Set([...known, ...HOST_KEY_ALGORITHMS])] } }
      : {}),
    hostVerifier: (key: Buffer, verify: (ok: boolean) => void) => {
      checkHostKey(
        {
          host: hop.host,
          port: hop.port,
          files,
          policy: o.strictHostKeyChecking ?? "ask",
          hashKnownHosts: o.hashKnownHosts ?? false,
          ...(o.confirmHostKey ? { confirm: o.confirmHostKey } : {}),
        },
        key,
      ).then(
        () => verify(true),
        (err: Error) => {
          failure = err instanceof RevtunError ? prefixed(hop, err) : err;
          verify(false);
        },
      );
    },
  };
  await new Promise<void>((resolve, reject) => {
    client.on("error", (err: Error & { level?: string; code?: string }) => {
      // An agent that cannot be reached is one method failing, not the hop.
      if (err.level === "agent") return;
      failure ??= explain(hop, auth, err);
      if (!ready) reject(failure);
    });
    client.once("ready", () => {
      ready = true;
      resolve();
    });
    client.once("close", () => {
      if (!ready)
        reject(failure ?? new RevtunError("CONNECT", `${hop.label}: connection closed during handshake`));
    });
    client.connect(config);
    resetKeepaliveOnData(client, sock, interval);
  });
}

/**
 * As session.ts: any bytes from the server prove it alive, so a long transfer
 * whose keepalive replies queue behind data does not look dead.
 */
function resetKeepaliveOnData(client: Client, sock: Duplex, interval: number): void {
  const reset = (client as unknown as { _resetKA?: () => void })._resetKA;
  if (typeof reset !== "function" || interval <= 0) return;
  let last = 0;
  sock.on("data", () => {
    const now = Date.now();
    if (now - last < 250) return;
    last = now;
    reset();
  });
}

function prefixed(hop: Hop, err: RevtunError): RevtunError {
  return Object.assign(new RevtunError(err.code, `${hop.label}: ${err.message}`, { cause: err }), {
    reason: (err as { reason?: string }).reason,
  });
}

function explain(hop: Hop, auth: Authenticator, err: Error & { level?: string; code?: string }): Error {
  if (err instanceof RevtunError) return prefixed(hop, err);
  const reason = classify(err);
  // Refused credentials are the same mistake on a hop as on the target, so the
  // supervisor treats them the same way (fatal before the tunnel was ever up).
  if (reason === "auth") return prefixed(hop, auth.failure(`${hop.user}@${hostPort(hop.host, hop.port)}`));
  const what =
    reason === "timeout"
      ? "timed out during the SSH handshake"
      : reason === "keepalive-timeout"
        ? "stopped answering keepalives"
        : err.message;
  return Object.assign(new RevtunError("CONNECT", `${hop.label}: ${what}`), { reason });
}

function openChannel(
  client: Client,
  hop: Hop,
  host: string,
  port: number,
  timeoutMs: number,
): Promise<Duplex> {
  const target = hostPort(host, port);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () =>
        reject(
          new RevtunError(
            "CONNECT",
            `${hop.label}: no answer opening a channel to ${target} after ${timeoutMs} ms`,
          ),
        ),
      timeoutMs,
    );
    try {
      client.forwardOut("127.0.0.1", 0, host, port, (err, channel) => {
        clearTimeout(timer);
        if (err) {
          reject(
            Object.assign(
              new RevtunError("CONNECT", `${hop.label}: cannot reach ${target} through it: ${err.message}`),
              {
                reason: "refused",
              },
            ),
          );
          return;
        }
        // SSH cannot run half-closed: when the far end stops sending, close our half
        // too, as a TCP socket without allowHalfOpen would. Otherwise sshd keeps the
        // channel open waiting for our EOF while ssh2 waits for a close that never comes.
        channel.once("end", () => channel.destroy());
        resolve(channel);
      });
    } catch (err) {
      clearTimeout(timer);
      reject(new RevtunError("CONNECT", `${hop.label}: ${(err as Error).message}`));
    }
  });
}
