/**
 * ssh_config: reads ~/.ssh/config (or -F file) and fills in what the command
 * line left unset, with OpenSSH's first-value-wins precedence.
 */
import type { SshOptions } from "./options.js";

export interface SshConfigContext {
  host: string;
  /** -F: a file, "none" for none, undefined for ~/.ssh/config. */
  file?: string | undefined;
  user?: string;
  localUser: string;
  home?: string;
}

export interface AppliedConfig {
  /** Directives present for this host that revtun has no use for. */
  ignored: string[];
}

export async function applySshConfig(_opts: SshOptions, _ctx: SshConfigContext): Promise<AppliedConfig> {
  return { ignored: [] };
}
