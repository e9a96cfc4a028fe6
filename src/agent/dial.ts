/**
 * The TCP connection to the SSH server, with ConnectTimeout and an error that
 * says what failed in ssh's words.
 */
import { once } from "node:events";
import net from "node:net";
import { sshHostName } from "../shared/address.js";
import { RevtunError } from "../shared/errors.js";
import { classify } from "./failures.js";

export interface DialOptions {
  host: string;
  port: number;
  family?: 4 | 6 | undefined;
  timeoutMs: number;
}

export async function dial(o: DialOptions): Promise<net.Socket> {
  const target = sshHostName(o.host, o.port);
  const sock = net.connect({
    host: o.host,
    port: o.port,
    noDelay: true,
    ...(o.family ? { family: o.family } : {}),
  });
  try {
    await once(sock, "connect", { signal: AbortSignal.timeout(o.timeoutMs) });
    return sock;
  } catch (e) {
    sock.destroy();
    const err = e as NodeJS.ErrnoException;
    if (err.name === "AbortError") {
      throw new RevtunError("CONNECT", `connect to ${target} timed out after ${o.timeoutMs} ms`, {
        reason: "timeout",
      });
    }
    const what =
      err.code === "ECONNREFUSED"
        ? "connection refused"
        : err.code === "ENOTFOUND" || err.code === "EAI_AGAIN"
          ? `cannot resolve ${o.host}`
          : err.message;
    throw new RevtunError("CONNECT", `cannot connect to ${target}: ${what}`, { reason: classify(err) });
  }
}
