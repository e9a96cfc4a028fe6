/**
 * Forwarding: the one data path shared by the agent and the relay.
 *
 * A forwarded connection is two Duplex streams, an SSH channel and a socket,
 * spliced together with backpressure both ways and half-close passed
 * through: when one side ends its writes, the other side's write half is shut
 * (FIN on a socket, EOF on a channel) and the opposite direction keeps flowing.
 */
import net from "node:net";
import type { Duplex } from "node:stream";

const EMPTY = Buffer.alloc(0);

export type Endpoint = { kind: "tcp"; host: string; port: number } | { kind: "unix"; path: string };

export function formatEndpoint(e: Endpoint): string {
  if (e.kind === "unix") return e.path;
  return `${e.host.includes(":") ? `[${e.host}]` : e.host}:${e.port}`;
}

/**
 * Starts a connection to a local target and returns the socket at once, still
 * connecting. The agent accepts the channel without waiting for the connect:
 * sshd has already accepted the remote client's TCP connection either way, so
 * a refused target looks the same to that client (open, then closed), and the
 * channel confirmation no longer waits a loop turn for the local connect.
 * Writes made before the connect completes are queued by net.Socket, with
 * backpressure. A target that does not answer within `timeoutMs` is destroyed
 * with an error that names it.
 */
export function openTarget(target: Endpoint, timeoutMs: number): net.Socket {
  const sock =
    target.kind === "unix"
      ? net.connect({ path: target.path, allowHalfOpen: true })
      : net.connect({ host: target.host, port: target.port, allowHalfOpen: true, noDelay: true });
  const timer = setTimeout(() => {
    sock.destroy(new Error(`connect to ${formatEndpoint(target)} timed out after ${timeoutMs} ms`));
  }, timeoutMs);
  sock.once("connect", () => clearTimeout(timer));
  sock.once("close", () => clearTimeout(timer));
  return sock;
}

/** What a finished forwarded connection moved, counted on the socket side. */
export interface SpliceResult {
  /** Bytes from the socket into the channel. */
  bytesIn: number;
  /** Bytes from the channel into the socket. */
  bytesOut: number;
  /** False when the socket never connected (a refused or silent target). */
  connected: boolean;
  error?: Error;
}

interface StreamStates {
  _readableState?: { autoDestroy: boolean };
  _writableState?: { autoDestroy: boolean };
}

/** The parts of an ssh2 Channel this module relies on; see ssh2 lib/Channel.js. */
interface ChannelLike extends Duplex {
  server?: boolean;
  eof?: () => void;
  close?: () => void;
  outgoing?: { state: string };
}

/**
 * Splices `channel` and `socket` until both directions are done or one side
 * fails, then releases both. Never rejects: a failure is reported in the result.
 *
 * The normal end is the SSH EOF/CLOSE exchange: a channel is ended, not
 * destroyed, and closes when the peer's CLOSE arrives. Destroying it early
 * makes the peer's next packet wait on a delayed ACK (about 40 ms a
 * connection against OpenSSH sshd). `destroy()` is kept for error paths.
 */
