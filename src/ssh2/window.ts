/**
 * Receive windows: enforcing them (RFC 4254 5.2) and sizing them to the path.
 *
 * Enforcing. ssh2 drops CHANNEL_DATA only when a channel's window is exactly
 * 0 (lib/client.js and lib/server.js CHANNEL_DATA handlers, "TODO: raise
 * error on data with not enough window?"). A peer sending 30,000-byte chunks
 * drives the window negative and ssh2 buffers everything after it: 400 MiB
 * sent, +573 MiB relay RSS (issue 12 item 4). Here a peer that sends beyond
 * what it was granted is disconnected with the reason, before ssh2 sees the
 * packet, as OpenSSH's channel_input_data() does ("channel %d: rcvd too much
 * data").
 *
 * Sizing. ssh2 grants a fixed 2 MiB (MAX_WINDOW, a module constant in
 * lib/Channel.js) and tops it up only once half is used: 17.7 MiB/s download
 * and 9.5 MiB/s upload at 100 ms RTT against OpenSSH 9.2, where `ssh -R`
 * does 17.8/17.6. For the channels revtun receives on, this module takes
 * ssh2's window bookkeeping over (issue 13 items 1-3):
 * - a channel starts at ssh2's 2 MiB (what ssh2 advertised in the open),
 *   or, on a session that has grown a window in the last ten minutes, at
 *   that window (seedChannels(): in our CHANNEL_OPEN, or in an adjust right
 *   behind our confirmation), out of at most half of each budget;
 * - in its first round trip the 2 MiB burst's delivery rate times the RTT
 *   sizes it (ramp()), without waiting for the round trip to end;
 * - it grants only for bytes the local side has drained out of the channel's
 *   readable buffer, so credit + undrained bytes never exceed the target
 *   window W: a stalled consumer holds at most W;
 * - it tops up once a quarter of W (at least 3 packets, as OpenSSH's
 *   channel_check_window, at most 1 MiB) has drained, not at half, where
 *   the round trip is long enough for windows to matter (topUpAt());
 * - W follows the bandwidth-delay product as measured: the round trip is
 *   timed with keepalive@openssh.com global requests (as ssh2's keepalive
 *   sends; every SSH server answers, with a failure), at most one a second
 *   while data flows, and the minimum over 10 s is kept (a reply queued
 *   behind bulk data overstates it). Each round trip, W becomes at least
 *   twice the bytes drained in it, as Linux's receive-buffer autotuning
 *   does: a window-limited stream drains W per round trip, so W doubles
 *   until the path, the consumer or the cap is the limit. W does not grow
 *   while the consumer holds a quarter of it, and halves back toward 2 MiB
 *   when half of W waits undrained: a slow consumer does not need a big
 *   window. W halves toward twice the need when two round trips in a row
 *   drained less than half of it: surplus credit only queues in front of
 *   the session's other channels (head-of-line). Under a 4 ms round trip
 *   (GROW_MIN_RTT_MS) W stays at 2 MiB: it is never the limit there;
 * - W is capped at 16 MiB, 15 MiB toward OpenSSH >= 8.8 (HPN-SSH found
 *   larger windows pathological there), and every byte of W above 2 MiB is
 *   reserved from a per-session (64 MiB) and a process-wide (256 MiB)
 *   budget: with a budget spent a window cannot grow, and past three
 *   quarters of one, windows larger than twice what their channel drains
 *   per round trip shrink back toward 2 MiB. Memory stays bounded however
 *   many channels grow: 2 MiB per channel, as with ssh2 alone, plus the
 *   budgets.
 *
 * Like every file in src/ssh2/, this degrades to doing nothing when ssh2's
 * internals are not there; ./hooks.ts reports whether it is live.
 */
import type { Client, Connection } from "ssh2";
import { RevtunError } from "../shared/errors.js";

