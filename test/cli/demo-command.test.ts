import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { describe, it } from "node:test";
import { Revtun } from "../helpers/cli.js";
import { httpGet } from "../helpers/net.js";

describe("revtun demo", () => {
  it("serves a request through relay and tunnel, and exits 0 on SIGTERM, removing its files", async () => {
    const r = new Revtun(["demo"]);
    try {
      const deadline = Date.now() + 20_000;
      while (!/serving until Ctrl-C/.test(r.stdout)) {
        if (Date.now() > deadline || r.proc.exitCode !== null)
          assert.fail(`demo did not come up: ${r.stdout}${r.stderr}`);
        await new Promise((res) => setTimeout(res, 50));
      }
      assert.match(r.stdout, /response {5}HTTP 200 hello from the service behind the tunnel/);
      assert.match(r.stdout, /try {10}curl http:\/\/127\.0\.0\.1:\d+\//);
      const port = Number(/clients use {2}127\.0\.0\.1:(\d+)/.exec(r.stdout)?.[1]);
      const res = await httpGet(port, "/again");
      assert.equal(res.status, 200);
      assert.match(res.body, /GET \/again/);
    } finally {
      assert.equal(await r.stop("SIGTERM"), 0);
    }
    assert.match(r.stdout, /demo stopped, temporary files removed/);
    const dir = /files {4}(\S+)/.exec(r.stdout)?.[1] ?? "";
    assert.ok(dir.includes("revtun-demo-"), r.stdout);
    assert.equal(existsSync(dir), false, `${dir} removed`);
  });
});