export function splice(channel: Duplex, socket: net.Socket): Promise<SpliceResult> {
  const chan = channel as ChannelLike;
  return new Promise((resolve) => {
    let done = false;
    let error: Error | undefined;
    let connected = !socket.connecting;
    if (!connected) socket.once("connect", () => (connected = true));
    let channelReadDone = false; // channel → socket finished (socket write half shut)
    let socketReadDone = false; // socket → channel finished (channel EOF sent)

    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(lingerTimer);
      socket.removeListener("close", onSocketClose);
      channel.removeListener("close", onChannelClose);
      resolve({
        bytesIn: socket.bytesRead,
        bytesOut: socket.bytesWritten,
        connected,
        ...(error ? { error } : {}),
      });
    };

    const fail = (err: Error | undefined) => {
      if (done) return;
      if (err && !error) error = err;
      unlink();
      socket.destroy();
      channel.destroy();
      finish();
    };

    // A server-side ssh2 channel sends CLOSE together with EOF on end(), which
    // would cut the other direction; eof() alone keeps it half-open. But eof()
    // goes out at once, ahead of data still queued for window space, and
    // ssh2 drops writes after EOF: so send it from the callback of an empty
    // write, which runs once every earlier chunk has reached the transport.
    let eofSent = false;
    const shutChannelWrites = () => {
      const eof = chan.eof;
      if (!chan.server || typeof eof !== "function") {
        channel.end();
        return;
      }
      channel.write(EMPTY, () => {
        if (done) return;
        eof.call(chan);
        eofSent = true;
        maybeComplete();
      });
    };

    const maybeComplete = () => {
      if (!channelReadDone || !socketReadDone) return;
      if (chan.server && !eofSent) return;
      if (chan.server && typeof chan.close === "function") chan.close();
      // The client side waits for the server's CLOSE; the socket closes once
      // its FIN is acknowledged and the peer's FIN has been read.
    };

    // Flow control both ways, as pipe() does but with a third of its
    // per-connection listeners and bookkeeping: a full socket pauses the
    // channel (ssh2 then stops adjusting the window, so the peer stops
    // sending), a full channel window pauses the socket.
    const toSocket = (chunk: Buffer) => {
      if (!socket.write(chunk)) channel.pause();
    };
    const toChannel = (chunk: Buffer) => {
      if (!channel.write(chunk)) socket.pause();
    };
    const resumeChannel = () => channel.resume();
    const resumeSocket = () => socket.resume();
    channel.on("data", toSocket);
    socket.on("drain", resumeChannel);
    socket.on("data", toChannel);
    channel.on("drain", resumeSocket);
    // A 'data' listener does not restart a stream that was paused explicitly
    // (a server accepting with pauseOnConnect); pipe() resumes, so do we.
    channel.resume();
    socket.resume();
    const unlinkSocketReads = () => {
      socket.removeListener("data", toChannel);
      channel.removeListener("drain", resumeSocket);
    };
    const unlink = () => {
      channel.removeListener("data", toSocket);
      socket.removeListener("drain", resumeChannel);
      unlinkSocketReads();
    };
    // ssh2's Channel.destroy() is end() then close(); Node calls it once both
    // halves are done, when both have already happened, and end() on a
    // finished stream builds an ERR_STREAM_ALREADY_FINISHED with a stack
    // trace only to drop it (15 us a connection). The EOF/CLOSE exchange
    // above ends the channel, and ssh2 emits its 'close'; fail() still
    // destroys it on error paths. Other Duplex streams keep autoDestroy.
    const states = channel as unknown as StreamStates;
    if (chan.outgoing !== undefined && typeof chan.close === "function") {
      if (states._readableState) states._readableState.autoDestroy = false;
      if (states._writableState) states._writableState.autoDestroy = false;
    }

    channel.once("end", () => {
      channelReadDone = true;
      socket.end();
      maybeComplete();
    });
    socket.once("end", () => {
      socketReadDone = true;
      shutChannelWrites();
      maybeComplete();
    });

    socket.on("error", (err) => fail(err));
    channel.on("error", (err: Error) => fail(err));

    let lingerTimer: NodeJS.Timeout | undefined;
    const onSocketClose = (hadError: boolean) => {
      if (hadError || !channelReadDone || !socketReadDone) {
        fail(hadError ? (error ?? new Error("socket closed with an error")) : undefined);
        return;
      }
      if (chanClosed) finish();
    };
    let chanClosed = false;
    const onChannelClose = () => {
      chanClosed = true;
      // The peer closed the channel. Whatever it sent before CLOSE is still
      // buffered and reaches the socket through the pipe; anything the local
      // side sends from now on has nowhere to go.
      unlinkSocketReads();
      socket.resume();
      if (socket.destroyed) {
        finish();
        return;
      }
      // ssh2 pushes EOF on CLOSE, so the 'end' handler shuts the socket once drained.
      if (socket.writableFinished) {
        socket.destroy();
        return;
      }
      // Give the socket a bounded time to flush what it holds, then release it.
      lingerTimer = setTimeout(() => fail(undefined), 30_000);
      lingerTimer.unref();
      socket.once("finish", () => {
        socket.destroy();
      });
    };
    socket.on("close", onSocketClose);
    channel.on("close", onChannelClose);
  });
}
