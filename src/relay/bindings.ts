/**
 * The port table: which session listens on which (address, port), the
 * listening sockets themselves, and stale-binding takeover.
 *
 * Takeover exists because a reverse tunnel's agent that lost its network
 * reconnects long before the relay can notice the old connection is dead
 * (keepalives take tens of seconds). The same key asking again for what it
 * already holds is that agent coming back, so the new session gets the port
 * at once; a different key asking is refused.
 *
 * Tunnel names (names.ts) live here too, as bindings with no sockets: a
 * name:port held by one key is refused to every other key, but the same
 * key may hold it from several sessions at once (a device with two links,
 * or one that reconnected before the relay noticed the old link died). The
 * newest holder is preferred; the older ones stay as fallbacks until they
 * end, so no takeover (which would close the stale session) is needed.
 */

import net from "node:net";
import { formatBindAddress, formatHostPort } from "../shared/address.js";
import { ipBytes } from "./address-match.js";
import { tunnelKey } from "./names.js";
import type { BindTarget, ListenHost } from "./policy.js";

export interface BindingOwner {
  readonly id: number;
  readonly fingerprint: string;
  /** A connection arrived on one of the owner's bindings. */
  onConnection(binding: Binding, socket: net.Socket): void;
}

export type ReleaseReason =
  | "cancelled"
  | "session-closed"
  | "taken-over"
  | "no-longer-permitted"
  | "relay-closing";

export class Binding {
  /** Actual port: the allocated one when the client asked for 0. */
  port = 0;
  /** Addresses actually listened on. */
  listening: string[] = [];
  released: ReleaseReason | undefined;
  readonly servers: net.Server[] = [];
  readonly createdAt = Date.now();

  constructor(
    readonly owner: BindingOwner,
    readonly target: BindTarget,
    /** Port as the client asked for it (0 = allocate). */
    readonly requestedPort: number,
  ) {}

  /** `address:port` as the client sees it, for messages. */
  get label(): string {
    const a = this.target.requested;
    return formatBindAddress(a, this.port || this.requestedPort);
  }
}

export type BindOutcome =
  | { ok: true; binding: Binding; takenOver: Binding[] }
  | { ok: false; reason: string; heldBy?: Binding };

/** What one ListenHost covers, for overlap tests between bindings on one port. */
type Coverage = { any4: boolean; any6: boolean; exact?: string };

function coverage(h: ListenHost): Coverage {
  if (h.host === "::") return { any4: !h.ipv6Only, any6: true };
  if (h.host === "0.0.0.0") return { any4: true, any6: false };
  const bytes = ipBytes(h.host);
  return { any4: false, any6: false, exact: bytes ? Buffer.from(bytes).toString("hex") : h.host };
}

function family(c: Coverage): 4 | 6 | undefined {
  if (!c.exact) return undefined;
  return c.exact.length === 8 ? 4 : 6;
}

function coversEachOther(a: Coverage, b: Coverage): boolean {
  if (a.exact && b.exact) return a.exact === b.exact;
  const fa = family(a);
  const fb = family(b);
  if ((a.any4 && (b.any4 || fb === 4)) || (a.any6 && (b.any6 || fb === 6))) return true;
  return (b.any4 && fa === 4) || (b.any6 && fa === 6);
}

export function targetsOverlap(a: BindTarget, b: BindTarget): boolean {
  return a.hosts.some((x) => b.hosts.some((y) => coversEachOther(coverage(x), coverage(y))));
}

function listenOnce(h: ListenHost, port: number, onConnection: (s: net.Socket) => void): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    // allowHalfOpen: a client's FIN must reach the agent as EOF while the
    // reply still flows back (splice does the rest). pauseOnConnect: no byte
    // is read before there is a channel to put it in.
    const srv = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, onConnection);
    srv.once("error", reject);
    srv.listen({ host: h.host, port, ipv6Only: h.ipv6Only ?? false }, () => {
      srv.removeListener("error", reject);
      // Accept errors (EMFILE and the like) must not crash the relay; the
      // listener stays and the next accept may succeed.
      srv.on("error", () => {});
      resolve(srv);
    });
  });
}

/** Listens on every host of `target`; the first sets the port when 0 was asked for. */
async function listenAll(b: Binding, onConnection: (s: net.Socket) => void): Promise<void> {
  let port = b.requestedPort;
  for (const h of b.target.hosts) {
    let srv: net.Server;
    try {
      srv = await listenOnce(h, port, onConnection);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (h.optional) continue;
      // "" / "*" on a host without IPv6: fall back to IPv4 only.
      if (h.host === "::" && !h.ipv6Only && (code === "EAFNOSUPPORT" || code === "EADDRNOTAVAIL")) {
        srv = await listenOnce({ host: "0.0.0.0" }, port, onConnection);
      } else {
        throw err;
      }
    }
    b.servers.push(srv);
    if (b.released) break;
    const addr = srv.address() as net.AddressInfo;
    port = addr.port;
    b.port = addr.port;
    b.listening.push(formatHostPort(addr.address, addr.port));
  }
}

