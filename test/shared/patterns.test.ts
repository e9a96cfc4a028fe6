/** The shared OpenSSH pattern primitives (match.c) that ssh_config, known_hosts and the relay use. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  matchPattern,
  matchPatternList,
  matchPatterns,
  patternListVerdict,
} from "../../src/shared/patterns.js";

describe("patterns", () => {
  it("matchPattern: * any run, ? one character, everything else literal", () => {
    assert.equal(matchPattern("host.example.com", "*.example.com"), true);
    assert.equal(matchPattern("example.com", "*.example.com"), false);
    assert.equal(matchPattern("192.168.1.7", "192.168.1.?"), true);
    assert.equal(matchPattern("192.168.1.77", "192.168.1.?"), false);
    assert.equal(matchPattern("a.b", "a?b"), true);
    assert.equal(matchPattern("axb", "a.b"), false, "dot is literal");
    assert.equal(matchPattern("a[b]", "a[b]"), true, "brackets are literal");
    assert.equal(matchPattern("", "*"), true);
    assert.equal(matchPattern("", ""), true);
    assert.equal(matchPattern("x", ""), false);
    assert.equal(matchPattern("aaab", "*a*b"), true);
    assert.equal(matchPattern("Host", "host"), false, "case is the caller's");
  });

  it("patternListVerdict: a negated match wins, whatever the order", () => {
    assert.equal(patternListVerdict("10.0.0.5", ["10.0.0.*", "!10.0.0.5"]), -1);
    assert.equal(patternListVerdict("10.0.0.5", ["!10.0.0.5", "10.0.0.*"]), -1);
    assert.equal(patternListVerdict("10.0.0.6", ["!10.0.0.5", "10.0.0.*"]), 1);
    assert.equal(patternListVerdict("10.0.0.6", ["!10.0.0.5"]), 0);
    assert.equal(patternListVerdict("x", []), 0);
    assert.equal(patternListVerdict("x", ["", "!"]), 0, "empty patterns never match");
    assert.equal(patternListVerdict("host", ["HOST"]), 0);
    assert.equal(patternListVerdict("host", ["HOST"], true), 1, "lower lowercases the patterns");
    assert.equal(patternListVerdict("HOST", ["host"], true), 0, "but not the name");
  });

  it("matchPatterns / matchPatternList are true only for a positive match without a negated one", () => {
    assert.equal(matchPatterns("a.example.com", ["*.example.com", "!b.example.com"]), true);
    assert.equal(matchPatterns("b.example.com", ["*.example.com", "!b.example.com"]), false);
    assert.equal(matchPatternList("b.example.com", "!b.example.com"), false);
    assert.equal(matchPatternList("c.example.com", "!b.example.com"), false);
    assert.equal(matchPatternList("gw", "*.example.com,GW", true), true);
  });
});
