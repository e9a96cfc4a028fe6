/**
 * From options as ssh knows them (SshOptions, merged from -o, flags and
 * ssh_config) to the library's TunnelOptions. ssh's defaults are the
 * library's (agent/options.ts DEFAULT_TUNNEL_OPTIONS), so only what ssh
 * spells differently is translated here: seconds to milliseconds, the
 * authentication switches to a method list, ~ paths.
 * The environment is a parameter: the library never reads process state.
 */
import { homedir, userInfo } from "node:os";
import { type AuthMethod, DEFAULT_TUNNEL_OPTIONS, type TunnelOptions } from "../agent/options.js";
import { expandTilde } from "../shared/address.js";
import { RevtunError } from "../shared/errors.js";
import type { SshOptions } from "./directives.js";

export interface ResolveContext {
  /** Host as typed on the command line or the YAML tunnel name. */
  host: string;
  home?: string;
  /** Local user name, the default login. */
  localUser?: string;
  /** SSH_AUTH_SOCK, used unless IdentityAgent says otherwise. */
  authSock?: string | undefined;
  passphrase?: string | undefined;
  password?: string | undefined;
}

const seconds = (s: number | undefined) => (s === undefined ? undefined : s * 1000);

/** ssh's method names (PreferredAuthentications) to the library's; ssh's agent is part of publickey. */
const SSH_METHODS: Record<string, AuthMethod[]> = {
  publickey: ["agent", "publickey"],
  "keyboard-interactive": ["keyboard-interactive"],
  password: ["password"],
};

/**
 * The methods ssh would try, in its order: PreferredAuthentications (names
 * revtun cannot use, such as gssapi-with-mic, are skipped as ssh skips
 * methods it has no means for), less those switched off.
 */
export function authMethods(ssh: SshOptions): AuthMethod[] {
  const order = ssh.preferredAuthentications ?? ["publickey", "keyboard-interactive", "password"];
  const off = new Set<AuthMethod>();
  if (ssh.pubkeyAuthentication === false) off.add("agent").add("publickey");
  if (ssh.kbdInteractiveAuthentication === false) off.add("keyboard-interactive");
  if (ssh.passwordAuthentication === false) off.add("password");
  const methods = order.flatMap((name) => SSH_METHODS[name.toLowerCase()] ?? []);
  return [...new Set(methods)].filter((m) => !off.has(m));
}

export function resolveTunnelOptions(ssh: SshOptions, ctx: ResolveContext): TunnelOptions {
  const home = ctx.home ?? homedir();
  const forwards = ssh.remoteForward ?? [];
  if (forwards.length === 0) {
    throw new RevtunError(
      "USAGE",
      `no remote forward for ${ctx.host}: give -R [bind_address:]port:host:hostport, or RemoteForward in ssh_config`,
    );
  }
  const agentSetting = ssh.identityAgent;
  const agent =
    agentSetting === undefined
      ? ctx.authSock
      : agentSetting.toLowerCase() === "none"
        ? undefined
        : agentSetting === "SSH_AUTH_SOCK" || agentSetting === "$SSH_AUTH_SOCK"
          ? ctx.authSock
          : expandTilde(agentSetting, home);
  const methods = authMethods(ssh);
  const usesPassword = methods.includes("password") || methods.includes("keyboard-interactive");
  return {
    host: ssh.hostName ?? ctx.host,
    port: ssh.port ?? DEFAULT_TUNNEL_OPTIONS.port,
    username: ssh.user ?? ctx.localUser ?? userInfo().username,
    identityFiles: (ssh.identityFile ?? []).map((f) => expandTilde(f, home)),
    certificateFiles: (ssh.certificateFile ?? []).map((f) => expandTilde(f, home)),
    identitiesOnly: ssh.identitiesOnly,
    agent: methods.includes("agent") ? agent : undefined,
    authMethods: methods,
    passphrase: ctx.passphrase,
    // A password no method will send is not handed to the library at all.
    password: usesPassword ? ctx.password : undefined,
    knownHostsFiles: (ssh.userKnownHostsFile ?? ["~/.ssh/known_hosts", "~/.ssh/known_hosts2"]).map((f) =>
      expandTilde(f, home),
    ),
    strictHostKeyChecking: ssh.strictHostKeyChecking,
    hashKnownHosts: ssh.hashKnownHosts,
    hostKeyAlias: ssh.hostKeyAlias,
    connectTimeoutMs: seconds(ssh.connectTimeout),
    ciphers: ssh.ciphers,
    exitOnForwardFailure: ssh.exitOnForwardFailure,
    serverAliveIntervalMs: seconds(ssh.serverAliveInterval),
    serverAliveCountMax: ssh.serverAliveCountMax,
    tcpKeepAlive: ssh.tcpKeepAlive,
    addressFamily: ssh.addressFamily,
    forwards,
    streamLocalBindUnlink: ssh.streamLocalBindUnlink,
    home,
  };
}
