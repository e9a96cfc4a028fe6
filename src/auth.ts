/**
 * Authentication: which identities and methods to offer, in ssh's order
 * (agent and keys, then keyboard-interactive, then password), and what to say
 * when all of them are refused.
 */
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import ssh2, { type AnyAuthMethod, type AuthenticationType, type NextAuthHandler } from "ssh2";
import { RevtunError } from "./errors.js";
import { fingerprintSha256 } from "./keys.js";

const { utils } = ssh2;

export interface AuthOptions {
  username: string;
  /** Identity files named by the user (-i, IdentityFile). Missing ones are an error. */
  identityFiles: string[];
  /** Only use the identity files, not every key the agent offers (IdentitiesOnly). */
  identitiesOnly?: boolean;
  /** Path of an ssh-agent socket (SSH_AUTH_SOCK or IdentityAgent). */
  agent?: string | undefined;
  passphrase?: string | undefined;
  password?: string | undefined;
  /** Methods to offer, in order; defaults to ssh's. */
  preferred?: AuthenticationType[];
  /** Home directory for the default identities (~/.ssh/id_*). */
  home?: string;
}

export interface Identity {
  file: string;
  key: ssh2.ParsedKey;
  /** For messages: "ssh-ed25519 SHA256:…". */
  label: string;
}

export const DEFAULT_IDENTITIES = ["id_ed25519", "id_ecdsa", "id_rsa"];

function expandHome(p: string, home: string): string {
  return p === "~" ? home : p.startsWith("~/") ? join(home, p.slice(2)) : p;
}

async function loadIdentity(file: string, passphrase: string | undefined, explicit: boolean) {
  let text: Buffer;
  try {
    text = await readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (!explicit && code === "ENOENT") return undefined;
    throw new RevtunError(
      "IDENTITY",
      code === "ENOENT"
        ? `identity file ${file} not found; check -i / IdentityFile`
        : `cannot read identity file ${file}: ${(err as Error).message}`,
    );
  }
  const parsed = utils.parseKey(text, passphrase);
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  if (!key || key instanceof Error) {
    const msg = key instanceof Error ? key.message : "no key found";
    if (/encrypted|passphrase|decrypt|bad decrypt/i.test(msg)) {
      throw new RevtunError(
        "IDENTITY",
        passphrase === undefined
          ? `identity file ${file} is encrypted; give its passphrase in REVTUN_PASSPHRASE or --passphrase-file`
          : `wrong passphrase for identity file ${file} (publickey)`,
      );
    }
    throw new RevtunError("IDENTITY", `identity file ${file} is not a private key revtun can read: ${msg}`);
  }
  if (!key.isPrivateKey()) {
    throw new RevtunError("IDENTITY", `identity file ${file} holds a public key; give the private key file`);
  }
  return { file, key, label: `${key.type} ${fingerprintSha256(key.getPublicSSH())}` } satisfies Identity;
}

/** Loads the identities to offer: the named ones, else ssh's defaults that exist. */
export async function loadIdentities(opts: AuthOptions): Promise<Identity[]> {
  const home = opts.home ?? homedir();
  const explicit = opts.identityFiles.length > 0;
  const files = explicit
    ? opts.identityFiles.map((f) => expandHome(f, home))
    : DEFAULT_IDENTITIES.map((f) => join(home, ".ssh", f));
  const out: Identity[] = [];
  for (const f of files) {
    const id = await loadIdentity(f, opts.passphrase, explicit);
    if (id) out.push(id);
  }
  return out;
}

/**
 * An ssh2 authHandler that walks the methods in order and remembers what it
 * tried, so a refusal can name the identities and methods offered.
 */
export class Authenticator {
  readonly tried: string[] = [];
  private queue: AnyAuthMethod[] = [];
  private serverMethods: string[] = [];

  constructor(
    private readonly opts: AuthOptions,
    identities: Identity[],
  ) {
    const u = opts.username;
    const order = opts.preferred ?? ["agent", "publickey", "keyboard-interactive", "password"];
    for (const method of order) {
      if (method === "agent" && opts.agent && !opts.identitiesOnly) {
        this.queue.push({ type: "agent", username: u, agent: opts.agent });
      } else if (method === "publickey") {
        for (const id of identities) this.queue.push({ type: "publickey", username: u, key: id.key });
      } else if (method === "keyboard-interactive" && opts.password !== undefined) {
        const password = opts.password;
        this.queue.push({
          type: "keyboard-interactive",
          username: u,
          // Answer every prompt with the password: the common PAM setup asks once.
          prompt: (_name, _instr, _lang, prompts, finish) => finish(prompts.map(() => password)),
        });
      } else if (method === "password" && opts.password !== undefined) {
        this.queue.push({ type: "password", username: u, password: opts.password });
      }
    }
    this.labels = new Map(identities.map((i) => [i.key, `${i.file} (${i.label})`]));
  }

  private readonly labels: Map<unknown, string>;

  readonly handler = (
    methodsLeft: AuthenticationType[] | null,
    _partial: boolean | null,
    next: NextAuthHandler,
  ) => {
    if (methodsLeft) this.serverMethods = methodsLeft;
    if (!methodsLeft) {
      // Ask with "none" first, as OpenSSH does: the refusal lists the methods
      // the server accepts, so nothing it never offered is tried or reported.
      next({ type: "none", username: this.opts.username });
      return;
    }
    for (;;) {
      const m = this.queue.shift();
      if (!m) {
        next(false as unknown as AnyAuthMethod);
        return;
      }
      // The server lists what it still accepts; skip what it would refuse anyway.
      const wire = m.type === "agent" ? "publickey" : m.type;
      if (methodsLeft && !methodsLeft.includes(wire as AuthenticationType)) continue;
      this.tried.push(
        m.type === "publickey"
          ? `key ${this.labels.get((m as { key: unknown }).key) ?? "?"}`
          : m.type === "agent"
            ? `agent ${this.opts.agent}`
            : m.type,
      );
      next(m);
      return;
    }
  };

  /** The one line a user sees when the server refused everything. */
  failure(target: string): RevtunError {
    const offered = this.tried.length ? this.tried.join(", ") : "nothing (no identity found; use -i)";
    const server = this.serverMethods.length ? ` (server allows: ${this.serverMethods.join(",")})` : "";
    const pw = this.tried.some((t) => t === "password" || t === "keyboard-interactive")
      ? "; the password may be wrong"
      : "";
    return new RevtunError("AUTH", `permission denied for ${target}${server}; tried ${offered}${pw}`);
  }
}
