/**
 * What the splice needs of an ssh2 Channel beyond the Duplex interface
 * (ssh2 lib/Channel.js): a server-side channel's separate eof() and close(),
 * and turning off Node's autoDestroy on it.
 */
import type { Duplex } from "node:stream";

/** The parts of an ssh2 Channel used here; see ssh2 lib/Channel.js. */
interface ChannelLike extends Duplex {
  server?: boolean;
  eof?: () => void;
  close?: () => void;
  outgoing?: { state: string };
  _readableState?: { autoDestroy: boolean };
  _writableState?: { autoDestroy: boolean };
}

/** True for an ssh2 Channel (as opposed to a socket or any other Duplex). */
export function isSsh2Channel(stream: Duplex): boolean {
  const c = stream as ChannelLike;
  return c.outgoing !== undefined && typeof c.close === "function";
}

/**
 * A server-side channel's eof(), which sends EOF without CLOSE, or undefined
 * for other streams: on those, end() is the half-close. ssh2's server-side
 * end() sends CLOSE together with EOF, which would cut the other direction.
 */
export function serverEof(stream: Duplex): (() => void) | undefined {
  const c = stream as ChannelLike;
  return c.server && typeof c.eof === "function" ? c.eof.bind(c) : undefined;
}

/** Sends CLOSE on a server-side channel once both directions are done; no-op on others. */
export function closeServerChannel(stream: Duplex): void {
  const c = stream as ChannelLike;
  if (c.server && typeof c.close === "function") c.close();
}

/**
 * Turns off autoDestroy on an ssh2 Channel. Its destroy() is end() then
 * close(); Node calls it once both halves are done, when both have already
 * happened, and end() on a finished stream builds an
 * ERR_STREAM_ALREADY_FINISHED with a stack trace only to drop it (15 us a
 * connection). The EOF/CLOSE exchange ends the channel and ssh2 emits its
 * 'close'. Returns whether the channel's stream state was found.
 */
export function disableAutoDestroy(stream: Duplex): boolean {
  const c = stream as ChannelLike;
  if (!isSsh2Channel(stream) || !c._readableState || !c._writableState) return false;
  c._readableState.autoDestroy = false;
  c._writableState.autoDestroy = false;
  return true;
}
