/**
 * ssh_config: reads ~/.ssh/config (or -F file) and fills in what the command
 * line left unset, with OpenSSH's first-value-wins precedence.
 *
 * The `ssh-config` package tokenizes (quoting, `=` separators, comments,
 * Host/Match sections); the evaluation is written here on purpose, following
 * ssh's readconf.c, because the package's `compute()` differs from ssh where
 * it matters: `?` matches zero or one character, Include is not followed,
 * `Match exec` runs shell commands by default, and HostName/User are only
 * recognised in one spelling. %-tokens are ./tokens.ts.
 */
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { isAbsolute, join } from "node:path";
import { type Line, LineType, parse } from "ssh-config";
import { glob } from "tinyglobby";
import { expandTilde } from "../shared/address.js";
import { escapeControl } from "../shared/bounded-text.js";
import { RevtunError } from "../shared/errors.js";
import { matchPatternList, matchPatterns } from "../shared/patterns.js";
import { type SetResult, type SshOptions, setOption } from "./directives.js";
import { expandHostName, expandTokens } from "./tokens.js";

export interface SshConfigContext {
  host: string;
  /** -F: a file, "none" for none, undefined for ~/.ssh/config. */
  file?: string | undefined;
  user?: string;
  localUser: string;
  home?: string;
  /**
   * System-wide file read after the user's (ssh reads /etc/ssh/ssh_config).
   * Not read unless given, so a library caller's result does not depend on the machine.
   * Ignored with -F, as in ssh.
   */
  systemFile?: string | undefined;
}

export interface AppliedConfig {
  /** Directives present for this host that revtun has no use for. */
  ignored: string[];
  /** Files actually read, in order (the config file and its Includes). */
  files: string[];
  /** Parts of the files that were skipped, for a debug line each (e.g. `Match exec`). */
  notes: string[];
}

/** OpenSSH's READCONF_MAX_DEPTH: an Include loop fails instead of recursing forever. */
const MAX_INCLUDE_DEPTH = 16;

type DirectiveValue = Extract<Line, { param: string }>["value"];

interface Pass {
  /** What `Host` patterns are matched against: the host as typed, or HostName in the final pass. */
  host: string;
  final: boolean;
}

/** One parsed line with where it came from, for error messages. */
interface Located {
  param: string;
  value: DirectiveValue;
  file: string;
  line: number;
}

interface Block {
  header: Located | undefined;
  lines: Located[];
}

export async function applySshConfig(opts: SshOptions, ctx: SshConfigContext): Promise<AppliedConfig> {
  const home = ctx.home ?? homedir();
  const result: AppliedConfig = { ignored: [], files: [], notes: [] };
  const sources: { file: string; relativeTo: string; explicit: boolean }[] = [];
  if (ctx.file === undefined) {
    sources.push({ file: join(home, ".ssh", "config"), relativeTo: join(home, ".ssh"), explicit: false });
    if (ctx.systemFile !== undefined) {
      sources.push({ file: ctx.systemFile, relativeTo: "/etc/ssh", explicit: false });
    }
  } else if (ctx.file.toLowerCase() !== "none") {
    // ssh resolves Includes of a -F file against ~/.ssh too (it is read as a user config).
    sources.push({ file: ctx.file, relativeTo: join(home, ".ssh"), explicit: true });
  }

  const evaluator = new Evaluator(opts, ctx, home, result);
  for (const s of sources) {
    const text = await readConfigText(s.file, s.explicit);
    if (text !== undefined) evaluator.addFile(s.file, text, s.relativeTo);
  }
  await evaluator.run({ host: ctx.host, final: false });
  if (evaluator.wantFinal) {
    // `Match final`: ssh parses everything again with the host name it settled on.
    // ssh has lowercased the host name by then.
    await evaluator.run({ host: expandHostName(opts.hostName, ctx.host).toLowerCase(), final: true });
  }
  try {
    expandTokens(opts, ctx, home);
  } catch (err) {
    // Tokens are expanded once every source is in, so the value may come from
    // the command line or any file read: name them all.
    if (!(err instanceof RevtunError)) throw err;
    const from = result.files.length ? `the command line and ${result.files.join(", ")}` : "the command line";
    throw new RevtunError(err.code, `${err.message} (in options from ${from})`, { cause: err });
  }
  return result;
}

