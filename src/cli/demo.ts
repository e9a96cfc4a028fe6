import { RevtunError } from "../errors.js";
import type { Io } from "./main.js";

export async function demoCommand(_argv: string[], _io: Io): Promise<number> {
  throw new RevtunError("USAGE", "demo: not available yet");
}
