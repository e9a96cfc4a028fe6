/**
 * Keeps a server channel's EOF (and the CLOSE that may follow it) behind the
 * data already written to it.
 *
 * Why: forward.ts's splice shuts a server-mode channel's write side with
 * `eof()` the moment the socket ends. Bytes the pipe has already written may
 * still sit in the channel waiting for window space (RFC 4254 5.2); ssh2
 * sends EOF at once and then drops them (Channel._write returns without
 * sending when outgoing.state is no longer "open"). Measured: a 16 MiB
 * upload lost its last ~1.3 MiB in one run of five on loopback.
 *
 * This wraps one channel's eof/close/destroy so EOF goes out after an empty
 * write has passed through the queue. It becomes a no-op once splice orders
 * EOF itself (then nothing is queued when eof() is called).
 */
import type { ServerChannel } from "ssh2";

const EMPTY = Buffer.alloc(0);

interface ChannelInternals {
  incoming?: { state?: string };
}

export function orderEofAfterWrites(channel: ServerChannel): void {
  const eof = channel.eof.bind(channel);
  const close = channel.close.bind(channel);
  const destroy = channel.destroy.bind(channel);
  let eofPending = false;
  let closeAfterEof = false;

  channel.eof = () => {
    if (eofPending) return;
    if (!channel.writable || channel.writableLength === 0) {
      eof();
      return;
    }
    eofPending = true;
    // Writable runs writes in order: this callback fires once every earlier
    // chunk has been handed to the SSH transport.
    channel.write(EMPTY, () => {
      if (!eofPending) return;
      eofPending = false;
      eof();
      if (closeAfterEof) close();
    });
  };

  channel.close = () => {
    // The peer's CLOSE (incoming "closed") ends the channel regardless: answer at once.
    const peerClosed = (channel as unknown as ChannelInternals).incoming?.state === "closed";
    if (eofPending && !peerClosed) {
      closeAfterEof = true;
      return;
    }
    close();
  };

  // Error paths stay immediate.
  channel.destroy = () => {
    eofPending = false;
    closeAfterEof = false;
    return destroy();
  };
}
