/**
 * The operator's inventory: every authenticated session with what it
 * exposes and carries, built from the relay's public state
 * (`authenticatedSessions()`) plus the bytes of connections that already
 * closed, which only the `forwarded-closed` events report.
 */
import { formatBindAddress as hostPort } from "../../shared/address.js";
import type { CertificateFields, RelayEvents } from "../events.js";
import type { Relay } from "../relay.js";

export interface BindingRecord {
  /** `address:port` as the device asked for it, with the port actually bound ("*" = all interfaces). */
  address: string;
  requestedPort: number;
  port: number;
  /** Sockets listening, `addr:port`. */
  listening: string[];
}

/** A session that logged in with a certificate also carries its key id, serial, principals and CA. */
export interface SessionRecord extends CertificateFields {
  sessionId: number;
  fingerprint: string;
  keyComment: string;
  keyType: string;
  username: string;
  /** `ip:port` of the device's SSH connection. */
  peer: string;
  /** When the device connected, ISO 8601. */
  since: string;
  bindings: BindingRecord[];
  /** Forwarded connections open now. */
  connections: number;
  /** Forwarded connections carried since the inventory started watching (closed + open). */
  connectionsTotal: number;
  /** Bytes from the public side into the tunnel (toward the device), closed + open connections. */
  bytesIn: number;
  /** Bytes from the device out to the public side, closed + open connections. */
  bytesOut: number;
}

interface Closed {
  bytesIn: number;
  bytesOut: number;
  connections: number;
}

/**
 * Attach before `relay.start()` so no closed connection's bytes are missed;
 * attached later, the byte counts start from then (open connections are
 * always counted in full).
 */
export class Inventory {
  /** Per session id: what its closed connections carried. Removed when the session closes. */
  private readonly closed = new Map<number, Closed>();
  private readonly onClosed = (x: RelayEvents["forwarded-closed"][0]) => {
    const c = this.entry(x.sessionId);
    c.bytesIn += x.bytesIn;
    c.bytesOut += x.bytesOut;
  };
  private readonly onOpen = (x: RelayEvents["forwarded-open"][0]) => {
    this.entry(x.sessionId).connections++;
  };
  private readonly onSessionClosed = (x: RelayEvents["session-closed"][0]) => {
    // Forwarded connections are destroyed before the session reports its
    // end, so their forwarded-closed may still follow; a short delay keeps
    // the map bounded by live sessions without dropping those late bytes.
    setTimeout(() => this.closed.delete(x.sessionId), 1_000).unref();
  };

  constructor(private readonly relay: Relay) {
    relay.on("forwarded-closed", this.onClosed);
    relay.on("forwarded-open", this.onOpen);
    relay.on("session-closed", this.onSessionClosed);
  }

  private entry(id: number): Closed {
    let c = this.closed.get(id);
    if (!c) {
      c = { bytesIn: 0, bytesOut: 0, connections: 0 };
      this.closed.set(id, c);
    }
    return c;
  }

  sessions(): SessionRecord[] {
    return this.relay
      .authenticatedSessions()
      .map((s) => {
        const done = this.closed.get(s.id);
        const live = s.liveBytes();
        const info = s.info();
        return {
          sessionId: s.id,
          fingerprint: info.fingerprint,
          keyComment: info.keyComment,
          keyType: info.keyType,
          username: info.username,
          peer: info.peer,
          ...(info.certKeyId !== undefined
            ? {
                certKeyId: info.certKeyId,
                certSerial: info.certSerial,
                certPrincipals: info.certPrincipals,
                certCa: info.certCa,
              }
            : {}),
          since: new Date(s.connectedAt).toISOString(),
          bindings: [...s.bindings].map((b) => ({
            address: hostPort(b.target.requested, b.port),
            requestedPort: b.requestedPort,
            port: b.port,
            listening: [...b.listening],
          })),
          connections: s.forwardedCount,
          connectionsTotal: done?.connections ?? 0,
          bytesIn: (done?.bytesIn ?? 0) + live.bytesIn,
          bytesOut: (done?.bytesOut ?? 0) + live.bytesOut,
        };
      })
      .sort((a, b) => a.sessionId - b.sessionId);
  }

  close(): void {
    this.relay.off("forwarded-closed", this.onClosed);
    this.relay.off("forwarded-open", this.onOpen);
    this.relay.off("session-closed", this.onSessionClosed);
  }
}
