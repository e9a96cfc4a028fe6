/** Medians, ratios, the printed table and the SVG chart. */
import os from "node:os";

/** The machine a result was measured on, as every bench's JSON records it. */
export function machineInfo(): { cpu: string; cores: number; node: string; loadavgAtEnd: number[] } {
  return {
    cpu: os.cpus()[0]?.model ?? "unknown",
    cores: os.cpus().length,
    node: process.version,
    loadavgAtEnd: os.loadavg(),
  };
}
/** The two things compared: [baseline, candidate], e.g. ["ssh", "revtun"]; ratio = candidate/baseline. */
export type Labels = [string, string];

export interface Run {
  pair: number;
  /** One of the workload's labels. */
  tool: string;
  value: number;
  /** CPU time of the tunnel process over the run, as a percentage of one core. */
  cpuPct?: number;
  /** CPU time of the server side (the sshd processes of this session, or the relay), % of one core. */
  sshdCpuPct?: number;
  /** Workload-specific raw figures (ms, bytes, RSS before/after, ab output fields, ...). */
  raw: Record<string, number | string | boolean>;
}

/** What a workload measures, as its table row and chart group describe it. */
interface WorkloadInfo {
  id: string;
  labels: Labels;
  title: string;
  unit: string;
  better: "higher" | "lower";
  note?: string;
}

export interface Workload extends WorkloadInfo {
  runs: Run[];
}

export interface Summary extends WorkloadInfo {
  median: Record<string, number>;
  cpuPct?: Record<string, number>;
  sshdCpuPct?: Record<string, number>;
  /** candidate/baseline per pair. */
  ratios: number[];
  ratio: { median: number; min: number; max: number };
}

export function median(xs: number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

export function summarize(w: Workload): Summary {
  const [a, b] = w.labels;
  const of = (tool: string) => w.runs.filter((r) => r.tool === tool);
  const pairs = [...new Set(w.runs.map((r) => r.pair))].sort((x, y) => x - y);
  const ratios: number[] = [];
  for (const p of pairs) {
    const ra = w.runs.find((r) => r.pair === p && r.tool === a);
    const rb = w.runs.find((r) => r.pair === p && r.tool === b);
    if (ra && rb && ra.value !== 0) ratios.push(rb.value / ra.value);
  }
  const field = (tool: string, k: "cpuPct" | "sshdCpuPct") =>
    of(tool).flatMap((r) => (r[k] === undefined ? [] : [r[k] as number]));
  const both = (k: "cpuPct" | "sshdCpuPct") =>
    field(a, k).length > 0 && field(b, k).length > 0
      ? { [k]: { [a]: median(field(a, k)), [b]: median(field(b, k)) } }
      : {};
  return {
    id: w.id,
    labels: w.labels,
    title: w.title,
    unit: w.unit,
    better: w.better,
    ...(w.note ? { note: w.note } : {}),
    median: { [a]: median(of(a).map((r) => r.value)), [b]: median(of(b).map((r) => r.value)) },
    ...both("cpuPct"),
    ...both("sshdCpuPct"),
    ratios,
    ratio: { median: median(ratios), min: Math.min(...ratios), max: Math.max(...ratios) },
  };
}

export function fmt(x: number): string {
  if (!Number.isFinite(x)) return "-";
  const a = Math.abs(x);
  if (a >= 1000) return x.toFixed(0);
  if (a >= 100) return x.toFixed(1);
  if (a >= 10) return x.toFixed(2);
  return x.toFixed(3);
}

export function table(rows: Summary[], heading: string): string {
  const [a, b] = rows[0]?.labels ?? ["a", "b"];
  const header = [
    "workload",
    "unit",
    a,
    b,
    `${b}/${a}`,
    "spread (min-max)",
    `CPU% ${a}`,
    `CPU% ${b}`,
    `server CPU% (${a}/${b})`,
  ];
  const lines = rows.map((s) => [
    s.title,
    `${s.unit} ${s.better === "higher" ? "(higher=better)" : "(lower=better)"}`,
    fmt(s.median[a] ?? Number.NaN),
    fmt(s.median[b] ?? Number.NaN),
    `${s.ratio.median.toFixed(2)}x`,
    `${s.ratio.min.toFixed(2)}-${s.ratio.max.toFixed(2)}`,
    s.cpuPct ? (s.cpuPct[a] ?? 0).toFixed(0) : "",
    s.cpuPct ? (s.cpuPct[b] ?? 0).toFixed(0) : "",
    s.sshdCpuPct ? `${(s.sshdCpuPct[a] ?? 0).toFixed(0)} / ${(s.sshdCpuPct[b] ?? 0).toFixed(0)}` : "",
  ]);
  const used = header.map((_, i) => i < 6 || lines.some((l) => (l[i] ?? "") !== ""));
  const keep = <T>(r: T[]) => r.filter((_, i) => used[i]);
  const all = [header, ...lines].map(keep);
  const widths = (all[0] ?? []).map((_, i) => Math.max(...all.map((r) => (r[i] ?? "").length)));
  const render = (r: string[]) =>
    r.map((c, i) => (i >= 2 ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0))).join("  ");
  const notes = rows.filter((s) => s.note).map((s) => `  ${s.title}: ${s.note}`);
  return [
    heading,
    render(keep(header)),
    widths.map((w) => "-".repeat(w)).join("  "),
    ...lines.map((l) => render(keep(l))),
    ...(notes.length ? ["notes:", ...notes] : []),
  ].join("\n");
}

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/**
 * Grouped bars, one group per workload: each pair of bars is scaled to the
 * larger of the two medians, labelled with its value, and the group with the
 * median revtun/ssh ratio and its spread.
 */