async function readConfigText(file: string, explicit: boolean): Promise<string | undefined> {
  try {
    return await readFile(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (!explicit && (code === "ENOENT" || code === "ENOTDIR")) return undefined;
    const why = code === "ENOENT" ? "no such file" : (err as Error).message;
    throw new RevtunError(
      "CONFIG",
      explicit
        ? `cannot read ssh config file ${file} (given with -F): ${why}`
        : `cannot read ssh config file ${file}: ${why}`,
      { cause: err },
    );
  }
}

/** Parses a file into its top-level lines and Host/Match blocks, with line numbers. */
function parseFile(file: string, text: string): Block[] {
  let parsed: Line[];
  try {
    parsed = parse(text);
  } catch (err) {
    throw new RevtunError(
      "CONFIG",
      `cannot parse ssh config file ${file}: ${escapeControl((err as Error).message)}`,
    );
  }
  const blocks: Block[] = [{ header: undefined, lines: [] }];
  let lineNo = 1;
  const newlines = (s: string) => s.split("\n").length - 1;
  const visit = (node: Line, inSection: boolean) => {
    const at = lineNo + newlines(node.before);
    lineNo = at + newlines(node.after);
    if (node.type !== LineType.DIRECTIVE || node.param === "") return;
    const located: Located = { param: node.param, value: node.value, file, line: at };
    if (!inSection && "config" in node) {
      blocks.push({ header: located, lines: [] });
      for (const child of node.config) visit(child, true);
      return;
    }
    blocks[blocks.length - 1]?.lines.push(located);
  };
  for (const node of parsed) visit(node, false);
  return blocks;
}

function words(value: DirectiveValue): string[] {
  return typeof value === "string" ? [value] : value.map((v) => v.val);
}

class Evaluator {
  wantFinal = false;
  private readonly roots: { file: string; blocks: Block[]; relativeTo: string }[] = [];
  private readonly ignored = new Set<string>();
  private readonly noted = new Set<string>();
  private readonly parsedIncludes = new Map<string, Block[] | null>();

  constructor(
    private readonly opts: SshOptions,
    private readonly ctx: SshConfigContext,
    private readonly home: string,
    private readonly result: AppliedConfig,
  ) {}

  addFile(file: string, text: string, relativeTo: string): void {
    this.roots.push({ file, blocks: parseFile(file, text), relativeTo });
    this.result.files.push(file);
  }

  async run(pass: Pass): Promise<void> {
    for (const root of this.roots) await this.processBlocks(root.blocks, true, pass, root.relativeTo, 0);
  }

  /**
   * Lines before the first Host/Match inherit `active` (true for a top-level
   * file, the including block's state for an Include); each Host/Match line
   * then decides for the lines under it, to the end of this file only.
   */
  private async processBlocks(
    blocks: Block[],
    active: boolean,
    pass: Pass,
    relativeTo: string,
    depth: number,
  ): Promise<void> {
    for (const block of blocks) {
      const on = block.header === undefined ? active : this.matches(block.header, pass);
      if (!on) continue;
      for (const line of block.lines) await this.apply(line, pass, relativeTo, depth);
    }
  }

  private matches(header: Located, pass: Pass): boolean {
    return header.param.toLowerCase() === "host"
      ? matchPatterns(pass.host, words(header.value))
      : this.matchMatchLine(header, pass);
  }

  private async apply(line: Located, pass: Pass, relativeTo: string, depth: number): Promise<void> {
    const lname = line.param.toLowerCase();
    if (lname === "include") {
      await this.include(line, pass, relativeTo, depth);
      return;
    }
    const args = words(line.value);
    let outcome: SetResult;
    try {
      outcome = setOption(this.opts, line.param, args.join(" "));
    } catch (err) {
      throw new RevtunError("CONFIG", `${line.file} line ${line.line}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    // Quoted paths may hold spaces, which setOption's whitespace split would cut.
    if (lname === "userknownhostsfile" && outcome === "set") this.opts.userKnownHostsFile = args;
    if (outcome === "unsupported" && !this.ignored.has(lname)) {
      this.ignored.add(lname);
      this.result.ignored.push(line.param);
    }
  }

  private async include(line: Located, pass: Pass, relativeTo: string, depth: number): Promise<void> {
    if (depth + 1 > MAX_INCLUDE_DEPTH) {
      throw new RevtunError(
        "CONFIG",
        `${line.file} line ${line.line}: Include nested more than ${MAX_INCLUDE_DEPTH} deep (an Include loop?)`,
      );
    }
    for (const arg of words(line.value)) {
      const expanded = expandTilde(arg, this.home);
      const pattern = isAbsolute(expanded) ? expanded : join(relativeTo, expanded);
      for (const file of await globFiles(pattern)) {
        const blocks = await this.parseInclude(file);
        // Host lines inside an included file act only until its end: the including block resumes after.
        if (blocks) await this.processBlocks(blocks, true, pass, relativeTo, depth + 1);
      }
    }
  }

  private async parseInclude(file: string): Promise<Block[] | null> {
    const cached = this.parsedIncludes.get(file);
    if (cached !== undefined) return cached;
    let blocks: Block[] | null = null;
    try {
      blocks = parseFile(file, await readFile(file, "utf8"));
      this.result.files.push(file);
    } catch (err) {
      if (err instanceof RevtunError) throw err;
      // As ssh: an Include that names nothing readable adds nothing.
      this.note(`Include ${file} not read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    this.parsedIncludes.set(file, blocks);
    return blocks;
  }

  /** ssh's match_cfg_line, for the criteria that mean something without running commands. */
  private matchMatchLine(header: Located, pass: Pass): boolean {
    const args = words(header.value);
    const where = `${header.file} line ${header.line}`;
    if (args.length === 0) throw new RevtunError("CONFIG", `${where}: Match needs criteria`);
    let result = true;
    for (let i = 0; i < args.length; i++) {
      const word = args[i] ?? "";
      const negated = word.startsWith("!");
      const name = (negated ? word.slice(1) : word).toLowerCase();
      if (name === "all") continue;
      if (name === "canonical" || name === "final") {
        if (name === "final" && !pass.final) this.wantFinal = true;
        if (pass.final === negated) result = false;
        continue;
      }
      const arg = args[++i];
      if (arg === undefined) throw new RevtunError("CONFIG", `${where}: Match ${name} needs a value`);
      let hit: boolean;
      switch (name) {
        case "host":
          hit = matchPatternList(expandHostName(this.opts.hostName, this.ctx.host).toLowerCase(), arg, true);
          break;
        case "originalhost":
          hit = matchPatternList(this.ctx.host.toLowerCase(), arg, true);
          break;
        case "user":
          hit = matchPatternList(this.opts.user ?? this.ctx.user ?? this.ctx.localUser, arg, false);
          break;
        case "localuser":
          hit = matchPatternList(this.ctx.localUser, arg, false);
          break;
        case "exec":
          // A tunnel agent runs unattended; executing commands from a config file is not its call.
          this.note(`${where}: Match exec is not run by revtun; the block is skipped`);
          return false;
        default:
          this.note(`${where}: Match ${name} is not supported by revtun; the block is skipped`);
          return false;
      }
      if (hit === negated) result = false;
    }
    return result;
  }

  private note(text: string): void {
    if (this.noted.has(text)) return;
    this.noted.add(text);
    this.result.notes.push(text);
  }
}

/**
 * glob(3) for Include, through tinyglobby: wildcards in any path segment,
 * no dotfiles unless the pattern names them, sorted results. A path without
 * wildcards is returned as it is, so a missing file gets its debug note.
 */
async function globFiles(pattern: string): Promise<string[]> {
  if (!/[*?[]/.test(pattern)) return [pattern];
  const found = await glob([pattern], {
    absolute: true,
    dot: false,
    onlyFiles: true,
    expandDirectories: false,
  });
  return found.sort();
}
