/**
 * This relay as a member of a fleet: the wiring index.ts describes, in one
 * place, so relay.ts only calls start/close, bound/released and hands
 * `tunnels` to its sessions.
 *
 *  - The fleet key is admitted as a peer through a synthetic authorized_keys
 *    line: permitopen to any name and port, no permitlisten and no port
 *    forwarding, so a peer can reach names and nothing else; tunnels.ts
 *    recognises it (isPeer) and never routes a peer's request on again, so
 *    two relays cannot bounce a channel between them.
 *  - Names bound here are announced with the session id as the hold and
 *    withdrawn when released (cancel, session close, relay closing); the
 *    registry keeps its own table and re-announces it after a Redis outage.
 */
import net from "node:net";
import { formatHostPort } from "../../shared/address.js";
import { fingerprintSha256 } from "../../shared/keys.js";
import { normalizeIp } from "../address-match.js";
import type { AuthorizedKey } from "../authorized-keys.js";
import { sourceOf } from "../session.js";
import type { FleetKey } from "./fleet-key.js";
import type { FleetTimings, RedisTarget } from "./fleet-options.js";
import { PeerPool } from "./peer-client.js";
import { FleetRegistry } from "./registry.js";
import { type FleetRoute, type FleetTarget, openViaFleet } from "./route.js";

export interface FleetMemberOptions {
  redis: RedisTarget;
  fleetKey: FleetKey;
  relayId: string;
  advertise: string;
  timings: FleetTimings;
  prefix?: string | undefined;
  /** This relay's host key blob: peers accept only it (no TOFU, see peer-client.ts). */
  hostKeyBlob: Buffer;
}

export interface FleetMemberEvents {
  degraded(x: { relayId: string; reason: string }): void;
  restored(x: { relayId: string; downMs: number; reannounced: number }): void;
  passwordUnused(x: { relayId: string; redis: string }): void;
}

export class FleetMember {
  readonly registry: FleetRegistry;
  readonly pool: PeerPool;
  readonly relayId: string;
  /** The synthetic authorized_keys line the fleet key authenticates as. */
  readonly peerKey: AuthorizedKey;
  /** isFleetSource's set, rebuilt after the registry's relays change. */
  private sources: Set<string> | undefined;

  constructor(
    private readonly opts: FleetMemberOptions,
    events: FleetMemberEvents,
  ) {
    this.relayId = opts.relayId;
    this.registry = new FleetRegistry({
      redis: opts.redis,
      self: {
        relayId: opts.relayId,
        address: opts.advertise,
        hostKeyFingerprint: fingerprintSha256(opts.hostKeyBlob),
      },
      timings: opts.timings,
      ...(opts.prefix !== undefined ? { prefix: opts.prefix } : {}),
    });
    this.pool = new PeerPool({ idleMs: opts.timings.peerIdleMs });
    this.registry.on("relayGone", (id) => this.pool.drop(id));
    this.registry.on("relays", () => {
      this.sources = undefined;
    });
    this.registry.on("degraded", (x) => events.degraded({ relayId: this.relayId, reason: x.reason }));
    this.registry.on("restored", (x) => events.restored({ relayId: this.relayId, ...x }));
    this.registry.on("passwordUnused", () =>
      events.passwordUnused({
        relayId: this.relayId,
        redis: formatHostPort(opts.redis.host, opts.redis.port),
      }),
    );
    const blob = opts.fleetKey.publicBlob;
    this.peerKey = {
      line: 0,
      type: "ssh-ed25519",
      blob,
      fingerprint: opts.fleetKey.fingerprint,
      comment: "fleet peer",
      options: {
        portForwarding: false,
        permitListen: [],
        permitOpen: [{ host: "*", port: "any", text: "*:*" }],
        ignored: [],
      },
    };
  }

  /** Where peers dial this relay, when only known once listening (a peer listener on port 0). */
  advertiseAt(address: string): void {
    this.registry.setAddress(address);
    this.sources = undefined;
  }

  start(): Promise<void> {
    return this.registry.start();
  }

  async close(): Promise<void> {
    this.pool.close();
    await this.registry.close();
  }

  /**
   * Whether a connection from `source` (session.ts sourceOf) may be a peer
   * relay dialling in: it is the IP address some live relay of the fleet
   * advertises (this one too: workers of one machine dial each other from
   * it). Such connections are not held to the per-source pre-auth limits
   * (relay.ts admit): a machine of 64 workers dials each relay 64 times at
   * once after a restart, and 10 per source would refuse 54. Host names in
   * an advertised address are not resolved: advertise by IP for this.
   */
  isFleetSource(source: string): boolean {
    if (!this.sources) {
      this.sources = new Set();
      const self = this.registry.self.address;
      for (const address of [self, ...this.registry.relays().values()]) {
        const host = /^\[([^\]]+)\]:\d+$/.exec(address)?.[1] ?? /^([^:]+):\d+$/.exec(address)?.[1];
        if (host && net.isIP(host)) this.sources.add(sourceOf(normalizeIp(host)));
      }
    }
    return this.sources.has(source);
  }

  /** The fleet key's line, when `blob` is the fleet key. */
  admit(blob: Buffer): AuthorizedKey | undefined {
    return this.opts.fleetKey.publicBlob.equals(blob) ? this.peerKey : undefined;
  }

  isPeer(key: AuthorizedKey): boolean {
    return key === this.peerKey;
  }

  bound(key: string, sessionId: number, deviceFingerprint: string): void {
    void this.registry.announce(key, { sessionId: String(sessionId), deviceFingerprint });
  }

  released(key: string, sessionId: number): void {
    void this.registry.withdraw(key, { sessionId: String(sessionId) });
  }

  open(target: FleetTarget): Promise<FleetRoute> {
    return openViaFleet(
      {
        registry: this.registry,
        pool: this.pool,
        fleetKey: this.opts.fleetKey.privateKey,
        attemptTimeoutMs: this.opts.timings.peerConnectTimeoutMs,
      },
      target,
    );
  }
}
