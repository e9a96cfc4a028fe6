/**
 * Authentication: which methods to offer, in ssh's order (agent and keys,
 * then keyboard-interactive, then password) or PreferredAuthentications',
 * and what to say when all of them are refused.
 */
import type { AnyAuthMethod, AuthenticationType, NextAuthHandler } from "ssh2";
import { RevtunError } from "../shared/errors.js";
import type { Identity } from "./identities.js";
import { AUTH_METHODS, type AuthMethod } from "./options.js";

export interface AuthOptions {
  username: string;
  /** Only use the identity files, not every key the agent offers (IdentitiesOnly). */
  identitiesOnly?: boolean;
  /** Path of an ssh-agent socket (SSH_AUTH_SOCK or IdentityAgent). */
  agent?: string | undefined;
  password?: string | undefined;
  /** Methods to offer, in order; defaults to ssh's. */
  methods?: readonly AuthMethod[];
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
    const order = opts.methods ?? AUTH_METHODS;
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

  /** Why nothing was offered: the hint "use -i" is wrong when the options switched keys off. */
  private nothingWhy(): string {
    const methods = this.opts.methods ?? AUTH_METHODS;
    if (methods.includes("publickey")) return "no identity found; use -i";
    if (methods.some((m) => m === "password" || m === "keyboard-interactive")) {
      return this.opts.password === undefined
        ? "publickey is off and no password given: set REVTUN_PASSWORD or --password-file"
        : "the server accepts none of the methods the options allow";
    }
    return "PreferredAuthentications and the *Authentication=no options leave no method revtun can use";
  }

  /** The one line a user sees when the server refused everything. */
  failure(target: string): RevtunError {
    const offered = this.tried.length ? this.tried.join(", ") : `nothing (${this.nothingWhy()})`;
    const server = this.serverMethods.length ? ` (server allows: ${this.serverMethods.join(",")})` : "";
    const pw = this.tried.some((t) => t === "password" || t === "keyboard-interactive")
      ? "; the password may be wrong"
      : "";
    return new RevtunError("AUTH", `permission denied for ${target}${server}; tried ${offered}${pw}`);
  }
}
