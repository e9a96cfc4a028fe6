/** A tunnels file's refusal stays one line per problem whatever the file holds (found by test/fuzz). */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseTunnelsConfig } from "../../src/config/tunnels-file.js";
import { RevtunError } from "../../src/shared/errors.js";

function refusal(text: string): string[] {
  try {
    parseTunnelsConfig(text, "t.yaml");
  } catch (err) {
    assert.ok(err instanceof RevtunError);
    return err.message.split("\n");
  }
  assert.fail("accepted");
}

describe("tunnels file refusals", () => {
  it("a newline in a RemoteForward value is escaped, not a second line without the file", () => {
    const lines = refusal('tunnels:\n  a:\n    RemoteForward: "0 h:1\\nz"\n');
    // Two problems (the bad value, then no RemoteForward at all), each on its line.
    assert.equal(lines.length, 2, lines.join("\n"));
    assert.ok(
      lines.every((l) => l.startsWith("t.yaml:")),
      lines.join("\n"),
    );
    assert.match(lines[0] ?? "", /^t\.yaml:3: tunnel "a", field RemoteForward: .*0 h:1\\nz/);
  });

  it("control characters and U+2028 in a tunnel name are escaped", () => {
    const lines = refusal('tunnels:\n  "x\\e[31my\\Lz":\n    Port: 22\n');
    assert.ok(
      lines.every((l) => l.startsWith("t.yaml:")),
      lines.join("\n"),
    );
    assert.ok(
      lines.some((l) => l.includes('tunnel "x\\u001b[31my\\u2028z"')),
      lines.join("\n"),
    );
    assert.ok(
      !lines.join("").includes("\u001b") && !lines.join("").includes("\u2028"),
      "no raw ESC or U+2028",
    );
  });
});