const MiB = 1024 * 1024;
/** ssh2's MAX_WINDOW: what every ssh2 channel advertises when it opens. */
export const SSH2_WINDOW = 2 * MiB;
/** Bytes a channel receives under ssh2's own window before this policy takes it over. */
const MANAGE_AFTER = 256 * 1024;
/** ssh2's PACKET_SIZE, the maximum packet it advertises. */
const PACKET = 32 * 1024;
/** OpenSSH channel_check_window adjusts once 3 packets are consumed. */
const TOP_UP = 3 * PACKET;
/**
 * But OpenSSH checks once per main-loop turn, after all the packets one read
 * brought; here credit() runs per packet, and each adjust is a write(2) of
 * its own. At 3 packets that was 2,700 adjusts per 256 MiB on loopback and
 * ~30% more agent CPU on uploads than ssh2's own adjust at half the window
 * (256); a quarter of the window, at most 1 MiB, is 512 at 2 MiB and leaves
 * 15 of 16 MiB in flight at the cap.
 */
const TOP_UP_MAX = 1024 * 1024;
const SSH_DISCONNECT_PROTOCOL_ERROR = 2;
/** Bytes drained before the first round trip's rate is read (ramp()): an eighth of ssh2's window, 2.5 ms at 100 MiB/s. */
const RAMP_SAMPLE = 256 * 1024;
/** One round-trip probe a second at most, per connection, and only while managed channels drain. */
const PROBE_EVERY_MS = 1_000;
/**
 * Below this round trip 2 MiB is never the limit: it carries 500 MiB/s at
 * 4 ms, and one ssh2 channel moves at most ~600 MiB/s here (the loopback
 * bench). On loopback sshd's keepalive replies read 1.5-1.8 ms (the path is
 * 0.1 ms), and growing from readings that noisy took windows to 7 MiB, and
 * sshd, buffering that much output, to 1.1-1.7 s of CPU for a 256 MiB upload
 * it otherwise sends in 0.3 s (0.25 of ssh in that run).
 */
const GROW_MIN_RTT_MS = 4;
/** Round-trip probes sent back to back when a session starts (prober()). */
const INITIAL_PROBES = 3;
/** The minimum round trip is forgotten after this long (a path can get slower). */
const RTT_MEMORY_MS = 10_000;
/**
 * How long a session remembers the largest window its channels grew to, to
 * open the next channel there (seed()). Linux keeps a destination's metrics
 * for an hour (TCP_METRICS_TIMEOUT); a device's session is one path, so ten
 * minutes of no growth is taken as the path having changed.
 */
const LEARNED_MEMORY_MS = 600_000;

export interface WindowPolicy {
  /** Manage receive windows as above; off, ssh2's fixed 2 MiB applies. The overflow check is always on. */
  enabled: boolean;
  /** Largest window a channel grows to, in bytes. */
  maxWindow: number;
  /** Largest window toward OpenSSH 8.8 or later. */
  maxWindowOpenSSH: number;
  /** Bytes above 2 MiB per channel that one SSH connection may reserve, summed over its channels. */
  sessionBudget: number;
  /** The same, for the whole process. */
  processBudget: number;
}

export const DEFAULT_WINDOW_POLICY: Readonly<WindowPolicy> = Object.freeze({
  enabled: true,
  maxWindow: 16 * MiB,
  maxWindowOpenSSH: 15 * MiB,
  sessionBudget: 64 * MiB,
  processBudget: 256 * MiB,
});

let policy: WindowPolicy = { ...DEFAULT_WINDOW_POLICY };
let processReserved = 0;

/** The policy new channels get (a channel reads it when its first data arrives). */
export function windowPolicy(): Readonly<WindowPolicy> {
  return policy;
}

/**
 * Changes the policy for channels that start after the call (the benchmark's
 * A/B switch: `setWindowPolicy({ enabled: false })`); returns the previous one.
 */
export function setWindowPolicy(change: Partial<WindowPolicy>): WindowPolicy {
  const next = { ...policy, ...change };
  for (const k of ["maxWindow", "maxWindowOpenSSH"] as const) {
    const v = next[k];
    if (!Number.isInteger(v) || v < SSH2_WINDOW || v > 0xffffffff)
      throw new RevtunError(
        "USAGE",
        `bad ${k} ${v}: want an integer number of bytes from ${SSH2_WINDOW} to 4294967295`,
      );
  }
  for (const k of ["sessionBudget", "processBudget"] as const) {
    const v = next[k];
    if (!Number.isInteger(v) || v < 0)
      throw new RevtunError("USAGE", `bad ${k} ${v}: want a number of bytes >= 0`);
  }
  const prev = policy;
  policy = next;
  return prev;
}

