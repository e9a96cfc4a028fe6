/**
 * node's parseArgs for the relay commands' --long options, with its errors
 * made one line: node quotes the offending argument raw and explains over
 * several lines, so the arguments it quotes are escaped and the first line
 * kept, with the command line it came from.
 */
import { type ParseArgsConfig, parseArgs } from "node:util";
import { escapeControl, quote } from "../shared/bounded-text.js";
import { RevtunError } from "../shared/errors.js";

export type OptionValues = Record<string, string | boolean | (string | boolean)[] | undefined>;

export function parseLongOptions(
  argv: string[],
  options: NonNullable<ParseArgsConfig["options"]>,
): OptionValues {
  try {
    return parseArgs({ args: argv, options, allowPositionals: false, strict: true }).values;
  } catch (err) {
    let message = (err as Error).message;
    for (const a of argv) if (a !== escapeControl(a)) message = message.split(a).join(escapeControl(a));
    throw new RevtunError(
      "USAGE",
      `${escapeControl(message.split("\n")[0] ?? "")} (in ${quote(argv.join(" "))})`,
    );
  }
}
