/**
 * The relay: a forwarding-only SSH server. Clients authenticate with keys
 * from an authorized_keys file and may only ask for remote forwards
 * (`ssh -R`); connections to those ports travel back to them as
 * forwarded-tcpip channels. No shell, no commands, no -L.
 *
 * The relay owns the TCP listener and hands each accepted socket to ssh2
 * (`Server.injectSocket`), so limits, timeouts and socket options apply
 * before any SSH byte is parsed and every socket can be destroyed by the
 * relay itself.
 */

import { createHash } from "node:crypto";
import { EventEmitter } from "node:events";
import { type FSWatcher, watch } from "node:fs";
import { readFile } from "node:fs/promises";
import net from "node:net";
import { dirname } from "node:path";
import ssh2, { type Connection } from "ssh2";
import { formatEndpoint } from "../shared/address.js";
import { boundRecord } from "../shared/bounded-text.js";
import { type Certificate, type RevocationList, revocationList } from "../shared/certificates/index.js";
import { RevtunError } from "../shared/errors.js";
import { fingerprintSha256, parseKeyText } from "../shared/keys.js";
import { certificateHostKeys, presentHostCertificate } from "../ssh2/host-certificate.js";
import { normalizeIp } from "./address-match.js";
import { SourcePenalties } from "./authentication.js";
import { type AuthorizedKeys, parseAuthorizedKeys } from "./authorized-keys.js";
import { type Binding, BindingTable, type BindOutcome, type ReleaseReason } from "./bindings.js";
import { Enrollment } from "./enrollment/enrollment.js";
import type { RelayEvents } from "./events.js";
import { FleetMember } from "./fleet/member.js";
import { forwardInfo } from "./forwarding.js";
import { checkHostCertificate } from "./host-certificate.js";
import { createDeviceInventory, type DeviceInventory } from "./inventory/index.js";
import { RelayMetrics } from "./metrics.js";
import { tunnelKey } from "./names.js";
import { type RelayOptions, type ResolvedRelayOptions, resolveRelayOptions } from "./options.js";
import { authorizeCertificate, authorizeKey, type BindTarget, type KeyDecision } from "./policy.js";
import { RelaySession, type SessionHost, sourceOf } from "./session.js";

/** setInterval's ceiling: ssh2 has no "off" for server keepalives, so "off" is "never". */
const NEVER_MS = 2 ** 31 - 1;
/** TCP keepalive on client sockets, under the SSH one: it also clears half-dead NAT entries. */
const TCP_KEEPALIVE_MS = 30_000;
const WATCH_DEBOUNCE_MS = 250;
/**
 * Records anyone can cause without a key, each at most this many a second
 * (see emit). Measured before, one address on loopback: a connect loop made
 * 7400-9100 connection-refused records/s (615-759 KiB/s), connect-and-close
 * 1500 handshake-ended records/s (94 KiB/s at info level).
 */
const PREAUTH_RECORDS_PER_S = 20;
const PREAUTH_THROTTLED = new Set<string>([
  "connection-refused",
  "handshake-ended",
  "auth-refused",
  // Mostly garbage or resets before authentication (2700 in 3 s of connect-and-close).
  "session-error",
]);

export class Relay extends EventEmitter<RelayEvents> {
  // Private: it holds the host key.
  private readonly options: ResolvedRelayOptions;
  readonly metrics: RelayMetrics;
  private keys: AuthorizedKeys = { keys: [], problems: [] };
  private keysDigest = "";
  /** --revoked-keys, once read; undefined without the option. */
  private revoked: RevocationList | undefined;
  private revokedDigest = "";
  private readonly bindings = new BindingTable();
  private readonly sessions = new Set<RelaySession>();
  /** Sockets handed to ssh2 whose Connection has not been announced yet, by remote address. */
  private readonly awaitingSsh = new Map<string, RelaySession>();
  private tcp: net.Server | undefined;
  /** The fleet's own listener for peer relays (options.fleet.peerListen), never shared between workers. */
  private peerTcp: net.Server | undefined;
  private ssh: ssh2.Server | undefined;
  private watchers: FSWatcher[] = [];
  private watchTimer: NodeJS.Timeout | undefined;
  private reloads: Promise<unknown> = Promise.resolve();
  private nextId = 1;
  private state: "new" | "starting" | "listening" | "closing" | "closed" = "new";
  private bound: { host: string; port: number } | undefined;
  private readonly host: SessionHost;
  private readonly penalties: SourcePenalties;
  /** Per throttled event: the current one-second window and what it left out. */
  private readonly throttle = new Map<string, { start: number; count: number; suppressed: number }>();
  /** Fleet membership (options.fleet): registry, peer pool, the fleet key's admission. */
  private readonly fleet: FleetMember | undefined;
  /** With options.enrollment (--ca-key): tokens, enrollment, renewal, revocation. */
  readonly enrollment: Enrollment | undefined;
  /** Every device of the fleet, online or not (inventory/devices.ts). */
  readonly devices: DeviceInventory;

