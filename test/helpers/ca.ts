/**
 * Certificates made by a real `ssh-keygen -s`, for tests on both halves:
 * a CA of any key type, user and host keys, and certificates with the
 * flags ssh-keygen takes (-I, -n, -z, -V, -h, -O).
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export type KeyKind = "ed25519" | "ecdsa256" | "ecdsa384" | "ecdsa521" | "rsa";

function typeArgs(kind: KeyKind): string[] {
  if (kind === "rsa") return ["-t", "rsa", "-b", "2048"];
  if (kind.startsWith("ecdsa")) return ["-t", "ecdsa", "-b", kind.slice(5)];
  return ["-t", "ed25519"];
}

export interface SignOptions {
  id?: string;
  principals?: string[];
  serial?: number | bigint;
  /** ssh-keygen -V, e.g. "-5m:+1h", "20200101:20200102". */
  validity?: string;
  host?: boolean;
  /** ssh-keygen -O values: "clear", "source-address=...", "critical:x=y", "extension:...". */
  options?: string[];
  /** ssh-keygen -t for an RSA CA: rsa-sha2-512 (default), rsa-sha2-256, ssh-rsa. */
  signatureAlgorithm?: string;
}

export class TestCa {
  readonly dir: string;
  private n = 0;

  constructor(prefix = "revtun-ca-") {
    this.dir = mkdtempSync(join(tmpdir(), prefix));
  }

  /** A new key pair; returns the private key path (public beside it, `.pub`). */
  key(kind: KeyKind = "ed25519", name = `key${++this.n}`): string {
    const file = join(this.dir, name);
    execFileSync("ssh-keygen", ["-q", ...typeArgs(kind), "-N", "", "-C", name, "-f", file]);
    return file;
  }

  /** Signs `keyFile`.pub with the CA `caFile`; returns the certificate path (`keyFile-cert.pub`). */
  sign(caFile: string, keyFile: string, o: SignOptions = {}): string {
    const args = ["-q", "-s", caFile, "-I", o.id ?? "test-cert"];
    if (o.principals?.length) args.push("-n", o.principals.join(","));
    if (o.serial !== undefined) args.push("-z", String(o.serial));
    if (o.validity) args.push("-V", o.validity);
    if (o.host) args.push("-h");
    if (o.signatureAlgorithm) args.push("-t", o.signatureAlgorithm);
    for (const opt of o.options ?? []) args.push("-O", opt);
    execFileSync("ssh-keygen", [...args, `${keyFile}.pub`]);
    return `${keyFile}-cert.pub`;
  }

  /** Runs ssh-keygen with `args` in the CA's directory (for -k, say). */
  keygen(args: string[], input?: string): string {
    return execFileSync("ssh-keygen", args, { cwd: this.dir, encoding: "utf8", ...(input ? { input } : {}) });
  }

  close(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The wire blob of a one-line public key or certificate file. */
export function blobOf(file: string): Buffer {
  return Buffer.from(readFileSync(file, "utf8").trim().split(/\s+/)[1] ?? "", "base64");
}

/** The text of a public key or certificate file, trimmed. */
export function lineOf(file: string): string {
  return readFileSync(file, "utf8").trim();
}
