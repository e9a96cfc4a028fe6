/**
 * The multi-tunnel file (`revtun --config tunnels.yaml`): each tunnel is a map
 * of ssh_config directive names (any case) to values, so nothing new is
 * learnt. The shape is checked with zod; each value then goes through the same
 * directive table as `-o` and ssh_config. Every error names the tunnel, the
 * field and the line.
 */
import { isMap, LineCounter, parseDocument } from "yaml";
import { z } from "zod";
import { RevtunError } from "../shared/errors.js";
import { canonicalName, type SshOptions, setOption } from "./directives.js";

const scalar = z.union([z.string(), z.number(), z.boolean()]);
const tunnelSchema = z.record(z.string(), z.union([scalar, z.array(scalar).min(1)]));
const fileSchema = z
  .object({
    tunnels: z.record(
      z.string().regex(/^[A-Za-z0-9_.-]+$/, "tunnel names use letters, digits, _ . -"),
      tunnelSchema,
    ),
  })
  .strict();

export interface TunnelDefinition {
  name: string;
  ssh: SshOptions;
  /** A canonical text of the definition: equal texts mean an unchanged tunnel. */
  fingerprint: string;
}

export interface TunnelsConfig {
  tunnels: TunnelDefinition[];
}

const asText = (v: string | number | boolean) => (typeof v === "boolean" ? (v ? "yes" : "no") : String(v));

/**
 * A value inside a one-line message: line breaks, control characters and
 * U+2028/U+2029 escaped (JSON.stringify leaves the last two), so a name or
 * value from the file can neither split the message nor reach a terminal
 * raw. Found by test/fuzz/parsers.test.ts: a RemoteForward of "0 h:1\nz"
 * gave a refusal whose second line named no file.
 */
function oneLine(text: string): string {
  return text.replace(/[\p{Cc}\u2028\u2029]/gu, (c) =>
    c === "\t"
      ? c
      : c === "\n"
        ? "\\n"
        : c === "\r"
          ? "\\r"
          : `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** yaml's own default, named here because the refusal quotes it. */
const MAX_ALIAS_COUNT = 100;

/** Parses and validates a tunnels file; throws one RevtunError listing every problem, one per line. */
export function parseTunnelsConfig(text: string, fileName: string): TunnelsConfig {
  const file = oneLine(fileName);
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  const lineOf = (path: (string | number)[]): number | undefined => {
    // Point at the key when there is one: that is the line a reader looks for.
    const parent = doc.getIn(path.slice(0, -1), true);
    const last = path[path.length - 1];
    if (isMap(parent)) {
      const pair = parent.items.find((p) => (p.key as { value?: unknown } | null)?.value === last);
      const range = (pair?.key as { range?: [number, number, number] } | null)?.range;
      if (range) return lines.linePos(range[0]).line;
    }
    const node = doc.getIn(path, true) as { range?: [number, number, number] } | undefined;
    return node?.range ? lines.linePos(node.range[0]).line : undefined;
  };
  const where = (path: (string | number)[]) => {
    const line = lineOf(path);
    return `${file}${line ? `:${line}` : ""}`;
  };

  if (doc.errors.length) {
    const e = doc.errors[0];
    const line = e ? lines.linePos(e.pos[0]).line : undefined;
    throw new RevtunError(
      "CONFIG",
      `${file}${line ? `:${line}` : ""}: not valid YAML: ${oneLine(e?.message.split("\n")[0] ?? "")}`,
    );
  }
  let value: unknown;
  try {
    // yaml refuses past maxAliasCount expansions ("billion laughs"): 9 levels
    // of 9 aliases would otherwise build 387 million nodes. Its error named
    // no file and was not a RevtunError, so it exited 255.
    value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    throw new RevtunError(
      "CONFIG",
      `${file}: refused: ${oneLine((err as Error).message.split("\n")[0] ?? "")} (more alias expansion than maxAliasCount ${MAX_ALIAS_COUNT} allows)`,
    );
  }
  const parsed = fileSchema.safeParse(value);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => {
      const path = i.path.filter((p): p is string | number => typeof p !== "symbol");
      const [, tunnel, field] = path;
      const subject =
        tunnel === undefined
          ? path.length
            ? `"${oneLine(String(path[0]))}"`
            : "the file"
          : `tunnel "${oneLine(String(tunnel))}"${field !== undefined ? `, field ${oneLine(String(field))}` : ""}`;
      return `${where(path.length ? path : [])}: ${subject}: ${oneLine(i.message)}`;
    });
    throw new RevtunError("CONFIG", problems.join("\n"));
  }

  const problems: string[] = [];
  const tunnels: TunnelDefinition[] = [];
  for (const [name, fields] of Object.entries(parsed.data.tunnels)) {
    const ssh: SshOptions = {};
    const canonical: [string, string[]][] = [];
    for (const [field, raw] of Object.entries(fields)) {
      const values = (Array.isArray(raw) ? raw : [raw]).map(asText);
      try {
        for (const v of values) {
          const r = setOption(ssh, field, v);
          if (r === "unsupported") {
            throw new RevtunError("CONFIG", `unsupported directive (supported: see revtun --help)`);
          }
          if (r === "kept")
            throw new RevtunError(
              "CONFIG",
              "given twice (a list is only allowed for RemoteForward, IdentityFile and CertificateFile)",
            );
        }
        canonical.push([canonicalName(field), values]);
      } catch (err) {
        problems.push(
          `${where(["tunnels", name, field])}: tunnel "${oneLine(name)}", field ${oneLine(field)}: ${oneLine((err as Error).message)}`,
        );
      }
    }
    if (!ssh.remoteForward?.length) {
      problems.push(`${where(["tunnels", name])}: tunnel "${oneLine(name)}": no RemoteForward`);
    }
    canonical.sort(([a], [b]) => a.localeCompare(b));
    tunnels.push({ name, ssh, fingerprint: JSON.stringify(canonical) });
  }
  if (problems.length) throw new RevtunError("CONFIG", problems.join("\n"));
  return { tunnels };
}
