import { RevtunError } from "../errors.js";
import type { CliArgs } from "./args.js";
import type { Io } from "./main.js";

export async function runTunnelsFile(args: CliArgs, _io: Io): Promise<number> {
  throw new RevtunError("USAGE", `--config ${args.tunnelsFile}: not supported yet`);
}
