/**
 * Enrollment state of one relay (`--state-dir DIR`, without `--fleet`):
 *
 *   DIR/tokens/<hash>.json   an unused token
 *   DIR/used/<hash>.json     a redeemed one (moved here by rename)
 *   DIR/devices/<name>.json  an enrolled device
 *
 * Every write is write-atomic.ts's (temporary file, fsync, rename, fsync of
 * the directory), so what the relay answered survives `kill -9`. Redeeming is
 * one rename(2) from tokens/ to used/: two racing redemptions (two
 * connections, two --workers processes) cannot both succeed, the loser gets
 * ENOENT. Other processes on the same directory (workers) learn of a
 * revocation by watching devices/.
 */
import { type FSWatcher, watch } from "node:fs";
import { mkdir, readdir, readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { syncDirectory, writeFileAtomic } from "../../shared/write-atomic.js";
import {
  type DeviceRecord,
  type EnrollmentStore,
  type RedeemOutcome,
  TOKEN_KEEP_MS,
  type TokenRecord,
} from "./store.js";

const HASH = /^[0-9a-f]{64}$/;

export class StateDirStore implements EnrollmentStore {
  private readonly listeners: ((c: { kind: "revoked" | "enrolled"; name: string }) => void)[] = [];
  private watcher: FSWatcher | undefined;
  /** What each device file said when last seen, to tell a revocation from any other write. */
  private readonly revoked = new Map<string, boolean>();

  private constructor(readonly dir: string) {}

  static async open(dir: string): Promise<StateDirStore> {
    const s = new StateDirStore(dir);
    for (const sub of ["tokens", "used", "devices"])
      await mkdir(join(dir, sub), { recursive: true, mode: 0o700 });
    for (const d of await s.devices()) s.revoked.set(d.name, d.revokedAt !== undefined);
    try {
      s.watcher = watch(join(dir, "devices"), { persistent: false }, (_e, file) => {
        if (typeof file === "string" && file.endsWith(".json") && !file.startsWith("."))
          void s.noticed(file.slice(0, -".json".length));
      });
      s.watcher.on("error", () => s.watcher?.close());
    } catch {
      // Without a watch, revocations made by another process apply at the next login only.
    }
    return s;
  }

  async addToken(t: TokenRecord): Promise<void> {
    await this.sweep(t.createdAt);
    await writeFileAtomic(this.file("tokens", t.hash), JSON.stringify(t));
  }

  async redeem(hash: string, now: number): Promise<RedeemOutcome> {
    if (!HASH.test(hash)) return { ok: false, reason: "unknown" };
    const token = await this.read<TokenRecord>(this.file("tokens", hash));
    if (!token) {
      return (await this.read(this.file("used", hash)))
        ? { ok: false, reason: "used" }
        : { ok: false, reason: "unknown" };
    }
    if (token.expiresAt <= now) return { ok: false, reason: "expired" };
    try {
      await rename(this.file("tokens", hash), this.file("used", hash));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return { ok: false, reason: "used" };
      throw err;
    }
    await syncDirectory(join(this.dir, "used"));
    await syncDirectory(join(this.dir, "tokens"));
    const used = { ...token, usedAt: now };
    await writeFileAtomic(this.file("used", hash), JSON.stringify(used));
    return { ok: true, token: used };
  }

  async putDevice(d: DeviceRecord): Promise<void> {
    await writeFileAtomic(this.file("devices", d.name), JSON.stringify(d));
    this.revoked.set(d.name, d.revokedAt !== undefined);
    this.emit({ kind: d.revokedAt === undefined ? "enrolled" : "revoked", name: d.name });
  }

  getDevice(name: string): Promise<DeviceRecord | undefined> {
    return this.read<DeviceRecord>(this.file("devices", name));
  }

  async devices(): Promise<DeviceRecord[]> {
    const files = (await readdir(join(this.dir, "devices"))).filter(
      (f) => f.endsWith(".json") && !f.startsWith("."),
    );
    const out: DeviceRecord[] = [];
    for (const f of files.sort()) {
      const d = await this.read<DeviceRecord>(join(this.dir, "devices", f));
      if (d) out.push(d);
    }
    return out;
  }

  async revoke(name: string, at: number): Promise<DeviceRecord | undefined> {
    const d = await this.getDevice(name);
    if (!d) return undefined;
    const revoked = { ...d, revokedAt: d.revokedAt ?? at };
    await this.putDevice(revoked);
    return revoked;
  }

  onChange(fn: (c: { kind: "revoked" | "enrolled"; name: string }) => void): void {
    this.listeners.push(fn);
  }

  async relayFingerprints(own: string): Promise<string[]> {
    return [own];
  }

  async close(): Promise<void> {
    this.watcher?.close();
  }

  private emit(c: { kind: "revoked" | "enrolled"; name: string }): void {
    for (const fn of this.listeners) fn(c);
  }

  /** A device file changed, perhaps by another process: report a revocation once. */
  private async noticed(name: string): Promise<void> {
    const d = await this.getDevice(name);
    if (!d) return;
    const was = this.revoked.get(name);
    const is = d.revokedAt !== undefined;
    this.revoked.set(name, is);
    if (is && was !== true) this.emit({ kind: "revoked", name });
  }

  /** Drops used and expired token files TOKEN_KEEP_MS past their expiry. */
  private async sweep(now: number): Promise<void> {
    for (const sub of ["tokens", "used"]) {
      for (const f of await readdir(join(this.dir, sub))) {
        const t = await this.read<TokenRecord>(join(this.dir, sub, f));
        if (t && t.expiresAt + TOKEN_KEEP_MS < now) await rm(join(this.dir, sub, f), { force: true });
      }
    }
  }

  private file(sub: string, id: string): string {
    return join(this.dir, sub, `${id}.json`);
  }

  private async read<T>(file: string): Promise<T | undefined> {
    try {
      return JSON.parse(await readFile(file, "utf8")) as T;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      if (err instanceof SyntaxError) return undefined;
      throw err;
    }
  }
}
