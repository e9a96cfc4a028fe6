/**
 * Device records in the relay's state directory (`--state-dir DIR`, shared
 * with enrollment, which keeps `tokens/`, `used/` and `devices/` there):
 * one file of the inventory's own, `DIR/inventory.json`, rewritten whole and
 * atomically (temporary file, fsync, rename, fsync of the directory) so a
 * crash leaves the old file or the new one, never half of either.
 *
 * Writes are coalesced to at most one per WRITE_EVERY_MS: at 1,000
 * forwarded connections a second every byte count changes all the time, and
 * one rewrite a second of a 10,000-device file (about 5 MB) is what the
 * disk is asked for at worst. A crash loses at most that last second of
 * counts; a session's arrival or departure is written within it too.
 */
import { mkdir, open, readFile, rename } from "node:fs/promises";
import { join } from "node:path";
import { RevtunError } from "../../shared/errors.js";
import { type DeviceRecord, parseDeviceRecord } from "./device-record.js";
import type { DeviceStore, HistorySample } from "./store.js";

export const INVENTORY_FILE = "inventory.json";
const WRITE_EVERY_MS = 1_000;
const HISTORY_MINUTES = 24 * 60;

interface FileBody {
  v: 1;
  devices: DeviceRecord[];
  history: HistorySample[];
}

export class FileDeviceStore implements DeviceStore {
  private readonly records = new Map<string, DeviceRecord>();
  private history: HistorySample[] = [];
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();
  private dirty = false;
  /** The last write's failure, once per run of failures (the inventory reports it). */
  lastError: string | undefined;

  constructor(readonly dir: string) {}

  get file(): string {
    return join(this.dir, INVENTORY_FILE);
  }

  async load(): Promise<{ records: DeviceRecord[]; history: HistorySample[] }> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 }).catch((err: Error) => {
      throw new RevtunError("CONFIG", `cannot create the state directory ${this.dir}: ${err.message}`);
    });
    let text: string;
    try {
      text = await readFile(this.file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return { records: [], history: [] };
      throw new RevtunError("CONFIG", `cannot read ${this.file}: ${(err as Error).message}`);
    }
    let body: Partial<FileBody>;
    try {
      body = JSON.parse(text) as Partial<FileBody>;
    } catch (err) {
      throw new RevtunError(
        "CONFIG",
        `${this.file} is not JSON (${(err as Error).message}): move it away to start an empty inventory`,
      );
    }
    for (const d of Array.isArray(body.devices) ? body.devices : []) {
      const r = parseDeviceRecord(d);
      if (r) this.records.set(r.id, r);
    }
    this.history = (Array.isArray(body.history) ? body.history : []).filter(
      (h): h is HistorySample =>
        Array.isArray(h) && h.length === 2 && h.every((n) => Number.isInteger(n) && n >= 0),
    );
    return { records: [...this.records.values()], history: [...this.history] };
  }

  async save(records: DeviceRecord[]): Promise<boolean> {
    for (const r of records) this.records.set(r.id, structuredClone(r));
    this.schedule();
    return true;
  }

  async remove(ids: string[]): Promise<void> {
    for (const id of ids) this.records.delete(id);
    this.schedule();
  }

  async saveHistory(sample: HistorySample): Promise<void> {
    const last = this.history.at(-1);
    if (last && last[0] === sample[0]) last[1] = sample[1];
    else this.history.push(sample);
    const oldest = sample[0] - HISTORY_MINUTES;
    while ((this.history[0]?.[0] ?? oldest) < oldest) this.history.shift();
    this.schedule();
  }

  async close(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.dirty) await this.flush();
    await this.writing;
  }

  private schedule(): void {
    this.dirty = true;
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, WRITE_EVERY_MS);
    this.timer.unref();
  }

  private flush(): Promise<void> {
    this.dirty = false;
    const body: FileBody = { v: 1, devices: [...this.records.values()], history: this.history };
    const text = `${JSON.stringify(body)}\n`;
    this.writing = this.writing.then(() =>
      writeAtomically(this.dir, INVENTORY_FILE, text).then(
        () => {
          this.lastError = undefined;
        },
        (err: Error) => {
          this.lastError = `cannot write ${this.file}: ${err.message}`;
          // Retried with the next change, or at close.
          this.dirty = true;
        },
      ),
    );
    return this.writing;
  }
}

/** Temporary file in the same directory, fsync, rename over, fsync the directory: all or nothing. */
export async function writeAtomically(dir: string, name: string, text: string): Promise<void> {
  const tmp = join(dir, `.${name}.${process.pid}.tmp`);
  const fh = await open(tmp, "w", 0o600);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, join(dir, name));
  const d = await open(dir, "r");
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}
