/**
 * From options as ssh knows them (SshOptions, merged from -o, flags and
 * ssh_config) to the library's TunnelOptions, filling in ssh's defaults.
 * The environment is a parameter: the library never reads process state.
 */
import { homedir, userInfo } from "node:os";
import { join } from "node:path";
import { RevtunError } from "./errors.js";
import type { SshOptions } from "./options.js";
import type { TunnelOptions } from "./supervisor.js";

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

export function expandTilde(p: string, home: string): string {
  if (p === "~") return home;
  if (p.startsWith("~/")) return join(home, p.slice(2));
  return p;
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
  return {
    host: ssh.hostName ?? ctx.host,
    port: ssh.port ?? 22,
    username: ssh.user ?? ctx.localUser ?? userInfo().username,
    identityFiles: (ssh.identityFile ?? []).map((f) => expandTilde(f, home)),
    identitiesOnly: ssh.identitiesOnly ?? false,
    agent: ssh.pubkeyAuthentication === false ? undefined : agent,
    passphrase: ctx.passphrase,
    password:
      ssh.passwordAuthentication === false && ssh.kbdInteractiveAuthentication === false
        ? undefined
        : ctx.password,
    knownHostsFiles: (ssh.userKnownHostsFile ?? ["~/.ssh/known_hosts", "~/.ssh/known_hosts2"]).map((f) =>
      expandTilde(f, home),
    ),
    strictHostKeyChecking: ssh.strictHostKeyChecking ?? "ask",
    hashKnownHosts: ssh.hashKnownHosts ?? false,
    hostKeyAlias: ssh.hostKeyAlias,
    connectTimeout: ssh.connectTimeout ?? 15,
    ciphers: ssh.ciphers,
    exitOnForwardFailure: ssh.exitOnForwardFailure ?? false,
    serverAliveInterval: ssh.serverAliveInterval ?? 15,
    serverAliveCountMax: ssh.serverAliveCountMax ?? 3,
    tcpKeepAlive: ssh.tcpKeepAlive ?? true,
    addressFamily: ssh.addressFamily ?? "any",
    forwards,
    streamLocalBindUnlink: ssh.streamLocalBindUnlink ?? false,
    home,
  };
}
