/**
 * Forwarding: the one data path shared by the agent and the relay.
 *
 * A forwarded connection is two Duplex streams, an SSH channel and a socket,
 * spliced together with backpressure both ways and half-close passed
 * through: when one side ends its writes, the other side's write half is shut
 * (FIN on a socket, EOF on a channel) and the opposite direction keeps flowing.
 */
import type net from "node:net";
import type { Duplex } from "node:stream";
import { closeServerChannel, disableAutoDestroy, serverEof } from "../ssh2/channel.js";

const EMPTY = Buffer.alloc(0);

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
  const eof = serverEof(channel);
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
      if (!eof) {
        channel.end();
        return;
      }
      channel.write(EMPTY, () => {
        if (done) return;
        eof();
        eofSent = true;
        maybeComplete();
      });
    };

    const maybeComplete = () => {
      if (!channelReadDone || !socketReadDone) return;
      if (eof && !eofSent) return;
      closeServerChannel(channel);
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
    // The EOF/CLOSE exchange above ends an ssh2 channel; fail() still
    // destroys it on error paths. Other Duplex streams keep autoDestroy.
    disableAutoDestroy(channel);

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
