/**
 * Command-line parsing with ssh's own syntax, so `ssh -N -R …` becomes
 * `revtun -N -R …`: bundled flags (-Nv), attached values (-p2222, -oX=y),
 * and revtun's own long options.
 *
 * Hand-written on purpose: node's util.parseArgs (used by `revtun relay`)
 * and the usual packages do not follow ssh's getopt rules — a value attached
 * to a bundle (`-NR8080:…`), `-o` repeated with first-value-wins, ssh's exact
 * set of flags that take a value — and a user's `ssh` line must mean the same.
 */

import { type ForwardSpec, parseRemoteForward } from "../agent/forward-spec.js";
import { applyDashO, type SshOptions } from "../config/directives.js";
import { quote } from "../shared/bounded-text.js";
import { RevtunError } from "../shared/errors.js";

export interface CliArgs {
  destination?: string | undefined;
  ssh: SshOptions;
  /** Options from -p / -l / -i / -c: they override ssh_config like ssh's own flags. */
  forwards: ForwardSpec[];
  verbose: number;
  quiet: boolean;
  configFile?: string | undefined; // -F
  jump?: string | undefined; // -J
  metrics?: string | undefined;
  logFormat: "text" | "json";
  graceSeconds: number;
  maxBackoffSeconds: number;
  tunnelsFile?: string | undefined; // --config (YAML)
  passphraseFile?: string | undefined;
  passwordFile?: string | undefined;
  help: boolean;
  version: boolean;
}

/** ssh flags that take a value; of these, revtun acts on p l i c o R F J. */
const WITH_VALUE = new Set([
  "p",
  "l",
  "i",
  "c",
  "o",
  "R",
  "F",
  "J",
  "L",
  "D",
  "b",
  "e",
  "E",
  "m",
  "O",
  "S",
  "w",
  "W",
  "B",
  "I",
  "P",
  "Q",
]);
/** ssh flags without a value that fit a forward-only session and are accepted. */
const ACCEPTED_BOOL = new Set(["N", "T", "n", "q", "v", "4", "6", "C", "x", "a", "k"]);
const LONG_WITH_VALUE = new Set([
  "metrics",
  "log-format",
  "grace",
  "max-backoff",
  "config",
  "passphrase-file",
  "password-file",
]);

function usage(msg: string): RevtunError {
  return new RevtunError("USAGE", `${msg} (see revtun --help)`);
}

function nonNegative(name: string, value: string): number {
  if (!/^\d+(\.\d+)?$/.test(value))
    throw usage(`bad --${name} ${quote(value)}: expected a number of seconds`);
  return Number(value);
}

export function parseArgs(argv: string[]): CliArgs {
  const out: CliArgs = {
    ssh: {},
    forwards: [],
    verbose: 0,
    quiet: false,
    logFormat: "text",
    graceSeconds: 10,
    maxBackoffSeconds: 30,
    help: false,
    version: false,
  };
  const positional: string[] = [];
  const flagValue = (flag: string, value: string) => {
    switch (flag) {
      case "p":
        if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > 65535) {
          throw usage(`bad port ${quote(value)} for -p: expected 1-65535`);
        }
        out.ssh.port = Number(value);
        return;
      case "l":
        out.ssh.user = value;
        return;
      case "i":
        out.ssh.identityFile = [...(out.ssh.identityFile ?? []), value];
        return;
      case "c":
        out.ssh.ciphers = value.split(",").filter(Boolean);
        return;
      case "o":
        applyDashO(out.ssh, value);
        return;
      case "R":
        out.forwards.push(parseRemoteForward(value));
        return;
      case "F":
        out.configFile = value;
        return;
      case "J":
        out.jump = value;
        return;
      default:
        throw usage(
          `-${flag} is an ssh option revtun does not support (revtun only keeps remote forwards up): ${quote(currentArg)}`,
        );
    }
  };
  let currentArg = "";
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? "";
    currentArg = arg;
    if (arg === "--") {
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
      if (name === "help") {
        out.help = true;
        continue;
      }
      if (name === "version") {
        out.version = true;
        continue;
      }
      if (!LONG_WITH_VALUE.has(name)) throw usage(`unknown option ${quote(`--${name}`)}`);
      const value = eq === -1 ? argv[++i] : arg.slice(eq + 1);
      if (value === undefined) throw usage(`--${name} needs a value`);
      switch (name) {
        case "metrics":
          out.metrics = value;
          break;
        case "log-format":
          if (value !== "text" && value !== "json")
            throw usage(`bad --log-format ${quote(value)}: expected text or json`);
          out.logFormat = value;
          break;
        case "grace":
          out.graceSeconds = nonNegative(name, value);
          break;
        case "max-backoff":
          out.maxBackoffSeconds = nonNegative(name, value);
          if (out.maxBackoffSeconds < 1) throw usage(`bad --max-backoff ${quote(value)}: at least 1 second`);
          break;
        case "config":
          out.tunnelsFile = value;
          break;
        case "passphrase-file":
          out.passphraseFile = value;
          break;
        case "password-file":
          out.passwordFile = value;
          break;
      }
      continue;
    }
    if (arg.startsWith("-") && arg.length > 1) {
      for (let j = 1; j < arg.length; j++) {
        const flag = arg[j] ?? "";
        if (flag === "h") {
          out.help = true;
          continue;
        }
        if (flag === "V") {
          out.version = true;
          continue;
        }
        if (WITH_VALUE.has(flag)) {
          const rest = arg.slice(j + 1);
          const value = rest !== "" ? rest : argv[++i];
          if (value === undefined) throw usage(`option -${flag} needs a value`);
          flagValue(flag, value);
          break;
        }
        if (ACCEPTED_BOOL.has(flag)) {
          if (flag === "v") out.verbose++;
          else if (flag === "q") out.quiet = true;
          else if (flag === "4") out.ssh.addressFamily ??= "inet";
          else if (flag === "6") out.ssh.addressFamily ??= "inet6";
          continue;
        }
        throw usage(`unknown option ${quote(`-${flag}`)} in ${quote(arg)}`);
      }
      continue;
    }
    positional.push(arg);
  }
  if (positional.length > 1) {
    throw usage(
      `unexpected ${positional.slice(1).map(quote).join(" ")} after the destination: revtun runs no remote command (use -N)`,
    );
  }
  out.destination = positional[0];
  return out;
}
