/**
 * A bench/peer.ts child (the local service or the remote client), driven over
 * IPC: `request()` sends one job and resolves with its reply. Shared by the
 * loopback bench (run.ts) and the WAN bench (wan.ts).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ClientReady, PeerReply, PeerRequest, ServiceReady } from "./peer.js";

const HERE = dirname(fileURLToPath(import.meta.url));

export class PeerProcess {
  private nextId = 1;
  private readonly pending = new Map<number, (r: PeerReply) => void>();
  readonly proc: ChildProcess;
  readonly ready: Promise<ServiceReady | ClientReady>;

  /** `live` is the caller's set of everything started, so that any exit stops it by pid. */
  constructor(
    role: "service" | "client",
    bytes: number,
    private readonly live: Set<{ stop(): Promise<void> | void }>,
  ) {
    this.proc = spawn(process.execPath, ["--import", "tsx", join(HERE, "peer.ts"), role, String(bytes)], {
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    this.ready = new Promise((resolve, reject) => {
      this.proc.once("exit", (code) => reject(new Error(`${role} peer exited ${code}`)));
      this.proc.on("message", (m: PeerReply | ServiceReady | ClientReady) => {
        if (m.type === "ready") resolve(m);
        else this.pending.get(m.id)?.(m);
      });
    });
    live.add(this);
  }

  request(req: Omit<PeerRequest, "id">): Promise<PeerReply> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.pending.set(id, (r) => {
        this.pending.delete(id);
        resolve(r);
      });
      this.proc.send({ ...req, id });
    });
  }

  /** SIGTERM, and resolves once the process has exited. */
  async stop(): Promise<void> {
    this.live.delete(this);
    const p = this.proc;
    if (p.exitCode !== null || p.signalCode !== null || !p.pid) return;
    const exited = new Promise<void>((r) => p.once("exit", () => r()));
    process.kill(p.pid, "SIGTERM");
    await exited;
  }
}
