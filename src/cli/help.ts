import { IGNORED_OPTIONS, SUPPORTED_OPTIONS } from "../config/directives.js";

/** The relay's lines of the synopsis, shared by `--help` and `revtun relay --help`. */
export const RELAY_SYNOPSIS = `revtun relay --listen [host:]port --host-key FILE --authorized-keys FILE
                    [--revoked-keys FILE] [--host-certificate FILE]
                    [--metrics [host:]port] [--admin [host:]port] [--admin-token-file FILE]
                    [--gateway-ports] [--max-channels N] [--log-format text|json] [-v]
                    [--fleet redis://host:port[/db] --fleet-key FILE [--fleet-name NAME]
                     [--fleet-password-file FILE] [--fleet-ca-file FILE] [--relay-id ID]
                     [--advertise host:port] [--workers N]] [--state-dir DIR]
                     [--ca-key FILE [--cert-validity DURATION]]
       revtun relay status [--json] [--admin host:port] [--admin-token-file FILE]
       revtun relay token --name NAME [--ttl DURATION] [--admin host:port] [--admin-token-file FILE]
       revtun relay revoke NAME [--admin host:port] [--admin-token-file FILE]
       revtun relay devices [--state online|offline] [--name TEXT] [--enrolled] [--json]
                            [--admin host:port] [--admin-token-file FILE]`;

export const HELP = `usage: revtun [-N] [-v] [-q] [-p port] [-l login] [-i identity_file]... [-c ciphers]
              [-o Option=value]... [-F configfile] [-J [user@]host[:port][,...]]
              [--metrics [host:]port] [--log-format text|json] [--grace seconds]
              [--max-backoff seconds] [--passphrase-file F] [--password-file F]
              -R spec... [user@]host
       revtun --config tunnels.yaml [--metrics [host:]port] [--log-format text|json]
       ${RELAY_SYNOPSIS}
       revtun enroll --token-file FILE [-i identity] [--host-key FILE.pub]... [-p port] [user@]host
       revtun demo
       revtun --help | --version
       revtun relay --help

Keeps reverse SSH tunnels up for good: reconnects after any loss, re-binds
every forward, and reports its health.

Forwards (-R, several allowed):
  [bind_address:]port:host:hostport   listen on the server, forward to host:hostport
  [bind_address:]port:/local.sock     ... to a local unix socket
  /remote.sock:host:hostport          listen on a unix socket on the server
  No bind_address means loopback on the server; "*" or "" means every
  interface (the server must allow it: GatewayPorts). IPv6 in brackets.
  Port 0 lets the server choose; revtun prints "Allocated port N ...".

ssh flags:
  -N            accepted (revtun never runs a remote command)
  -p port       server port            -l login   user name
  -i file       identity file (several allowed; default ~/.ssh/id_ed25519, id_ecdsa, id_rsa)
  -c ciphers    cipher list (OpenSSH syntax, +/-/^ prefixes allowed)
  -o Opt=value  an ssh_config option, see below
  -F file       ssh_config file ("none" for none; default ~/.ssh/config)
  -J hops       jump hosts, as ProxyJump
  -v            debug logging          -q  errors only
  -4 / -6       IPv4 / IPv6 only       -T, -n, -C, -x, -a, -k accepted, no effect

revtun options:
  --metrics [host:]port   serve /healthz and /metrics (host defaults to 127.0.0.1)
  --log-format F          text (default) or json, one object per line
  --grace S               on SIGTERM/SIGINT, let open connections finish for S seconds (default 10)
  --max-backoff S         ceiling of the reconnect delay (default 30)
  --config FILE           run the tunnels described in a YAML file
  --passphrase-file F     passphrase of an encrypted key (or REVTUN_PASSPHRASE)
  --password-file F       password for password/keyboard-interactive (or REVTUN_PASSWORD)

-o options revtun acts on:
  ${SUPPORTED_OPTIONS.join(", ")}
-o options accepted without effect (they concern shells and terminals):
  ${IGNORED_OPTIONS.join(", ")}
Any other -o option is an error.

Exit status: 0 after SIGTERM/SIGINT, 255 for connection, authentication and
host key failures (as ssh), 2 for usage and configuration errors.
`;
