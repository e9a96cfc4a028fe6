/**
 * The CLI's entry: picks the command and turns any error into its one line
 * and exit code. Each command is its own file and is loaded only when run.
 */
import { type CliArgs, parseArgs } from "./args.js";
import { HELP } from "./help.js";
import { exitCodeFor, type Io, processIo, version } from "./process.js";

export async function main(argv: string[], io: Io = processIo()): Promise<number> {
  const sub = argv[0];
  try {
    if (sub === "demo") {
      const { demoCommand } = await import("./demo-command.js");
      return await demoCommand(argv.slice(1), io);
    }
    if (sub === "enroll") {
      const { enrollCommand } = await import("./enroll-command.js");
      return await enrollCommand(argv.slice(1), io);
    }
    if (sub === "relay") {
      const { relayCommand } = await import("./relay-command.js");
      return await relayCommand(argv.slice(1), io);
    }
    const args: CliArgs = parseArgs(argv);
    if (args.help) {
      io.stdout.write(HELP);
      return 0;
    }
    if (args.version) {
      io.stdout.write(`revtun ${version()}\n`);
      return 0;
    }
    if (args.tunnelsFile !== undefined) {
      const { tunnelsFileCommand } = await import("./tunnels-file-command.js");
      return await tunnelsFileCommand(args, io);
    }
    const { agentCommand } = await import("./agent-command.js");
    return await agentCommand(args, io);
  } catch (err) {
    io.stderr.write(`revtun: ${err instanceof Error ? err.message : String(err)}\n`);
    return exitCodeFor(err);
  }
}
