/** Test-only entry: runs `revtun relay` in its own process (signals, stdout) until bin/revtun wires it. */
import { relayCommand } from "../../src/cli/relay-command.js";

relayCommand(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr }).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`run-relay: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exitCode = 70;
  },
);
