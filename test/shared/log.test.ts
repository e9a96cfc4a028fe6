/**
 * Text log lines: control characters a peer put in a message or a field
 * stay on one line (issue 12 item 6); repeated lines collapse (item 8).
 */
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { describe, test } from "node:test";
import { createLogger, RepeatCollapser, textLine } from "../../src/shared/log.js";

const FORGED = "\n19:99:99.000 INFO forged";

function capture(): { stream: Writable; text: () => string } {
  let out = "";
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      out += chunk.toString("utf8");
      cb();
    },
  });
  return { stream, text: () => out };
}

describe("text log lines", () => {
  test("a newline in msg or in a field value cannot start a forged line", () => {
    const line = textLine(
      JSON.stringify({ level: 40, time: 0, msg: `refused${FORGED}`, event: "x", reason: `bad${FORGED}` }),
    );
    assert.equal(line.split("\n").length, 2, line); // one line and its terminator
    assert.ok(line.endsWith("\n"));
    assert.ok(!/\n19:99/.test(line));
    assert.match(line, /refused\\n19:99:99\.000 INFO forged/);
  });

  test("CR, TAB, ESC, DEL, C1 and U+2028 are escaped too, in msg, values and nested values", () => {
    const nasty = "a\rb\tc\x1b[31md\x7fe\x85f\u2028g";
    const line = textLine(
      JSON.stringify({ level: 30, time: 0, msg: nasty, plain: "x\x1by", obj: { v: nasty } }),
    );
    // Only the final newline may be a control character.
    const controls = [...line.slice(0, -1)].filter((c) => {
      const n = c.charCodeAt(0);
      return n < 0x20 || (n >= 0x7f && n <= 0x9f) || n === 0x2028 || n === 0x2029;
    });
    assert.deepEqual(controls, []);
    assert.match(line, /a\\rb\\tc\\x1b\[31md\\x7fe\\x85f\\u2028g/);
    assert.match(line, /plain=x\\x1by/);
  });

  test("through pino: one record with an embedded newline is one line", () => {
    const c = capture();
    const log = createLogger({ format: "text", level: "info", stream: c.stream });
    log.warn({ event: "forward-refused", address: `a${FORGED}` }, `refused a${FORGED}`);
    log.flush();
    const lines = c.text().split("\n").filter(Boolean);
    assert.equal(lines.length, 1, c.text());
  });
});

describe("RepeatCollapser", () => {
  test("logs the first, counts repeats in the window, then reports the count once", () => {
    let now = 0;
    const r = new RepeatCollapser<string>({ windowMs: 10_000, maxKeys: 4, now: () => now });
    assert.deepEqual(r.admit("k", "first"), { log: true, ended: [] });
    for (let i = 0; i < 744; i++) {
      now += 10;
      assert.equal(r.admit("k", "again").log, false);
    }
    assert.deepEqual(r.flush(), [], "window not over yet");
    now = 10_000;
    assert.deepEqual(r.flush(), [{ key: "k", first: "first", count: 744 }]);
    assert.equal(r.size, 0);
    // After the window a new occurrence is logged again.
    assert.equal(r.admit("k", "later").log, true);
  });

  test("an occurrence after the window ends it and is logged", () => {
    let now = 0;
    const r = new RepeatCollapser<string>({ windowMs: 1_000, maxKeys: 4, now: () => now });
    r.admit("k", "a");
    r.admit("k", "b");
    now = 1_000;
    assert.deepEqual(r.admit("k", "c"), { log: true, ended: [{ key: "k", first: "a", count: 1 }] });
  });

  test("memory is bounded: past maxKeys the oldest window ends early", () => {
    let now = 0;
    const r = new RepeatCollapser<number>({ windowMs: 60_000, maxKeys: 8, now: () => now });
    let evicted = 0;
    for (let i = 0; i < 1_000; i++) {
      now++;
      for (const e of r.admit(`k${i}`, i).ended) {
        assert.equal(e.first, i - 8, "the oldest goes first");
        evicted += e.count;
      }
      assert.equal(r.admit(`k${i}`, i).log, false); // one repeat each
      assert.ok(r.size <= 8);
    }
    assert.equal(evicted, 992);
    const ended: number[] = [];
    for (const e of r.flush(true)) ended.push(e.count);
    assert.deepEqual(ended, new Array(8).fill(1));
  });
});