  constructor(options: RelayOptions) {
    super();
    this.options = resolveRelayOptions(options);
    const f = this.options.fleet;
    if (f) {
      const key = parseKeyText(this.options.hostKey);
      if (key instanceof Error)
        throw new RevtunError("CONFIG", `relay host key unusable: ${key.message}`, { cause: key });
      this.fleet = new FleetMember(
        { ...f, hostKeyBlob: key.getPublicSSH() },
        {
          degraded: (x) => this.emit("fleet-degraded", x),
          restored: (x) => this.emit("fleet-restored", x),
          passwordUnused: (x) => this.emit("fleet-password-unused", x),
        },
      );
    }
    this.metrics = new RelayMetrics(
      () => ({
        sessions: this.authenticatedSessions().length,
        unauthenticated: this.sessions.size - this.authenticatedSessions().length,
        forwardsBound: this.bindings.size,
        forwardedOpen: [...this.sessions].reduce((n, s) => n + s.forwardedCount, 0),
        authorizedKeys: this.keys.keys.length,
        revokedKeys: this.revoked?.size ?? 0,
      }),
      options.registry,
    );
    this.penalties = new SourcePenalties({
      stepMs: this.options.authPenaltyStepMs,
      maxMs: this.options.authPenaltyMaxMs,
      decayMs: this.options.authPenaltyDecayMs,
      maxSources: this.options.limits.maxTrackedSources,
    });
    if (options.enrollment) {
      const key = parseKeyText(this.options.hostKey);
      if (key instanceof Error)
        throw new RevtunError("CONFIG", `relay host key unusable: ${key.message}`, { cause: key });
      this.enrollment = new Enrollment(options.enrollment, {
        now: this.options.now,
        hostKeyFingerprint: fingerprintSha256(key.getPublicSSH()),
        record: (r) => this.emit("enrollment", r),
        changed: (name) => this.enrollmentChanged(name),
      });
    }
    this.host = this.sessionHost();
    this.devices = createDeviceInventory(this.options, options, this.fleet);
    this.devices.attach(this);
    this.devices.registerMetrics(this.metrics.registry);
  }

  /** A device record changed (revoked, re-enrolled, here or on another relay): its other sessions end. */
  private enrollmentChanged(name: string): void {
    for (const s of this.authenticatedSessions())
      if (s.certificateName === name && !this.enrollment?.stillValid(name, s.fingerprint))
        s.close(`${name}'s enrollment was revoked or replaced`);
  }

  /**
   * Every record leaves bounded (src/shared/bounded-text.ts): user names,
   * bind addresses, method names and error texts come from the peer; and
   * the pre-authentication ones are rate-limited (PREAUTH_RECORDS_PER_S).
   */
  override emit<K extends keyof RelayEvents>(name: K, ...args: RelayEvents[K]): boolean {
    let records: unknown[] = args.map(boundRecord);
    if (PREAUTH_THROTTLED.has(name)) {
      // What a peer without a key can make the relay say is bounded: at most
      // PREAUTH_RECORDS_PER_S of each such event a second, and the next one
      // that goes out says how many were left out. Metrics still count all.
      const now = Date.now();
      const t = this.throttle.get(name) ?? { start: now, count: 0, suppressed: 0 };
      this.throttle.set(name, t);
      if (now - t.start >= 1_000) {
        t.start = now;
        t.count = 0;
      }
      if (++t.count > PREAUTH_RECORDS_PER_S) {
        t.suppressed++;
        return false;
      }
      if (t.suppressed) {
        records = [{ ...(records[0] as object), suppressed: t.suppressed }];
        t.suppressed = 0;
      }
    }
    return (super.emit as (n: K, ...a: unknown[]) => boolean)(name, ...records);
  }