/** Bytes of window above 2 MiB currently reserved by all managed channels (tests, metrics). */
export function reservedWindowBytes(): number {
  return processReserved;
}

// ---- ssh2 internals ---------------------------------------------------------------

interface ChannelInternals {
  type?: string;
  readableLength: number;
  incoming: { id: number; window: number };
  outgoing: { id: number; state: string };
  push(chunk: Buffer): boolean;
  emit(event: string | symbol, ...args: unknown[]): boolean;
  once(event: string, fn: () => void): unknown;
  _channel?: ChannelInternals; // a server-side Session wraps its channel
}

type DataHandler = (p: unknown, recipient: number, data: Buffer, type?: number) => void;

type Reply = () => void;

interface OwnerInternals {
  _chanMgr?: { get(id: number): unknown };
  /** A Client's queue of global-request replies (REQUEST_SUCCESS/FAILURE shift it). */
  _callbacks?: Reply[];
  _protocol?: {
    _handlers?: Record<string, DataHandler | undefined>;
    _remoteIdentRaw?: Buffer;
    channelWindowAdjust?: (chan: number, amount: number) => void;
    channelOpenConfirm?: (remote: number, local: number, ...rest: unknown[]) => unknown;
    forwardedTcpip?: (local: number, initWindow: number, ...rest: unknown[]) => unknown;
    directTcpip?: (local: number, initWindow: number, ...rest: unknown[]) => unknown;
    disconnect?: (reason: number) => void;
    ping?: () => void;
  };
  _sock?: { destroy(): void };
}

/** True when `owner`'s ssh2 internals are what this module wraps (./hooks.ts). */
export function windowHookLive(owner: Client | Connection): boolean {
  const o = owner as unknown as OwnerInternals;
  const h = o._protocol?._handlers;
  return (
    typeof o._chanMgr?.get === "function" &&
    typeof h?.CHANNEL_DATA === "function" &&
    typeof o._protocol?.channelWindowAdjust === "function"
  );
}

// ---- per connection ---------------------------------------------------------------

interface SessionState {
  reserved: number;
  violated: boolean;
  cap: number | undefined;
  channels: Set<Managed>;
  /** Minimum round trip in ms over the last RTT_MEMORY_MS; undefined until measured. */
  rtt: number | undefined;
  rttAt: number;
  probedAt: number;
  probe: (() => void) | undefined;
  /** The largest window a channel of this session grew to, and when: where a new channel starts. */
  learned: number;
  learnedAt: number;
  /** Seeds offered in channel opens this side sent, by local channel id, reserved until confirmed or refused. */
  pending: Map<number, number>;
}

interface Managed {
  session: SessionState;
  window: number;
  /** The largest window so far: what the peer may hold credit for after a shrink. */
  peak: number;
  reserved: number;
  /** Bytes pushed into the channel so far. */
  received: number;
  /** Start of the current measuring interval, and bytes drained by then. */
  t0: number;
  drained0: number;
  /** performance.now() when the policy took the channel over; ramping until one round trip later. */
  startedAt: number;
  ramping: boolean;
  /** Date.now() of the last growth: a window is not shrunk before the peer has had two round trips to use it. */
  grewAt: number;
  /** Round trips in a row that drained less than half the window. */
  surplus: number;
}

const installed = new WeakSet<object>();
const managed = new WeakMap<object, Managed | null>();

export interface WindowHookOptions {
  /**
   * Called once when the peer overruns a window, with the reason; further
   * channel data from it is dropped. Default: emit a PROTOCOL RevtunError as
   * the owner's 'error', send DISCONNECT and close the transport.
   */
  onViolation?: (reason: string) => void;
}

/**
 * Installs the window check and policy on a Client (call before or after
 * connect()) or a server-side Connection. Idempotent.
 */
export function applyWindowPolicy(owner: Client | Connection, options: WindowHookOptions = {}): void {
  const install = () => {
    if (installed.has(owner) || !windowHookLive(owner)) return;
    installed.add(owner);
    wrap(owner as unknown as OwnerInternals & Client, options);
  };
  install();
  // A Client builds its Protocol in connect(); the first handshake follows it.
  (owner as Client).once("handshake", install);
}

