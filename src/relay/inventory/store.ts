/**
 * Where device records live: a state directory (file-store.ts), the fleet's
 * Redis (../fleet/inventory-store.ts), or nowhere but memory. The inventory
 * (devices.ts) keeps every record in memory and uses a store to share and
 * keep them; a store never throws into it: a failed write answers false and
 * is retried with the next flush.
 */
import type { DeviceRecord } from "./device-record.js";

/** Devices online, per minute since the epoch: the 24-hour chart. */
export type HistorySample = [minute: number, online: number];

export interface DeviceStore {
  /** Every stored record (unverifiable ones skipped) and the history. */
  load(): Promise<{ records: DeviceRecord[]; history: HistorySample[] }>;
  /** Writes records this relay holds; false when not stored now. */
  save(records: DeviceRecord[]): Promise<boolean>;
  /** Forgets records (retention). */
  remove(ids: string[]): Promise<void>;
  saveHistory(sample: HistorySample): Promise<void>;
  /**
   * Stores shared with other relays: `fn` hears which records others wrote
   * ("all" after a reconnect: anything may have been missed),
   * and fetch() reads them (a record that fails its check is left out).
   */
  onRemote?(fn: (ids: string[] | "all") => void): void;
  fetch?(ids: string[]): Promise<DeviceRecord[]>;
  close(): Promise<void>;
}

/** No state directory and no fleet: the relay's memory, gone with the process. */
export class MemoryDeviceStore implements DeviceStore {
  async load() {
    return { records: [], history: [] };
  }
  async save() {
    return true;
  }
  async remove() {}
  async saveHistory() {}
  async close() {}
}