export class BindingTable {
  private readonly entries = new Set<Binding>();
  /** Name bindings by tunnelKey, oldest first (entries removed when empty). */
  private readonly names = new Map<string, Binding[]>();

  get size(): number {
    return this.entries.size;
  }

  all(): Binding[] {
    return [...this.entries];
  }

  /**
   * Grants `target`:`port` to `owner`, first releasing overlapping bindings
   * of other sessions of the same key. The binding is in the table before
   * its sockets listen, so a concurrent request for the same port sees it.
   */
  async bind(owner: BindingOwner, target: BindTarget, port: number): Promise<BindOutcome> {
    if (target.scope === "name") return this.bindName(owner, target, port);
    const takenOver: Binding[] = [];
    if (port !== 0) {
      const conflicts = [...this.entries].filter(
        (b) => (b.port || b.requestedPort) === port && targetsOverlap(b.target, target),
      );
      const foreign = conflicts.find((b) => b.owner.fingerprint !== owner.fingerprint);
      if (foreign) return { ok: false, reason: `${foreign.label} is held by another key`, heldBy: foreign };
      const own = conflicts.find((b) => b.owner === owner);
      if (own) return { ok: false, reason: `${own.label} is already bound by this session`, heldBy: own };
      for (const old of conflicts) {
        this.release(old, "taken-over");
        takenOver.push(old);
      }
    }
    const binding = new Binding(owner, target, port);
    this.entries.add(binding);
    const onConnection = (socket: net.Socket) => {
      if (binding.released) socket.destroy();
      else owner.onConnection(binding, socket);
    };
    try {
      for (let attempt = 0; ; attempt++) {
        try {
          await listenAll(binding, onConnection);
          break;
        } catch (err) {
          // A binding taken over while its own sockets were still opening
          // closes them a moment later; wait for that rather than refuse.
          const busy = (err as NodeJS.ErrnoException).code === "EADDRINUSE";
          if (!busy || takenOver.length === 0 || attempt >= 5 || binding.released) throw err;
          closeServers(binding);
          binding.servers.length = 0;
          binding.listening = [];
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    } catch (err) {
      this.entries.delete(binding);
      closeServers(binding);
      const e = err as NodeJS.ErrnoException;
      const why =
        e.code === "EADDRINUSE" ? "address in use" : e.code === "EACCES" ? "permission denied" : e.message;
      return { ok: false, reason: `cannot listen on ${binding.label}: ${why}` };
    }
    if (binding.released) {
      // Released (taken over, or its session ended) while its sockets were opening.
      closeServers(binding);
      return { ok: false, reason: `${binding.label} was released while binding (${binding.released})` };
    }
    return { ok: true, binding, takenOver };
  }

  /** The sessions holding tunnel `name`:`port`, newest first. */
  holders(name: string, port: number): Binding[] {
    return [...(this.names.get(tunnelKey(name, port)) ?? [])].reverse();
  }

  private bindName(owner: BindingOwner, target: BindTarget, port: number): BindOutcome {
    const key = tunnelKey(target.name ?? target.requested, port);
    const held = this.names.get(key) ?? [];
    const foreign = held.find((b) => b.owner.fingerprint !== owner.fingerprint);
    if (foreign) return { ok: false, reason: `${key} is held by another key`, heldBy: foreign };
    const own = held.find((b) => b.owner === owner);
    if (own) return { ok: false, reason: `${key} is already bound by this session`, heldBy: own };
    const binding = new Binding(owner, target, port);
    binding.port = port;
    this.entries.add(binding);
    held.push(binding);
    this.names.set(key, held);
    return { ok: true, binding, takenOver: [] };
  }

  /** Stops listening; connections already forwarded are left to their session. */
  release(b: Binding, reason: ReleaseReason): boolean {
    if (b.released) return false;
    b.released = reason;
    this.entries.delete(b);
    if (b.target.scope === "name") {
      const key = tunnelKey(b.target.name ?? b.target.requested, b.requestedPort);
      const left = (this.names.get(key) ?? []).filter((x) => x !== b);
      if (left.length > 0) this.names.set(key, left);
      else this.names.delete(key);
    }
    closeServers(b);
    return true;
  }
}

function closeServers(b: Binding): void {
  // close() shuts the listening socket at once; its callback would wait for
  // accepted connections, which belong to the session, so none is passed.
  for (const s of b.servers) s.close();
}