function wrap(owner: OwnerInternals & Client, options: WindowHookOptions): void {
  // biome-ignore lint/style/noNonNullAssertion: checked by windowHookLive
  const proto = owner._protocol!;
  // biome-ignore lint/style/noNonNullAssertion: checked by windowHookLive
  const handlers = proto._handlers!;
  // biome-ignore lint/style/noNonNullAssertion: checked by windowHookLive
  const chanMgr = owner._chanMgr!;
  const session: SessionState = {
    reserved: 0,
    violated: false,
    cap: undefined,
    channels: new Set(),
    rtt: undefined,
    rttAt: 0,
    probedAt: 0,
    probe: undefined,
    learned: SSH2_WINDOW,
    learnedAt: 0,
    pending: new Map(),
  };
  session.probe = prober(owner, session);
  seedChannels(owner, session, chanMgr);
  // The round trip is the path's, not a channel's: measure it once the
  // session is up, so the first channel can grow from its first round trip.
  owner.once("ready", () => session.probe?.());

  const lookup = (recipient: number): ChannelInternals | undefined => {
    let ch = chanMgr.get(recipient) as ChannelInternals | undefined;
    if (typeof ch !== "object" || ch === null) return undefined;
    if (!ch.incoming && ch._channel) ch = ch._channel;
    return ch?.incoming ? ch : undefined;
  };

  const violation = (recipient: number, over: number) => {
    session.violated = true;
    const reason = `peer sent ${over} bytes beyond the window of channel ${recipient} (RFC 4254 5.2)`;
    if (options.onViolation) {
      options.onViolation(reason);
      return;
    }
    owner.emit("error", new RevtunError("PROTOCOL", reason, { reason: "protocol" }));
    try {
      proto.disconnect?.(SSH_DISCONNECT_PROTOCOL_ERROR);
      owner.end();
    } catch {
      // already closing
    }
    // Do not wait for a peer that keeps sending to close its side.
    setTimeout(() => owner._sock?.destroy(), 1_000).unref();
  };

  /** Checks one packet; false when it must not reach ssh2. */
  const admit = (recipient: number, data: Buffer): ChannelInternals | undefined | false => {
    if (session.violated) return false;
    const ch = lookup(recipient);
    if (!ch) return undefined; // ssh2 ignores it too
    const window = ch.incoming.window;
    if (data.length > window) {
      violation(recipient, data.length - Math.max(window, 0));
      return false;
    }
    return ch;
  };

  const ssh2Data = handlers.CHANNEL_DATA;
  const ssh2ExtData = handlers.CHANNEL_EXTENDED_DATA;

  handlers.CHANNEL_DATA = (p, recipient, data) => {
    const ch = admit(recipient, data);
    if (ch === false) return;
    const m = ch && manage(ch, session, proto);
    if (!ch || !m) {
      ssh2Data?.(p, recipient, data);
      return;
    }
    receive(ch, m, data, proto);
  };
  if (ssh2ExtData) {
    handlers.CHANNEL_EXTENDED_DATA = (p, recipient, data, type) => {
      const ch = admit(recipient, data);
      if (ch === false) return;
      const m = ch && manage(ch, session, proto);
      if (!ch || !m) {
        ssh2ExtData(p, recipient, data, type);
        return;
      }
      // Extended data is stderr, which only session channels (not managed)
      // carry; nobody reads it here: count it against the window and let it
      // go, as drained.
      ch.incoming.window -= data.length;
      credit(ch, m, proto);
    };
  }
  // ssh2 closes every channel when the connection ends; this is for any it misses.
  owner.once("close", () => {
    for (const m of session.channels) resize(m, SSH2_WINDOW);
    session.channels.clear();
    for (const extra of session.pending.values()) account(session, -extra);
    session.pending.clear();
  });
}

function capFor(session: SessionState, proto: OwnerInternals["_protocol"]): number {
  if (session.cap === undefined) {
    const ident = proto?._remoteIdentRaw?.toString("latin1") ?? "";
    const m = /OpenSSH_(\d+)\.(\d+)/.exec(ident);
    const modern = m !== null && (Number(m[1]) > 8 || (Number(m[1]) === 8 && Number(m[2]) >= 8));
    session.cap = modern ? Math.min(policy.maxWindow, policy.maxWindowOpenSSH) : policy.maxWindow;
  }
  return session.cap;
}