export function svg(rows: Summary[], title: string, subtitle: string, footnote: string): string {
  const labels = rows[0]?.labels ?? ["a", "b"];
  const groupW = 150;
  const barW = 46;
  const plotH = 220;
  const top = 70;
  const left = 20;
  const width = left * 2 + groupW * rows.length;
  const height = top + plotH + 110;
  const colors = ["#8c8c8c", "#2a6fdb"];
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="11">`,
    `<title>${esc(title)}</title>`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${left}" y="22" font-size="15" font-weight="bold">${esc(title)}</text>`,
    `<text x="${left}" y="40" fill="#555">${esc(subtitle)}</text>`,
    `<rect x="${width - 170}" y="48" width="10" height="10" fill="${colors[0]}"/><text x="${width - 156}" y="57">${esc(labels[0])}</text>`,
    `<rect x="${width - 110}" y="48" width="10" height="10" fill="${colors[1]}"/><text x="${width - 96}" y="57">${esc(labels[1])}</text>`,
    `<line x1="${left}" y1="${top + plotH}" x2="${width - left}" y2="${top + plotH}" stroke="#333"/>`,
  );
  rows.forEach((s, i) => {
    const gx = left + i * groupW;
    const max = Math.max(...labels.map((l) => s.median[l] ?? 0)) || 1;
    labels.forEach((tool, j) => {
      const v = s.median[tool] ?? 0;
      const h = Math.max(1, (v / max) * (plotH - 20));
      const x = gx + 25 + j * (barW + 8);
      const y = top + plotH - h;
      parts.push(
        `<rect x="${x}" y="${y.toFixed(1)}" width="${barW}" height="${h.toFixed(1)}" fill="${colors[j]}"/>`,
        `<text x="${x + barW / 2}" y="${(y - 4).toFixed(1)}" text-anchor="middle">${esc(fmt(v))}</text>`,
      );
    });
    const cx = gx + 25 + barW + 4;
    const good = s.better === "higher" ? s.ratio.median >= 1 : s.ratio.median <= 1;
    parts.push(
      `<text x="${cx}" y="${top + plotH + 16}" text-anchor="middle" font-weight="bold">${esc(s.title)}</text>`,
      `<text x="${cx}" y="${top + plotH + 30}" text-anchor="middle" fill="#555">${esc(s.unit)}, ${s.better} is better</text>`,
      `<text x="${cx}" y="${top + plotH + 48}" text-anchor="middle" font-size="13" font-weight="bold" fill="${good ? "#1a7f37" : "#b42318"}">${esc(labels[1])}/${esc(labels[0])} ${s.ratio.median.toFixed(2)}x</text>`,
      `<text x="${cx}" y="${top + plotH + 62}" text-anchor="middle" fill="#555">spread ${s.ratio.min.toFixed(2)}-${s.ratio.max.toFixed(2)}</text>`,
    );
  });
  parts.push(`<text x="${left}" y="${height - 12}" fill="#555">${esc(footnote)}</text>`, "</svg>");
  return `${parts.join("\n")}\n`;
}
