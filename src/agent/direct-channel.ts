/**
 * A direct-tcpip channel (RFC 4254 7.2) through an SSH session to host:port:
 * how a jump host carries the next hop.
 */
import type { Duplex } from "node:stream";
import type { Client } from "ssh2";
import { sshHostName } from "../shared/address.js";
import { RevtunError } from "../shared/errors.js";

export function openDirectChannel(
  client: Client,
  host: string,
  port: number,
  timeoutMs: number,
): Promise<Duplex> {
  const target = sshHostName(host, port);
  const fail = (why: string) => new RevtunError("CONNECT", why, { reason: "refused" });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(fail(`no answer opening a channel to ${target} after ${timeoutMs} ms`)),
      timeoutMs,
    );
    try {
      client.forwardOut("127.0.0.1", 0, host, port, (err, channel) => {
        clearTimeout(timer);
        if (err) {
          reject(fail(`cannot reach ${target} through it: ${err.message}`));
          return;
        }
        // SSH over a channel cannot run half-closed: when the far end stops
        // sending, close our half too, as a TCP socket without allowHalfOpen
        // would. Otherwise sshd waits for our EOF while ssh2 waits for a close.
        channel.once("end", () => channel.destroy());
        resolve(channel);
      });
    } catch (err) {
      clearTimeout(timer);
      reject(fail((err as Error).message));
    }
  });
}