/** The channel's managed state, created at its first data; null when the policy was off then. */
function manage(
  ch: ChannelInternals,
  session: SessionState,
  proto: OwnerInternals["_protocol"],
): Managed | null {
  const m = managed.get(ch);
  if (m !== undefined) return m;
  // Only channels ssh2 has not adjusted yet (their credit is what ssh2
  // advertised), and not session channels, whose stderr ssh2 must keep.
  if (!policy.enabled || ch.incoming.window > SSH2_WINDOW || ch.type === "session") {
    managed.set(ch, null);
    return null;
  }
  // A short connection (an HTTP request and its answer) never needs more than
  // ssh2's 2 MiB: leave it to ssh2 until it has received MANAGE_AFTER, well
  // before ssh2's own top-up at 1 MiB. Managing every channel from its first
  // byte cost ~8% of requests/s at 50 concurrent on loopback (bench, A/B).
  if (SSH2_WINDOW - ch.incoming.window + ch.readableLength < MANAGE_AFTER) return null;
  return adopt(ch, session, proto, 0);
}

/**
 * Takes a channel's window bookkeeping over from ssh2, with `seeded` bytes
 * of credit above ssh2's 2 MiB promised to the peer and already reserved
 * (seedChannels()), or none.
 */
function adopt(
  ch: ChannelInternals,
  session: SessionState,
  proto: OwnerInternals["_protocol"],
  seeded: number,
): Managed {
  capFor(session, proto);
  const m: Managed = {
    session,
    window: SSH2_WINDOW,
    peak: SSH2_WINDOW,
    reserved: 0,
    received: 0,
    t0: Date.now(),
    drained0: 0,
    startedAt: performance.now(),
    ramping: true,
    grewAt: Date.now(),
    surplus: 0,
  };
  managed.set(ch, m);
  if (seeded > 0) {
    m.reserved = seeded;
    m.window = m.peak = SSH2_WINDOW + seeded;
  } else if (Date.now() - session.learnedAt < LEARNED_MEMORY_MS && session.learned > SSH2_WINDOW) {
    // A channel that was not seeded at its open (half a budget was in use
    // then) and has shown it is bulk starts where its session's channels
    // grew, as Linux's tcp_metrics seeds a new connection from the last one
    // to the same host, within the whole budgets.
    resize(m, Math.min(session.cap ?? policy.maxWindow, session.learned));
  }
  // Drained = handed to the consumer: every chunk leaves a Readable through
  // emit('data'), both in flowing mode and from read().
  const emit = ch.emit;
  ch.emit = function (this: ChannelInternals, event: string | symbol, ...args: unknown[]) {
    const r = emit.call(this, event, ...args);
    if (event === "data") credit(ch, m, proto);
    return r;
  };
  session.channels.add(m);
  ch.once("close", () => {
    resize(m, SSH2_WINDOW);
    session.channels.delete(m);
  });
  return m;
}

/**
 * Channels of a session that has grown a window in the last
 * LEARNED_MEMORY_MS start at that window instead of ssh2's 2 MiB:
 * - one the peer opens (an -R connection arriving at the agent, an
 *   operator's direct-tcpip at the relay) with a CHANNEL_WINDOW_ADJUST right
 *   behind CHANNEL_OPEN_CONFIRMATION (ssh2 writes its fixed 2 MiB into the
 *   confirmation, lib/client.js and lib/server.js);
 * - one this side opens (the relay's forwarded-tcpip to a device, a
 *   direct-tcpip through a jump host or to a peer relay) with the window in
 *   the CHANNEL_OPEN itself, reserved until the peer confirms or refuses.
 * ramp() cannot do this: the sender has sent its 2 MiB and waits a round
 * trip for more before the receiver has seen a byte; through the relay at
 * 100 ms that round trip held a 64 MiB upload to 0.80 of plain TCP.
 * Seeds come out of at most half of each budget, so channels that sit idle
 * with a seed cannot starve the ones that grow.
 */
