/**
 * The fleet's devices on a terminal (`revtun relay status`, `revtun relay
 * devices`): one row per device, online first is not imposed (the API's
 * order, by name), times in UTC to the second as the operator's "offline"
 * line gives them.
 */

import { formatSeen } from "../relay/inventory/device-record.js";
import type { DeviceView } from "../relay/inventory/devices.js";

/** Control characters in device-supplied strings (key comments, versions) must not drive the terminal. */
const clean = (s: string) => s.replace(/[\p{Cc}\p{Cf}]/gu, "?");

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

export function formatDeviceCounts(counts: { online: number; offline: number }): string {
  return `${counts.online + counts.offline} device(s): ${counts.online} online, ${counts.offline} offline\n`;
}

export function formatDevices(devices: DeviceView[]): string {
  if (devices.length === 0) return "no devices\n";
  const head = [
    "DEVICE",
    "STATE",
    "RELAY",
    "LAST SEEN",
    "KEY",
    "FINGERPRINT",
    "BINDINGS",
    "CONNS",
    "IN",
    "OUT",
  ];
  const rows = devices.map((d) => [
    clean(d.names[0] ?? "") || "-",
    d.state,
    clean(d.relayId),
    d.state === "online" ? "now" : formatSeen(d.lastSeen),
    clean(d.keyComment) || "-",
    d.id.replace(/^SHA256:/, "").slice(0, 12),
    clean(d.bindings.join(",")) || "-",
    String(d.connections),
    formatBytes(d.bytesIn),
    formatBytes(d.bytesOut),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => (i >= 7 ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return `${[head, ...rows].map(line).join("\n")}\n`;
}
