/**
 * Jump hosts (-J, ProxyJump): each hop is an SSH session whose direct-tcpip
 * channel carries the next one.
 */
import { RevtunError } from "./errors.js";
import type { TunnelOptions } from "./supervisor.js";

export async function withJumpHosts(
  options: TunnelOptions,
  proxyJump: string | undefined,
  _ctx: { authSock?: string | undefined },
): Promise<TunnelOptions> {
  if (proxyJump === undefined || proxyJump.toLowerCase() === "none") return options;
  throw new RevtunError("USAGE", `jump hosts are not supported yet (-J ${proxyJump})`);
}
