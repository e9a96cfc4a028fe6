/**
 * Which of revtun's reaches past ssh2's public API work on the installed
 * ssh2. Each hook degrades to ssh2's own behaviour when its internal is gone
 * (see the file that uses it); this says which are live, so the CLI can name
 * an inactive one at -v and test/ssh2/hooks.test.ts can fail CI on an ssh2
 * upgrade that breaks one, instead of a quiet loss (without the keepalive
 * reset, say, bulk transfers look dead and the tunnel reconnects under load).
 *
 * Checked against ssh2 1.17.0, the version package.json pins.
 */
import ssh2, { type Client, type Connection } from "ssh2";
import { hostCertificateHookLive } from "./host-certificate.js";
import { sendPacket } from "./transport.js";
import { userCertificateHookLive } from "./user-certificate.js";
import { windowHookLive } from "./window.js";

export interface HookStatus {
  name: string;
  live: boolean;
  /** What ssh2 internal the hook needs. */
  needs: string;
}

const hook = (name: string, live: boolean, needs: string): HookStatus => ({ name, live, needs });

interface Internals {
  _resetKA?: unknown;
  _remoteVer?: unknown;
  _protocol?: {
    _packetRW?: { write?: { alloc?: unknown; finalize?: unknown } };
    _cipher?: { allocPacket?: unknown };
    channelOpenFail?: unknown;
    channelOpenConfirm?: unknown;
  };
}

/** What can be checked before any connection: the module and the fields a new Client declares. */
export function staticHooks(): HookStatus[] {
  const client = new ssh2.Client() as unknown as Internals;
  return [
    hook("ignore-message", sendPacket !== undefined, "ssh2/lib/protocol/utils.js sendPacket()"),
    hook("keepalive-reset", "_resetKA" in client, "Client#_resetKA"),
    hook("remote-version", "_remoteVer" in client, "Client#_remoteVer"),
    hook("host-certificate", hostCertificateHookLive(), "ssh2/lib/protocol/kex.js KexInit"),
    hook(
      "user-certificate",
      userCertificateHookLive(),
      "ssh2/lib/protocol/utils.js sendPacket() and convertSignature()",
    ),
  ];
}

/** What an established connection (client or server side) offers the hooks. */
export function connectionHooks(owner: Client | Connection): HookStatus[] {
  const o = owner as unknown as Internals;
  const proto = o._protocol;
  const writer = proto?._packetRW?.write;
  const isClient = owner instanceof ssh2.Client;
  return [
    hook(
      "ignore-message",
      sendPacket !== undefined &&
        typeof writer?.alloc === "function" &&
        typeof writer.finalize === "function",
      "sendPacket() and Protocol#_packetRW.write",
    ),
    hook("padding-pool", typeof proto?._cipher?.allocPacket === "function", "Protocol#_cipher.allocPacket"),
    hook(
      "receive-window",
      windowHookLive(owner),
      "Client#_chanMgr, Protocol#_handlers.CHANNEL_DATA and Protocol#channelWindowAdjust",
    ),
    hook(
      "window-seed",
      windowHookLive(owner) && typeof proto?.channelOpenConfirm === "function",
      "Protocol#channelOpenConfirm",
    ),
    ...(isClient
      ? [
          hook("keepalive-reset", typeof o._resetKA === "function", "Client#_resetKA"),
          hook("remote-version", typeof o._remoteVer === "string", "Client#_remoteVer"),
          hook(
            "host-certificate",
            hostCertificateHookLive(owner),
            "KexInit, Protocol#_kex and Protocol#_offer",
          ),
          hook(
            "user-certificate",
            userCertificateHookLive(owner as Client),
            "Protocol#authPK, Protocol#_authsQueue and Protocol#_packetRW.write",
          ),
        ]
      : [
          hook(
            "channel-open-failure",
            typeof proto?.channelOpenFail === "function",
            "Protocol#channelOpenFail",
          ),
          hook(
            "host-certificate",
            hostCertificateHookLive(owner),
            "KexInit, Protocol#_kex and Protocol#_hostKeys",
          ),
        ]),
  ];
}