function seedChannels(
  owner: OwnerInternals,
  session: SessionState,
  chanMgr: NonNullable<OwnerInternals["_chanMgr"]>,
): void {
  const proto = owner._protocol;
  if (!proto) return;
  const confirm = proto.channelOpenConfirm;
  if (typeof confirm === "function") {
    proto.channelOpenConfirm = function (this: unknown, remote: number, local: number, ...rest: unknown[]) {
      const r = confirm.call(this, remote, local, ...rest);
      const ch = newChannel(chanMgr.get(local));
      const extra = ch && seedSize(session, proto);
      if (ch && extra) {
        account(session, extra);
        adopt(ch, session, proto, extra);
        ch.incoming.window += extra;
        proto.channelWindowAdjust?.(ch.outgoing.id, extra);
      }
      return r;
    };
  }
  // (p, info) and (p, recipient, reason, description), as lib/protocol/Protocol.js calls them.
  const handlers = proto._handlers as
    | Record<string, ((p: unknown, ...args: unknown[]) => void) | undefined>
    | undefined;
  const confirmed = handlers?.CHANNEL_OPEN_CONFIRMATION;
  const refused = handlers?.CHANNEL_OPEN_FAILURE;
  if (!handlers || typeof confirmed !== "function" || typeof refused !== "function") return;
  const release = (local: number) => {
    const extra = session.pending.get(local);
    if (extra === undefined) return 0;
    session.pending.delete(local);
    return extra;
  };
  for (const name of ["forwardedTcpip", "directTcpip"] as const) {
    const open = proto[name];
    if (typeof open !== "function") continue;
    proto[name] = function (this: unknown, local: number, initWindow: number, ...rest: unknown[]) {
      const extra = initWindow === SSH2_WINDOW ? seedSize(session, proto) : 0;
      if (extra) {
        session.pending.set(local, extra);
        account(session, extra);
      }
      return open.call(this, local, initWindow + extra, ...rest);
    };
  }
  handlers.CHANNEL_OPEN_CONFIRMATION = (p, info) => {
    confirmed(p, info);
    const local = (info as { recipient: number }).recipient;
    const extra = release(local);
    if (!extra) return;
    const ch = newChannel(chanMgr.get(local));
    if (!ch) {
      account(session, -extra);
      return;
    }
    // ssh2 set the channel's credit to its own 2 MiB; the peer was offered more.
    ch.incoming.window += extra;
    adopt(ch, session, proto, extra);
  };
  handlers.CHANNEL_OPEN_FAILURE = (p, ...rest) => {
    account(session, -release(rest[0] as number));
    refused(p, ...rest);
  };
}

/** A channel ssh2 has just created and not adjusted yet, other than a session (whose stderr must stay ssh2's). */
function newChannel(found: unknown): ChannelInternals | undefined {
  const ch = found as ChannelInternals | undefined;
  if (typeof ch !== "object" || ch === null || !ch.incoming || ch.type === "session") return undefined;
  if (managed.has(ch) || ch.incoming.window !== SSH2_WINDOW) return undefined;
  return ch;
}

/** Bytes above 2 MiB a new channel of `session` starts with: what it learned, within half of each budget; 0 for none. */
function seedSize(session: SessionState, proto: OwnerInternals["_protocol"]): number {
  if (!policy.enabled || session.learned <= SSH2_WINDOW) return 0;
  if (Date.now() - session.learnedAt >= LEARNED_MEMORY_MS) return 0;
  const room = Math.min(
    policy.processBudget / 2 - processReserved,
    policy.sessionBudget / 2 - session.reserved,
  );
  const extra = Math.floor(Math.min(Math.min(capFor(session, proto), session.learned) - SSH2_WINDOW, room));
  return extra >= TOP_UP ? extra : 0;
}

/** Moves `bytes` (negative: gives back) of a session's reservation, and the process's with it. */
function account(session: SessionState, bytes: number): void {
  session.reserved += bytes;
  processReserved += bytes;
}

function receive(ch: ChannelInternals, m: Managed, data: Buffer, proto: OwnerInternals["_protocol"]): void {
  if (ch.readableLength >= m.window / 2 && m.window > SSH2_WINDOW) {
    // The consumer is the limit: give the reservation back.
    resize(m, Math.max(SSH2_WINDOW, m.window / 2));
  }
  ch.incoming.window -= data.length;
  m.received += data.length;
  // The return value is ssh2's backpressure signal (its _waitChanDrain);
  // here credit() follows what is drained instead.
  ch.push(data);
  credit(ch, m, proto);
}

