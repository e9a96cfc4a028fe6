/**
 * Jump hosts (-J, ProxyJump): each hop is an SSH session whose direct-tcpip
 * channel carries the next one; the last channel, to the target, is the
 * stream the tunnel's session runs SSH over. The hops come resolved
 * (config/jump-hosts.ts reads -J and ssh_config).
 *
 * Hops authenticate with the target's identities, agent and password and are
 * checked against the same known_hosts files and StrictHostKeyChecking policy
 * (OpenSSH would use each hop's own ssh_config for these).
 */
import type { Duplex } from "node:stream";
import { formatHostPort } from "../shared/address.js";
import type { Identity } from "./identities.js";
import type { JumpHost, ResolvedTunnelOptions } from "./options.js";
import { Session, sessionConfig } from "./session.js";

/** Waits this long after our side has finished writing for the channel to close before closing hops anyway. */
const CLOSE_GRACE_MS = 2_000;

/** `jump host user@host:port`, the prefix of every message about a hop. */
export function jumpLabel(hop: JumpHost): string {
  return `jump host ${hop.username}@${formatHostPort(hop.host, hop.port)}`;
}

/**
 * Connects hop by hop and returns the channel to the target. Whatever happens,
 * the hop sessions end with it: when it closes, when any hop drops, or when
 * building the chain fails half-way.
 */
export async function openJumpChain(
  hops: JumpHost[],
  o: ResolvedTunnelOptions,
  identities: Identity[],
): Promise<Duplex> {
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
      const hop = hops[i] as JumpHost;
      // Each hop is checked under its own name and port; ssh passes neither
      // -c nor HostKeyAlias to hops.
      const session = new Session({
        ...base,
        host: hop.host,
        port: hop.port,
        username: hop.username,
        hostKey: { ...base.hostKey, alias: undefined },
        ciphers: undefined,
        sock,
        label: jumpLabel(hop),
      });
      sessions.push(session);
      await session.connect();
      const next = hops[i + 1];
      sock = await session.openChannel(
        next ? next.host : o.host,
        next ? next.port : o.port,
        base.connectTimeoutMs,
      );
    }
    if (!sock) throw new Error("no jump host given");
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
