/**
 * A real OpenSSH sshd for tests: ephemeral port on loopback, generated host
 * and user keys, its own config file, stopped by pid.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";

export const SSHD = "/usr/sbin/sshd";

export function keygen(file: string, type = "ed25519", passphrase = ""): string {
  execFileSync("ssh-keygen", ["-q", "-t", type, "-N", passphrase, "-C", "revtun-test", "-f", file]);
  return readFileSync(`${file}.pub`, "utf8").trim();
}

export function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, host, () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

export interface SshdOptions {
  /** Extra sshd_config lines. */
  config?: string[];
  /**
   * sshd_config lines placed before the defaults. sshd keeps the first value
   * of a keyword, so these replace defaults (e.g. UsePAM yes) where `config` cannot.
   */
  first?: string[];
  hostKeyTypes?: string[];
  /**
   * Called once the keys exist, before sshd starts; returns more sshd_config
   * lines, e.g. HostCertificate for a certificate of one of `hostKeys`.
   */
  prepare?: (sshd: Sshd) => string[];
}

export class Sshd {
  readonly dir: string;
  readonly user = userInfo().username;
  readonly userKey: string;
  readonly hostKeys: string[];
  readonly knownHosts: string;
  port = 0;
  log = "";
  private proc: ChildProcess | undefined;
  private readonly configFile: string;
  private prepared: string[] = [];

  private constructor(readonly opts: SshdOptions) {
    this.dir = mkdtempSync(join(tmpdir(), "revtun-sshd-"));
    this.hostKeys = (opts.hostKeyTypes ?? ["ed25519"]).map((t) => {
      keygen(join(this.dir, `host_${t}`), t);
      return join(this.dir, `host_${t}`);
    });
    this.userKey = join(this.dir, "id_ed25519");
    const pub = keygen(this.userKey);
    writeFileSync(join(this.dir, "authorized_keys"), `${pub}\n`);
    this.knownHosts = join(this.dir, "known_hosts");
    this.configFile = join(this.dir, "sshd_config");
  }

  static async start(opts: SshdOptions = {}): Promise<Sshd> {
    const s = new Sshd(opts);
    s.port = await freePort();
    s.prepared = opts.prepare?.(s) ?? [];
    await s.launch();
    writeFileSync(s.knownHosts, s.knownHostsLines());
    return s;
  }

  /** ssh/revtun flags to log in here: port, key, known_hosts (each can be swapped). */
  clientArgs(o: { port?: number; key?: string; knownHosts?: string } = {}): string[] {
    return [
      "-p",
      String(o.port ?? this.port),
      "-i",
      o.key ?? this.userKey,
      "-o",
      `UserKnownHostsFile=${o.knownHosts ?? this.knownHosts}`,
    ];
  }

  /** Library options to log in here with strict host key checking. */
  tunnelLogin() {
    return {
      host: "127.0.0.1",
      port: this.port,
      username: this.user,
      identityFiles: [this.userKey],
      knownHostsFiles: [this.knownHosts],
      strictHostKeyChecking: "yes" as const,
    };
  }

  /** known_hosts lines for this server, `[127.0.0.1]:port type key`. */
  knownHostsLines(host = "127.0.0.1"): string {
    return this.hostKeys
      .map((k) => {
        const [type, key] = readFileSync(`${k}.pub`, "utf8").trim().split(/\s+/);
        return `[${host}]:${this.port} ${type} ${key}\n`;
      })
      .join("");
  }

  hostKeyPub(i = 0): string {
    return readFileSync(`${this.hostKeys[i]}.pub`, "utf8").trim();
  }

  /** SHA256 fingerprint of host key i, as `ssh-keygen -lf` prints it. */
  fingerprint(i = 0): string {
    const out = execFileSync("ssh-keygen", ["-lf", `${this.hostKeys[i]}.pub`], { encoding: "utf8" });
    return out.split(/\s+/)[1] ?? "";
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  private writeConfig(): void {
    const lines = [
      ...(this.opts.first ?? []),
      `Port ${this.port}`,
      "ListenAddress 127.0.0.1",
      "ListenAddress ::1",
      ...this.hostKeys.map((k) => `HostKey ${k}`),
      `AuthorizedKeysFile ${join(this.dir, "authorized_keys")}`,
      "PidFile none",
      "StrictModes no",
      "UsePAM no",
      "PermitRootLogin prohibit-password",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "AllowTcpForwarding yes",
      "AllowStreamLocalForwarding yes",
      "GatewayPorts clientspecified",
      "MaxStartups 200:30:400",
      "MaxSessions 50",
      "LogLevel VERBOSE",
      ...(this.opts.config ?? []),
      ...this.prepared,
    ];
    writeFileSync(this.configFile, `${lines.join("\n")}\n`);
  }

  private async launch(): Promise<void> {
    mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });
    this.writeConfig();
    const proc = spawn(SSHD, ["-D", "-e", "-f", this.configFile], { stdio: ["ignore", "ignore", "pipe"] });
    this.proc = proc;
    proc.stderr?.setEncoding("utf8");
    proc.stderr?.on("data", (d: string) => {
      this.log += d;
      if (this.log.length > 1_000_000) this.log = this.log.slice(-500_000);
    });
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`sshd exited ${proc.exitCode}: ${this.log}`);
      if (await sshBanner(this.port)) return;
      if (Date.now() > deadline) throw new Error(`sshd did not start: ${this.log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Stops sshd (and with it, by default, its sessions: sshd's children die with the listener's group only if we kill them). */
  async stop(): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once("exit", r));
    proc.kill("SIGTERM");
    await exited;
    this.proc = undefined;
  }

  /** Kills every session process sshd forked (its children), leaving the listener. */
  killSessions(): void {
    const pid = this.proc?.pid;
    if (!pid) return;
    try {
      execFileSync("pkill", ["-KILL", "-P", String(pid)]);
    } catch {
      // pkill exits 1 when nothing matched
    }
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.launch();
  }

  async start(): Promise<void> {
    await this.launch();
  }

  async close(): Promise<void> {
    this.killSessions();
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** True once something on 127.0.0.1:port greets with an SSH identification string. */
export function sshBanner(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: "127.0.0.1", port });
    const t = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, 1000);
    s.once("data", (d) => {
      clearTimeout(t);
      s.destroy();
      resolve(d.toString().startsWith("SSH-"));
    });
    s.once("error", () => {
      clearTimeout(t);
      resolve(false);
    });
  });
}

/** Pids of a process's children: for sshd, one per open connection, so tests can see sessions are not leaked. */
export function childPids(pid: number | undefined): number[] {
  if (!pid) return [];
  try {
    return execFileSync("pgrep", ["-P", String(pid)], { encoding: "utf8" })
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    // pgrep exits 1 when there are none
    return [];
  }
}
