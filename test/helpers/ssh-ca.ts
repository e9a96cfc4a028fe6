/**
 * An OpenSSH certificate authority for tests: real `ssh-keygen -s`, in a
 * directory of its own. Keys and certificates it makes are files beside it,
 * named as ssh names them (`id_ed25519`, `id_ed25519-cert.pub`).
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { keygen } from "./sshd.js";

export interface SignOptions {
  /** -n: principals, comma-joined. */
  principals: string[];
  /** -V, e.g. "-5m:+1h" (the default) or "20200101:20200102". */
  validity?: string;
  /** -I */
  id?: string;
  /** -z */
  serial?: number;
  /** -O options, e.g. ["clear"]. */
  options?: string[];
}

export class SshCa {
  readonly key: string;
  readonly pub: string;

  constructor(
    readonly dir: string,
    readonly name = "ca",
    type = "ed25519",
  ) {
    this.key = join(dir, name);
    this.pub = keygen(this.key, type);
  }

  /** A new key pair `dir/file` of `type`; returns the private key's path. */
  static newKey(dir: string, file: string, type = "ed25519"): string {
    const path = join(dir, file);
    keygen(path, type);
    return path;
  }

  /** Signs `keyPath.pub` into `keyPath-cert.pub` and returns that path. */
  sign(keyPath: string, o: SignOptions & { host?: boolean }): string {
    execFileSync("ssh-keygen", [
      "-q",
      "-s",
      this.key,
      "-I",
      o.id ?? `${this.name}-signed`,
      ...(o.host ? ["-h"] : []),
      "-n",
      o.principals.join(","),
      "-V",
      o.validity ?? "-5m:+1h",
      ...(o.serial !== undefined ? ["-z", String(o.serial)] : []),
      ...(o.options ?? []).flatMap((x) => ["-O", x]),
      `${keyPath}.pub`,
    ]);
    return `${keyPath}-cert.pub`;
  }

  /** The certificate's wire blob, from its `-cert.pub` file. */
  static blob(certFile: string): Buffer {
    return Buffer.from(readFileSync(certFile, "utf8").trim().split(/\s+/)[1] ?? "", "base64");
  }

  /** A known_hosts line trusting this CA for `hosts` (a pattern list). */
  knownHostsLine(hosts = "*"): string {
    return `@cert-authority ${hosts} ${this.pub}\n`;
  }
}