/** Once a round trip has passed, sizes the window to twice what was drained in it. */
function follow(ch: ChannelInternals, m: Managed): void {
  const now = Date.now();
  const { session } = m;
  if (now - session.probedAt >= PROBE_EVERY_MS) session.probe?.();
  const rtt = session.rtt;
  if (rtt === undefined || rtt < GROW_MIN_RTT_MS) return;
  const drained = m.received - ch.readableLength;
  // Bytes waiting for the consumer: the window is not what limits the flow,
  // and a bigger one only moves the queue into the sender. On loopback
  // (the agent's Node slower than sshd) growing anyway took windows to
  // 10-15 MiB, sshd's output buffer with them, and sshd to 86% CPU: 256 MiB
  // uploads fell to 0.25-0.55 of ssh in one run in three.
  const consumerBound = ch.readableLength * 4 > m.window;
  if (m.ramping && !consumerBound) ramp(m, drained, rtt);
  const elapsed = now - m.t0;
  // Date.now() ticks in ms: measure over at least 5 of them.
  if (elapsed < Math.max(rtt, 5)) return;
  const perRtt = ((drained - m.drained0) * rtt) / elapsed;
  m.t0 = now;
  m.drained0 = drained;
  if (consumerBound) return;
  // Twice what was drained in a round trip; four times while the window was
  // the limit (the peer was sent most of it), so a path of 16 MiB per round
  // trip is reached in two round trips instead of three (64 MiB uploads at
  // 100 ms: 53 MiB/s with doubling).
  const limited = perRtt >= 0.75 * m.window;
  const want = Math.ceil((limited ? 4 : 2) * perRtt);
  m.surplus = want < m.window ? m.surplus + 1 : 0;
  if (want >= m.window) {
    grow(m, want);
    // A channel that needs its whole window speaks for the path: the next
    // channel of the session opens there (seedChannels()).
    session.learned = m.window;
    session.learnedAt = now;
  } else if (underPressure(session)) resize(m, Math.max(SSH2_WINDOW, want));
  else if (m.surplus >= 2 && now - m.grewAt >= 2 * rtt) {
    // More credit than the flow uses: the path or the sender is the limit,
    // and the surplus only queues in the sender's socket and the path, in
    // front of every other channel of the session (head-of-line: small
    // requests through the relay at 20 ms took 210-230 ms during a bulk
    // download with windows left at 16 MiB, 46 ms through sshd's 2 MiB).
    // Halve toward twice the need once two round trips in a row said so (one
    // is noise: a read that waited on the event loop) and a growth has had
    // the round trips it takes to show in what arrives.
    resize(m, Math.max(SSH2_WINDOW, want, m.window / 2));
  }
}

/**
 * The first round trip: the peer sends the whole 2 MiB window at once, and
 * it arrives at the bottleneck's rate (a packet train, as BBR's delivery rate
 * reads it), so rate x RTT is the path's bandwidth-delay product long before
 * a round trip has passed: 2 MiB at 100 MiB/s has drained in 20 ms of a
 * 100 ms round trip. Sizing to twice that then, instead of at the end of the
 * round trip, saves one to two round trips per cold channel (64 MiB at
 * 100 ms RTT through the relay: 0.70 of plain TCP with per-round-trip
 * steps).
 */
function ramp(m: Managed, drained: number, rtt: number): void {
  const dt = performance.now() - m.startedAt;
  if (dt >= rtt) {
    m.ramping = false;
    return;
  }
  // A reading over less than an eighth of the round trip is a socket
  // buffer's worth delivered at once rather than the path's rate.
  if (drained < RAMP_SAMPLE || dt < rtt / 8) return;
  const want = Math.ceil((2 * drained * rtt) / dt);
  if (want > m.window) grow(m, want);
}

/** Grows a window toward `want`, cap and budgets permitting. */
function grow(m: Managed, want: number): void {
  resize(m, Math.min(m.session.cap ?? policy.maxWindow, want));
}

/**
 * Three quarters of a budget reserved: channels that drain less than their
 * window per round trip give the rest back, so a growing one can have it.
 */
