/**
 * Many tunnels in one process, reconfigured in place: applying a new
 * configuration keeps the tunnels whose definition did not change (with
 * their sessions and open connections), rebuilds the changed ones and closes
 * the removed ones gracefully.
 */
import { EventEmitter } from "node:events";
import type { Tunnel } from "./tunnel.js";

export interface TunnelSetEvents {
  /** A tunnel was built and is about to start: attach listeners now. */
  added: [{ name: string; tunnel: Tunnel }];
  removed: [{ name: string; tunnel: Tunnel }];
  /** A tunnel stopped on its own (a permanent error such as a host key mismatch). */
  stopped: [{ name: string; error: Error | undefined }];
}

export interface ApplyResult {
  added: string[];
  changed: string[];
  removed: string[];
  unchanged: string[];
}

/** What the set needs of a tunnel's definition: a unique name, and a text that changes when it does. */
export interface TunnelDefinition {
  name: string;
  fingerprint: string;
}

interface Entry<D> {
  def: D;
  tunnel: Tunnel;
}

export class TunnelSet<D extends TunnelDefinition = TunnelDefinition> extends EventEmitter<TunnelSetEvents> {
  private readonly entries = new Map<string, Entry<D>>();

  /** `build` turns a definition into a tunnel that is not started yet. */
  constructor(private readonly build: (def: D) => Promise<Tunnel>) {
    super();
  }

  get size(): number {
    return this.entries.size;
  }

  tunnels(): [string, Tunnel][] {
    return [...this.entries].map(([name, e]) => [name, e.tunnel]);
  }

  /**
   * Builds every new or changed tunnel before touching the running ones, so a
   * definition that cannot be built leaves the set as it was.
   */
  async apply(config: { tunnels: D[] }, graceMs: number): Promise<ApplyResult> {
    const result: ApplyResult = { added: [], changed: [], removed: [], unchanged: [] };
    const wanted = new Map(config.tunnels.map((d) => [d.name, d]));
    const built = new Map<string, Tunnel>();
    for (const def of config.tunnels) {
      const old = this.entries.get(def.name);
      if (old && old.def.fingerprint === def.fingerprint) continue;
      try {
        built.set(def.name, await this.build(def));
      } catch (err) {
        // Nothing was started, but each built Tunnel is closed so its `done` settles.
        await Promise.all([...built.values()].map((t) => t.close(0)));
        throw err;
      }
    }
    const closing: Promise<void>[] = [];
    for (const [name, entry] of this.entries) {
      const def = wanted.get(name);
      if (!def) {
        result.removed.push(name);
        this.entries.delete(name);
        this.emit("removed", { name, tunnel: entry.tunnel });
        closing.push(entry.tunnel.close(graceMs));
      } else if (built.has(name)) {
        result.changed.push(name);
        this.entries.delete(name);
        this.emit("removed", { name, tunnel: entry.tunnel });
        // The old session must release its ports before the new one asks for them.
        closing.push(entry.tunnel.close(graceMs));
      } else {
        result.unchanged.push(name);
      }
    }
    await Promise.all(closing);
    for (const [name, tunnel] of built) {
      if (!result.changed.includes(name)) result.added.push(name);
      const def = wanted.get(name) as D;
      this.entries.set(name, { def, tunnel });
      this.emit("added", { name, tunnel });
      tunnel.done.then((error) => {
        if (this.entries.get(name)?.tunnel === tunnel) this.emit("stopped", { name, error });
      });
      await tunnel.start();
    }
    return result;
  }

  async close(graceMs: number): Promise<void> {
    const all = [...this.entries.values()];
    this.entries.clear();
    await Promise.all(all.map((e) => e.tunnel.close(graceMs)));
  }
}
