/**
 * Forwarding: the one data path shared by the agent and the relay.
 *
 * A forwarded connection is two Duplex streams, an SSH channel and a socket
 * (or any other Duplex: the relay's named tunnels splice an operator's
 * channel with a device's), spliced together with backpressure both ways
 * and half-close passed through: when one side ends its writes, the other
 * side's write half is shut (FIN on a socket, EOF on a channel) and the
 * opposite direction keeps flowing.
 */
import type net from "node:net";
import type { Duplex } from "node:stream";
import { closeServerChannel, disableAutoDestroy, serverEof } from "../ssh2/channel.js";

/** How long a spliced pair may linger after one side's CLOSE, flushing, before both are destroyed. */
const LINGER_MS = 30_000;

const EMPTY = Buffer.alloc(0);

/** What a finished forwarded connection moved, counted as the splice hands bytes over. */
export interface SpliceResult {
  /** Bytes from the socket (second side) into the channel. */
  bytesIn: number;
  /** Bytes from the channel into the socket (second side). */
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
/**
 * One direction of flow control, as pipe() does but with a third of its
 * per-connection listeners and bookkeeping: `from`'s data goes to `to`, a full
 * `to` pauses `from` (for a channel, ssh2 then stops adjusting the window, so
 * the peer stops sending), `to`'s drain resumes it. `from` is resumed too: a
 * 'data' listener does not restart a stream paused explicitly (a server
 * accepting with pauseOnConnect). Returns the function that unhooks it.
 */
function flow(from: Duplex, to: Duplex, count: (bytes: number) => void): () => void {
  const onData = (chunk: Buffer) => {
    count(chunk.length);
    if (!to.write(chunk)) from.pause();
  };
  const onDrain = () => from.resume();
  from.on("data", onData);
  to.on("drain", onDrain);
  from.resume();
  return () => {
    from.removeListener("data", onData);
    to.removeListener("drain", onDrain);
  };
}

export function splice(channel: Duplex, socket: Duplex): Promise<SpliceResult> {
  const eof = serverEof(channel);
  const otherEof = serverEof(socket);
  if (eof && otherEof) return spliceServerChannels(channel, socket, eof, otherEof);
  return new Promise((resolve) => {
    let done = false;
    let error: Error | undefined;
    let bytesIn = 0;
    let bytesOut = 0;
    let connected = (socket as Partial<net.Socket>).connecting !== true;
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
        bytesIn,
        bytesOut,
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
      // The peer's CLOSE came first (ssh2 ends the channel on it): no EOF to send, and a write would fail.
      if (channel.destroyed || channel.writableEnded) {
        eofSent = true;
        maybeComplete();
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

    // Flow control both ways (flow()): a full socket pauses the channel, a
    // full channel window pauses the socket.
    const unlinkChannelReads = flow(channel, socket, (n) => {
      bytesOut += n;
    });
    const unlinkSocketReads = flow(socket, channel, (n) => {
      bytesIn += n;
    });
    const unlink = () => {
      unlinkChannelReads();
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
      lingerTimer = setTimeout(() => fail(undefined), LINGER_MS);
      lingerTimer.unref();
      socket.once("finish", () => {
        socket.destroy();
      });
    };
    socket.on("close", onSocketClose);
    channel.on("close", onChannelClose);
  });
}

/**
 * Two server-side ssh2 channels (an operator's direct-tcpip and a device's
 * forwarded-tcpip on the relay): the same data path, but each side's
 * half-close is EOF then, once both directions are done, CLOSE, so EOF
 * passes through both ways. A peer's CLOSE (ssh2 answers it at once and
 * emits 'close' after the last data has been read) means nothing more can
 * reach that side: the other side gets its EOF once what it was sent has
 * gone out, then CLOSE. LINGER_MS bounds a peer that never reads.
 */
function spliceServerChannels(
  a: Duplex,
  b: Duplex,
  eofA: () => void,
  eofB: () => void,
): Promise<SpliceResult> {
  return new Promise((resolve) => {
    let done = false;
    let error: Error | undefined;
    let bytesIn = 0; // b → a
    let bytesOut = 0; // a → b
    const state = {
      a: { readDone: false, eofSent: false, eofQueued: false, closed: false },
      b: { readDone: false, eofSent: false, eofQueued: false, closed: false },
    };
    let lingerTimer: NodeJS.Timeout | undefined;

    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(lingerTimer);
      resolve({ bytesIn, bytesOut, connected: true, ...(error ? { error } : {}) });
    };
    const fail = (err: Error | undefined) => {
      if (done) return;
      if (err && !error) error = err;
      a.destroy();
      b.destroy();
      finish();
    };
    const linger = () => {
      if (lingerTimer) return;
      lingerTimer = setTimeout(() => fail(undefined), LINGER_MS);
      lingerTimer.unref();
    };

    // EOF goes out after every chunk queued before it (see shutChannelWrites above).
    const shut = (stream: Duplex, eof: () => void, st: typeof state.a, then: () => void) => {
      if (st.eofQueued) return;
      st.eofQueued = true;
      const sent = () => {
        st.eofSent = true;
        then();
      };
      if (stream.destroyed || stream.writableEnded) {
        sent();
        return;
      }
      stream.write(EMPTY, () => {
        if (done) return;
        eof();
        sent();
      });
    };
    const maybeClose = () => {
      if (done) return;
      const s = state;
      if (s.a.readDone && s.b.readDone && s.a.eofSent && s.b.eofSent) {
        closeServerChannel(a);
        closeServerChannel(b);
        linger();
        return;
      }
      // One side's peer closed: the other side gets EOF (once flushed) and then CLOSE.
      if (s.a.closed && s.b.eofSent) closeServerChannel(b);
      if (s.b.closed && s.a.eofSent) closeServerChannel(a);
    };

    const unlinkAToB = flow(a, b, (n) => {
      bytesOut += n;
    });
    const unlinkBToA = flow(b, a, (n) => {
      bytesIn += n;
    });
    disableAutoDestroy(a);
    disableAutoDestroy(b);

    a.once("end", () => {
      state.a.readDone = true;
      shut(b, eofB, state.b, maybeClose);
      maybeClose();
    });
    b.once("end", () => {
      state.b.readDone = true;
      shut(a, eofA, state.a, maybeClose);
      maybeClose();
    });
    a.on("error", (err: Error) => fail(err));
    b.on("error", (err: Error) => fail(err));
    a.once("close", () => {
      state.a.closed = true;
      // Nothing more reaches a's peer: read b only to discard it.
      unlinkBToA();
      b.resume();
      if (state.b.closed) finish();
      else {
        linger();
        maybeClose();
      }
    });
    b.once("close", () => {
      state.b.closed = true;
      unlinkAToB();
      a.resume();
      if (state.a.closed) finish();
      else {
        linger();
        maybeClose();
      }
    });
  });
}