function underPressure(session: SessionState): boolean {
  return processReserved * 4 > policy.processBudget * 3 || session.reserved * 4 > policy.sessionBudget * 3;
}

/**
 * Times a keepalive@openssh.com global request. A Client queues a callback in
 * _callbacks as ssh2's own keepalive does; a server-side Connection ignores
 * replies, so its REQUEST_SUCCESS/FAILURE handlers are wrapped, with every
 * ping ssh2 itself sends queued too, to keep replies matched in order.
 */
function prober(owner: OwnerInternals, session: SessionState): (() => void) | undefined {
  const proto = owner._protocol;
  const ping = proto?.ping;
  if (!proto || typeof ping !== "function") return undefined;
  let queue: Reply[] | undefined = owner._callbacks;
  if (!Array.isArray(queue)) {
    const handlers = proto._handlers;
    if (!handlers || handlers.REQUEST_SUCCESS || handlers.REQUEST_FAILURE) return undefined;
    const fifo: Reply[] = [];
    queue = fifo;
    const answered = () => fifo.shift()?.();
    handlers.REQUEST_SUCCESS = answered;
    handlers.REQUEST_FAILURE = answered;
    proto.ping = function (this: unknown) {
      fifo.push(() => {});
      return ping.call(this);
    };
  }
  const replies = queue;
  let outstanding = false;
  let samples = 0;
  const probe = () => {
    if (outstanding) return;
    outstanding = true;
    const sent = performance.now();
    session.probedAt = Date.now();
    replies.push(() => {
      outstanding = false;
      const sample = performance.now() - sent;
      const now = Date.now();
      const stale = now - session.rttAt > RTT_MEMORY_MS;
      if (session.rtt === undefined || stale || sample < session.rtt) {
        session.rtt = sample;
        session.rttAt = now;
      }
      // The first reply comes while the server is still busy setting the
      // session up (3.2 ms on loopback against sshd, where the path is
      // 0.1 ms): three back to back, and the minimum is the round trip.
      if (++samples < INITIAL_PROBES) probe();
    });
    ping.call(proto);
  };
  return probe;
}

/** Moves a channel's window toward `target` as far as the budgets allow. */
function resize(m: Managed, target: number): void {
  const want = Math.max(0, target - SSH2_WINDOW);
  let delta = want - m.reserved;
  if (delta > 0) {
    delta = Math.min(
      delta,
      policy.processBudget - processReserved,
      policy.sessionBudget - m.session.reserved,
    );
    if (delta <= 0) return;
  }
  m.reserved += delta;
  account(m.session, delta);
  if (delta > 0) m.grewAt = Date.now();
  m.window = SSH2_WINDOW + m.reserved;
  if (m.window > m.peak) m.peak = m.window;
}

/** Grants what has been drained, keeping credit + undrained bytes <= the window. */
function credit(ch: ChannelInternals, m: Managed, proto: OwnerInternals["_protocol"]): void {
  if (ch.outgoing.state === "closed") return;
  follow(ch, m);
  const amount = m.window - ch.incoming.window - ch.readableLength;
  if (amount < topUpAt(m)) return;
  ch.incoming.window += amount;
  proto?.channelWindowAdjust?.(ch.outgoing.id, amount);
}

/**
 * When credit goes out: a quarter of the window (see TOP_UP_MAX) on a path
 * where windows grow; where they do not (round trips under
 * GROW_MIN_RTT_MS), at half, as ssh2 itself does, since there the window is
 * never what limits the flow and each adjust is a write(2): 512 adjusts per
 * 256 MiB on loopback instead of 256 cost ~10% more agent CPU on uploads.
 */
function topUpAt(m: Managed): number {
  const rtt = m.session.rtt;
  if (rtt === undefined || rtt < GROW_MIN_RTT_MS) return m.window / 2;
  return Math.max(TOP_UP, Math.min(m.window / 4, TOP_UP_MAX));
}

/**
 * A managed channel's current target window in bytes, and the largest it has
 * been (credit plus undrained bytes never exceed the peak: a shrink takes
 * effect as granted bytes arrive); undefined for a channel the policy does
 * not manage.
 */
export function channelWindow(channel: object): { window: number; peak: number } | undefined {
  const m = managed.get(channel);
  return m ? { window: m.window, peak: m.peak } : undefined;
}