  get registry() {
    return this.metrics.registry;
  }

  get listening(): boolean {
    return this.state === "listening";
  }

  /** The address SSH clients connect to, once listening. */
  get address(): { host: string; port: number } | undefined {
    return this.bound;
  }

  /** Loads authorized_keys, listens, starts watching the file. Rejects with a RevtunError. */
  async start(): Promise<{ host: string; port: number }> {
    if (this.state !== "new") throw new RevtunError("USAGE", "relay already started");
    this.state = "starting";
    const file = this.options.authorizedKeysFile;
    const text = await readFile(file, "utf8").catch((err: Error) => {
      this.state = "closed";
      throw new RevtunError("CONFIG", `cannot read authorized keys ${file}: ${err.message}`, { cause: err });
    });
    this.useKeys(text, "startup");
    await this.enrollment?.start().catch((err: Error) => {
      this.state = "closed";
      throw new RevtunError("CONFIG", `cannot read enrollment state: ${err.message}`, { cause: err });
    });
    let hostKeys: Array<string | Buffer | ssh2.EncryptedPrivateKey> = [this.options.hostKey];
    try {
      if (this.options.revokedKeysFile) await this.loadRevoked("startup", true);
      if (this.options.hostCertificate !== undefined) hostKeys = this.hostKeysWithCertificate();
    } catch (err) {
      this.state = "closed";
      throw err;
    }
    try {
      this.ssh = new ssh2.Server(
        {
          hostKeys,
          ident: "revtun-relay",
          // ssh2 sends keepalive@openssh.com (want-reply) after this much
          // silence from the client, and emits a 'client-timeout' error after
          // keepaliveCountMax unanswered ones (lib/server.js).
          keepaliveInterval: this.options.keepaliveIntervalMs || NEVER_MS,
          keepaliveCountMax: this.options.keepaliveCountMax,
          // No compression at all. ssh2 inflates without an output bound
          // (lib/protocol/zlib.js ZlibPacketReader; crypto.js's packet-size
          // check is on the compressed length, its TODO says so), and it
          // offered plain zlib before authentication: 138 KB from an
          // unauthenticated peer became 120 MB of log and 463 MB RSS, and
          // 3 MB of compressed IGNORE packets cost 2.6 CPU s (issue 12).
          // zlib@openssh.com only starts after authentication but is just as
          // unbounded for an authorized key, and tunnelled traffic is mostly
          // already compressed or encrypted, so nothing is lost.
          algorithms: { compress: ["none"] },
        },
        (conn, info) => this.onSshConnection(conn, info.ip, info.port, info.header?.identRaw),
      );
    } catch (err) {
      this.state = "closed";
      throw new RevtunError("CONFIG", `relay host key unusable: ${(err as Error).message}`, { cause: err });
    }
    // The kex hook (src/ssh2/host-certificate.ts): without it a client that
    // picked the certificate algorithm would fail the handshake.
    if (this.options.hostCertificate !== undefined && !presentHostCertificate(this.ssh)) {
      this.state = "closed";
      throw new RevtunError(
        "CONFIG",
        "the host certificate cannot be presented: the installed ssh2 lacks the key exchange internals revtun's hook needs (ssh2 1.17.0 is pinned)",
      );
    }
    this.ssh.on("error", () => {});
    const tcp = net.createServer({ noDelay: true }, (socket) => this.onSocket(socket));
    this.tcp = tcp;
    const { host, port } = this.options.listen;
    await new Promise<void>((resolve, reject) => {
      tcp.once("error", reject);
      tcp.listen({ port, ...(host !== undefined ? { host } : {}) }, () => {
        tcp.removeListener("error", reject);
        resolve();
      });
    }).catch((err: Error) => {
      this.state = "closed";
      throw new RevtunError("LISTEN", `cannot listen on ${host ?? "*"}:${port}: ${err.message}`, {
        cause: err,
      });
    });
    // After listening, accept errors (EMFILE...) are transient: keep serving.
    tcp.on("error", () => {});
    const a = tcp.address() as net.AddressInfo;
    this.bound = { host: a.address, port: a.port };
    const f = this.options.fleet;
    if (f?.peerListen && this.fleet) {
      const peerPort = await this.listenForPeers(f.peerListen);
      const m = /^(.*):(\d+)$/.exec(f.advertise);
      if (m?.[1] && m[2] === "0") this.fleet.advertiseAt(`${m[1]}:${peerPort}`);
    }
    // Before "listening": the relay's lease is in Redis (or the registry has
    // reported it degraded) by the time a device can bind a name.
    if (this.fleet)
      await this.fleet.start().catch((err: unknown) => {
        // A wrong or missing Redis password: a configuration error, and nothing stays listening.
        this.state = "closed";
        this.tcp?.close();
        this.peerTcp?.close();
        throw err;
      });
    // After the fleet's password probe; before "listening", so no session is missed.
    await this.devices.start().catch((err: unknown) => {
      this.state = "closed";
      this.tcp?.close();
      this.peerTcp?.close();
      void this.fleet?.close();
      throw err;
    });
    this.state = "listening";
    if (this.options.watchAuthorizedKeys) this.watchKeys();
    const fleetAddress = this.fleet?.registry.self.address;
    this.emit("listening", { ...this.bound, ...(fleetAddress ? { fleetAddress } : {}) });
    return this.bound;
  }

