/**
 * Refusing a client's channel open with a reason and a description, which
 * ssh2's public reject() cannot do.
 */
import type { Connection } from "ssh2";

interface ConnectionInternals {
  _protocol?: { channelOpenFail?: (remote: number, reason: number, description?: string) => void };
}

/** RFC 4254 5.1 reason codes for SSH_MSG_CHANNEL_OPEN_FAILURE. */
export const OPEN_FAILURE = {
  ADMINISTRATIVELY_PROHIBITED: 1,
  CONNECT_FAILED: 2,
  UNKNOWN_CHANNEL_TYPE: 3,
  RESOURCE_SHORTAGE: 4,
} as const;

/**
 * Rejects a client's channel open with a reason and a description the
 * OpenSSH client prints ("channel 0: open failed: administratively
 * prohibited: <description>").
 *
 * ssh2 1.17's reject() always sends an empty description and, having
 * reserved a channel number, CONNECT_FAILED (mscdex/ssh2#1222; the fix,
 * PR #1223, is unmerged). reject() writes the failure synchronously through
 * Protocol.channelOpenFail, so that method is wrapped for exactly that call.
 */
export function rejectChannelOpen(
  conn: Connection,
  reject: () => void,
  reason: number,
  description: string,
): void {
  const proto = (conn as unknown as ConnectionInternals)._protocol;
  const original = proto?.channelOpenFail;
  if (!proto || typeof original !== "function") {
    reject();
    return;
  }
  const hadOwn = Object.hasOwn(proto, "channelOpenFail");
  proto.channelOpenFail = (remote: number) => original.call(proto, remote, reason, description);
  try {
    reject();
  } finally {
    if (hadOwn) proto.channelOpenFail = original;
    else delete proto.channelOpenFail;
  }
}
