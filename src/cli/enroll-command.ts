/**
 * `revtun enroll --token-file FILE [-i IDENTITY] [--host-key FILE.pub]...
 * [-p port] [-o UserKnownHostsFile=F] [user@]host`: a device joins the fleet
 * (docs/enrollment.md, the library's src/agent/enrollment.ts). The token
 * comes from the file or REVTUN_ENROLL_TOKEN, never from argv. Prints what
 * it wrote and the one command that runs the device's tunnel. Exit 0; 255
 * and one line for a refused token, a relay the token does not name or the
 * network; 2 for bad flags.
 */
import { homedir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { enroll } from "../agent/enrollment.js";
import { escapeControl } from "../shared/bounded-text.js";
import { RevtunError } from "../shared/errors.js";
import { exitCodeFor, type Io, readSecret } from "./process.js";

export const ENROLL_USAGE = `usage: revtun enroll --token-file FILE [-i IDENTITY] [--host-key FILE.pub]... [-p port]
                     [-o UserKnownHostsFile=FILE] [user@]host

  --token-file FILE     the one-time token (revtun relay token); or the env REVTUN_ENROLL_TOKEN
  -i IDENTITY           the device's key (default ~/.ssh/revtun_ed25519; an ed25519 key is made
                        there, mode 600, if absent); the certificate is written to IDENTITY-cert.pub
  --host-key FILE.pub   an sshd host public key to certify for the name (several allowed); the
                        certificate is written beside it (ssh_host_ed25519_key-cert.pub)
  -p port               the relay's SSH port (default 22)
  -o UserKnownHostsFile=FILE
                        where the relay's host key is recorded (default ~/.ssh/known_hosts)
  -h, --help            this text
`;

const OPTIONS = {
  "token-file": { type: "string" },
  identity: { type: "string", short: "i" },
  "host-key": { type: "string", multiple: true },
  port: { type: "string", short: "p" },
  option: { type: "string", short: "o", multiple: true },
  help: { type: "boolean", short: "h" },
} as const;

/** A path or word as a POSIX shell reads it back unchanged. */
const sh = (s: string) => (/^[A-Za-z0-9_@%+=:,./~-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`);

export async function enrollCommand(
  argv: string[],
  io: Pick<Io, "stdout" | "stderr" | "env">,
): Promise<number> {
  let o: {
    tokenFile?: string;
    identity: string;
    hostKeys: string[];
    port: number;
    knownHosts?: string;
    user?: string;
    host: string;
  };
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      options: OPTIONS,
      allowPositionals: true,
      strict: true,
    });
    if (values.help) {
      io.stdout.write(ENROLL_USAGE);
      return 0;
    }
    if (positionals.length !== 1) throw new RevtunError("USAGE", "give exactly one [user@]host: the relay");
    const dest = positionals[0] ?? "";
    const at = dest.lastIndexOf("@");
    const port = values.port === undefined ? 22 : Number(values.port);
    if (!Number.isInteger(port) || port < 1 || port > 65535)
      throw new RevtunError("USAGE", `bad port ${JSON.stringify(values.port)}: expected 1-65535`);
    let knownHosts: string | undefined;
    for (const opt of values.option ?? []) {
      const m = /^UserKnownHostsFile\s*[=\s]\s*(.+)$/i.exec(opt);
      if (!m?.[1])
        throw new RevtunError(
          "USAGE",
          `unsupported -o ${JSON.stringify(opt)}: enroll takes UserKnownHostsFile`,
        );
      knownHosts = m[1].replace(/^~(?=\/)/, homedir());
    }
    o = {
      ...(values["token-file"] !== undefined ? { tokenFile: values["token-file"] } : {}),
      identity: values.identity ?? join(homedir(), ".ssh", "revtun_ed25519"),
      hostKeys: values["host-key"] ?? [],
      port,
      ...(knownHosts !== undefined ? { knownHosts } : {}),
      ...(at > 0 ? { user: dest.slice(0, at) } : {}),
      host: dest.slice(at + 1),
    };
    if (o.host === "") throw new RevtunError("USAGE", "the relay's host is empty");
  } catch (err) {
    io.stderr.write(
      `revtun enroll: ${escapeControl((err as Error).message.split("\n")[0] ?? "")}\n${ENROLL_USAGE}`,
    );
    return 2;
  }
  try {
    const token = await readSecret(o.tokenFile, io.env.REVTUN_ENROLL_TOKEN);
    if (!token?.trim())
      throw new RevtunError("USAGE", "no token: give --token-file FILE or set REVTUN_ENROLL_TOKEN");
    const knownHostsFile = o.knownHosts ?? join(homedir(), ".ssh", "known_hosts");
    const r = await enroll({
      host: o.host,
      port: o.port,
      token,
      identityFile: o.identity,
      hostKeyFiles: o.hostKeys,
      knownHostsFile,
    });
    const lines = [
      `enrolled as ${r.name} at ${o.host} (relay host key ${r.relayFingerprint}, recorded in ${knownHostsFile})`,
      `${r.createdKey ? "made key" : "key"} ${o.identity}; certificate ${r.certificateFile}, valid until ${r.validBefore.toISOString()} (renewed while connected)`,
      ...r.hostCertificateFiles.map(
        (f) => `host certificate ${f}: add "HostCertificate ${f}" to sshd_config`,
      ),
      "run the tunnel with:",
      `  revtun -N -i ${sh(o.identity)}${o.port !== 22 ? ` -p ${o.port}` : ""}${o.knownHosts ? ` -o UserKnownHostsFile=${sh(o.knownHosts)}` : ""} -R ${r.name}:22:localhost:22 ${sh(o.user ? `${o.user}@${o.host}` : o.host)}`,
    ];
    io.stdout.write(`${lines.join("\n")}\n`);
    return 0;
  } catch (err) {
    io.stderr.write(`revtun enroll: ${(err as Error).message}\n`);
    return exitCodeFor(err);
  }
}