  /**
   * The peer listener: every connection is handled exactly as on `listen`
   * (the fleet key is what makes a peer), only this socket is this process's
   * alone (`exclusive`), where `listen` under node:cluster is shared.
   */
  private async listenForPeers(at: { host?: string; port: number }): Promise<number> {
    const peerTcp = net.createServer({ noDelay: true }, (socket) => this.onSocket(socket));
    this.peerTcp = peerTcp;
    await new Promise<void>((resolve, reject) => {
      peerTcp.once("error", reject);
      peerTcp.listen(
        { port: at.port, exclusive: true, ...(at.host !== undefined ? { host: at.host } : {}) },
        () => {
          peerTcp.removeListener("error", reject);
          resolve();
        },
      );
    }).catch((err: Error) => {
      this.state = "closed";
      this.tcp?.close();
      throw new RevtunError(
        "LISTEN",
        `cannot listen for fleet peers on ${at.host ?? "*"}:${at.port}: ${err.message}`,
        { cause: err },
      );
    });
    peerTcp.on("error", () => {});
    return (peerTcp.address() as net.AddressInfo).port;
  }

  /**
   * The host key entries for ssh2 with --host-certificate: the certificate
   * first (ssh2 offers host key algorithms in this order, and ssh with an
   * @cert-authority line takes the first it can check), then the plain key
   * for clients that pin it in known_hosts.
   */
  private hostKeysWithCertificate(): Array<ssh2.EncryptedPrivateKey> {
    const key = parseKeyText(this.options.hostKey);
    if (key instanceof Error)
      throw new RevtunError("CONFIG", `relay host key unusable: ${key.message}`, { cause: key });
    const cert = checkHostCertificate(
      this.options.hostCertificate ?? "",
      key.getPublicSSH(),
      this.options.now(),
    );
    try {
      return [...certificateHostKeys(key, cert.raw), { key }];
    } catch (err) {
      throw new RevtunError("CONFIG", `host certificate: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * Re-reads authorized_keys and the revoked keys file. Sessions whose key
   * (or certificate) is still admitted stay (and pick up changed options);
   * the others are closed. A file that cannot be read keeps what was loaded
   * before: an editor's half-written state must not drop every agent, nor
   * drop every revocation. Returns whether authorized_keys was read.
   */
  reloadAuthorizedKeys(reason = "reload requested"): Promise<boolean> {
    const run = async () => {
      const file = this.options.authorizedKeysFile;
      const revokedChanged = this.options.revokedKeysFile ? await this.loadRevoked(reason, false) : false;
      let text: string;
      try {
        text = await readFile(file, "utf8");
      } catch (err) {
        this.metrics.reloads.inc({ result: "failed" });
        this.emit("keys-reload-failed", { file, error: (err as Error).message });
        if (revokedChanged) this.recheckSessions();
        return false;
      }
      if (this.state !== "listening") return false;
      // The file watcher fires for any change in the directory; only a real
      // change of this file is worth a record.
      if (reason === "file changed" && digest(text) === this.keysDigest) {
        if (revokedChanged) this.recheckSessions();
        return true;
      }
      this.useKeys(text, reason);
      this.metrics.reloads.inc({ result: "ok" });
      this.recheckSessions();
      return true;
    };
    const p = this.reloads.then(run, run);
    this.reloads = p;
    return p;
  }

  /**
   * Reads --revoked-keys. At startup a failure throws (the relay does not
   * start without the revocations it was given); later it is reported and
   * the previous list stays. Returns whether the list changed.
   */
  private async loadRevoked(reason: string, startup: boolean): Promise<boolean> {
    const file = this.options.revokedKeysFile ?? "";
    let data: Buffer;
    let list: RevocationList;
    try {
      data = await readFile(file).catch((err: Error) => {
        throw new RevtunError("CONFIG", `cannot read revoked keys ${file}: ${err.message}`, { cause: err });
      });
      if (!startup && reason === "file changed" && digest(data) === this.revokedDigest) return false;
      list = revocationList(data, file);
    } catch (err) {
      if (startup) throw err;
      this.metrics.revokedReloads.inc({ result: "failed" });
      this.emit("revoked-keys-reload-failed", { file, error: (err as Error).message });
      return false;
    }
    this.revoked = list;
    this.revokedDigest = digest(data);
    this.metrics.revokedReloads.inc({ result: "ok" });
    this.emit("revoked-keys-loaded", { file, kind: list.kind, entries: list.size, reason });
    return true;
  }

  /** Re-admits every authenticated session against the current keys and revocations. */
  private recheckSessions(): void {
    for (const s of this.authenticatedSessions()) {
      // A device enrolled here holds no authorized_keys line: revocation by name (enrollmentChanged) governs it.
      if (s.certificateName) continue;
      const cert = s.certificate;
      if (cert) s.recheck(this.authorizeCertificate(cert, s.ip, s.loginName));
      else if (s.publicKey) s.recheck(this.authorize(s.publicKey, s.ip));
    }
  }

  /**
   * Stops listening, releases every port, ends every session with a
   * DISCONNECT, and resolves once all sockets are closed (destroying those
   * still open after closeGraceMs).
   */
  async close(): Promise<void> {
    if (this.state === "closed" || this.state === "closing") return;
    this.state = "closing";
    for (const w of this.watchers) w.close();
    this.watchers = [];
    clearTimeout(this.watchTimer);
    const tcpClosed = Promise.all(
      [this.tcp, this.peerTcp].map((t) => new Promise<void>((r) => (t ? t.close(() => r()) : r()))),
    );
    for (const b of this.bindings.all()) this.release(b, "relay-closing");
    const sessions = [...this.sessions];
    for (const s of sessions) s.close("relay shutting down");
    const grace = setTimeout(() => {
      for (const s of sessions) s.destroy("relay shutting down");
    }, this.options.closeGraceMs);
    await Promise.all(sessions.map((s) => s.finished));
    clearTimeout(grace);
    await tcpClosed;
    // After the sessions: their devices' "offline" and names' withdrawals go out first, then the lease.
    await this.devices.close();
    await this.fleet?.close();
    await this.enrollment?.close();
    this.state = "closed";
    this.emit("closed");
  }

  /** Authenticated sessions, for status pages and tests. */
  authenticatedSessions(): RelaySession[] {
    return [...this.sessions].filter((s) => s.authenticated && !s.closing);
  }

  /** Current bindings as ForwardInfo records. */
  forwards() {
    return this.bindings.all().map((b) => forwardInfo(b, (b.owner as RelaySession).ref()));
  }

  // ---- internals ------------------------------------------------------------

  private authorize(blob: Buffer, ip: string): KeyDecision {
    // RevokedKeys applies to every key, the fleet's too (sshd checks it before any line).
    if (this.revoked?.isRevoked(blob)) return { ok: false, reason: "revoked" };
    const peer = this.fleet?.admit(blob);
    if (peer) return { ok: true, key: peer };
    return authorizeKey(this.keys.keys, blob, ip, this.options.now());
  }

  private authorizeCertificate(cert: Certificate, ip: string, username: string): KeyDecision {
    return authorizeCertificate(this.keys.keys, cert, ip, username, this.options.now(), this.revoked);
  }

  private useKeys(text: string, reason: string): void {
    const file = this.options.authorizedKeysFile;
    this.keys = parseAuthorizedKeys(text);
    this.keysDigest = digest(text);
    for (const p of this.keys.problems) this.emit("keys-problem", { file, ...p });
    for (const k of this.keys.keys) {
      if (k.options.ignored.length) {
        this.emit("keys-option-ignored", {
          file,
          line: k.line,
          fingerprint: k.fingerprint,
          options: k.options.ignored,
        });
      }
    }
    this.emit("keys-loaded", {
      file,
      keys: this.keys.keys.length,
      problems: this.keys.problems.length,
      reason,
    });
  }

  /** Watches authorized_keys and, when given, the revoked keys file; either change reloads both. */
  private watchKeys(): void {
    const files = [this.options.authorizedKeysFile, this.options.revokedKeysFile].filter(
      (f): f is string => f !== undefined,
    );
    const dirs = new Map(files.map((f) => [dirname(f), f]));
    for (const [dir, file] of dirs) {
      const failed = (error: string) =>
        file === this.options.authorizedKeysFile
          ? this.emit("keys-reload-failed", { file, error })
          : this.emit("revoked-keys-reload-failed", { file, error });
      try {
        // The directory, not the file: editors and config managers replace the
        // file by rename, which a watch on the old inode would never report.
        const watcher = watch(dir, { persistent: false }, () => {
          clearTimeout(this.watchTimer);
          this.watchTimer = setTimeout(
            () => void this.reloadAuthorizedKeys("file changed"),
            WATCH_DEBOUNCE_MS,
          );
        });
        watcher.on("error", (err) => {
          failed(`watching stopped: ${err.message}`);
          watcher.close();
          this.watchers = this.watchers.filter((w) => w !== watcher);
        });
        this.watchers.push(watcher);
      } catch (err) {
        failed(`cannot watch: ${(err as Error).message}`);
      }
    }
  }

  private onSocket(socket: net.Socket): void {
    const remote = socket.remoteAddress;
    if (remote === undefined || this.state !== "listening") {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    socket.setKeepAlive(true, TCP_KEEPALIVE_MS);
    const ip = normalizeIp(remote);
    const refusal = this.admit(sourceOf(ip));
    if (refusal) {
      socket.destroy();
      this.emit("connection-refused", {
        peer: formatEndpoint({ kind: "tcp", host: ip, port: socket.remotePort ?? 0 }),
        reason: refusal,
      });
      return;
    }
    const session = new RelaySession(this.nextId++, socket, this.host);
    this.sessions.add(session);
    const key = `${remote}|${socket.remotePort}`;
    this.awaitingSsh.set(key, session);
    void session.finished.then(() => {
      if (this.awaitingSsh.get(key) === session) this.awaitingSsh.delete(key);
    });
    this.ssh?.injectSocket(socket);
  }

  /**
   * Why a new connection from `source` is refused, if it is: sshd's
   * PerSourceMaxStartups, then MaxStartups start:rate:full (random early
   * drop, so a flood from many addresses lowers everyone's odds instead of
   * shutting the door, and a reconnecting agent gets in within a few tries).
   * One pass over the sessions: they are bounded by the limits themselves.
   */
  private admit(source: string): string | undefined {
    const l = this.options.limits;
    let total = 0;
    let fromSource = 0;
    for (const s of this.sessions) {
      if (s.authenticated) continue;
      total++;
      if (s.source === source) fromSource++;
    }
    // A fleet member's address: only the relay-wide bound (member.ts isFleetSource).
    const fleetSource = this.fleet?.isFleetSource(source) ?? false;
    if (!fleetSource && fromSource >= l.maxUnauthenticatedPerSource)
      return `too many unauthenticated connections from ${source} (limit ${l.maxUnauthenticatedPerSource})`;
    if (total >= l.maxUnauthenticated)
      return `too many unauthenticated connections (limit ${l.maxUnauthenticated})`;
    if (!fleetSource && total >= l.unauthenticatedDropStart) {
      const span = l.maxUnauthenticated - l.unauthenticatedDropStart;
      const rate = l.unauthenticatedDropRatePercent / 100;
      const p = rate + ((1 - rate) * (total - l.unauthenticatedDropStart)) / span;
      if (Math.random() < p)
        return `${total} unauthenticated connections: dropped at random (start ${l.unauthenticatedDropStart}, full ${l.maxUnauthenticated})`;
    }
    return undefined;
  }

  /**
   * ssh2 announces a Connection once the client's version line arrives, with
   * only the socket's remote address to tell which socket it is; that pair
   * is unique among the listener's open sockets.
   */
  private onSshConnection(conn: Connection, ip: string, port: number, version?: string): void {
    const key = `${ip}|${port}`;
    const session = this.awaitingSsh.get(key);
    this.awaitingSsh.delete(key);
    if (!session) {
      conn.on("error", () => {});
      conn.end();
      return;
    }
    if (version !== undefined) session.clientVersion = version;
    session.attach(conn);
  }

  private async bind(session: RelaySession, target: BindTarget, port: number): Promise<BindOutcome> {
    const outcome = await this.bindings.bind(session, target, port);
    if (!outcome.ok) return outcome;
    for (const old of outcome.takenOver) {
      const previous = old.owner as RelaySession;
      this.metrics.takeovers.inc();
      this.emit("forward-taken-over", {
        ...forwardInfo(outcome.binding, session.ref()),
        previousSessionId: previous.id,
        previousPeer: previous.peer,
      });
      this.released(old, "taken-over");
    }
    if (target.scope === "name")
      this.fleet?.bound(tunnelKey(target.name ?? target.requested, port), session.id, session.fingerprint);
    return outcome;
  }

  private release(b: Binding, reason: ReleaseReason): void {
    if (this.bindings.release(b, reason)) this.released(b, reason);
  }

  private released(b: Binding, reason: ReleaseReason): void {
    const owner = b.owner as RelaySession;
    if (b.target.scope === "name")
      this.fleet?.released(tunnelKey(b.target.name ?? b.target.requested, b.requestedPort), owner.id);
    // A binding released before its sockets listened was never announced.
    if (owner.bindings.has(b)) this.emit("forward-released", { ...forwardInfo(b, owner.ref()), reason });
    owner.forget(b, reason);
  }

  private sessionHost(): SessionHost {
    return {
      options: this.options,
      metrics: this.metrics,
      authorize: (blob, ip) => this.authorize(blob, ip),
      authorizeCertificate: (cert, ip, username) => this.authorizeCertificate(cert, ip, username),
      penalize: (ip) => this.penalties.fail(ip),
      forgive: (ip, n) => this.penalties.forgive(ip, n),
      sessionsForKey: (fp) => this.authenticatedSessions().filter((s) => s.fingerprint === fp).length,
      isPeer: (key) => this.fleet?.isPeer(key) ?? false,
      bind: (owner, target, port) => this.bind(owner as RelaySession, target, port),
      release: (b, reason) => this.release(b, reason),
      holders: (name, port) => this.bindings.holders(name, port),
      fleet: this.fleet,
      enrollment: this.enrollment,
      offline: (name) => this.devices.offlineLine(name),
      closed: (s) => {
        this.sessions.delete(s);
      },
      emit: this.emit.bind(this),
    };
  }
}

function digest(text: string | Buffer): string {
  return createHash("sha256").update(text).digest("hex");
}
