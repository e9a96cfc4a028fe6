import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { forkWorkers, type WorkerEvents } from "../../src/relay/fleet/workers.js";
import { waitFor } from "../helpers/net.js";
import { alive } from "../helpers/proc.js";
import { freePort } from "../helpers/sshd.js";

/** Connects to the shared port and reads the pid of the worker that answered. */
function whoAnswers(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: "127.0.0.1", port });
    let text = "";
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error("no answer"));
    }, 3000);
    s.setEncoding("utf8");
    s.on("data", (d: string) => {
      text += d;
    });
    s.on("end", () => {
      clearTimeout(t);
      s.destroy();
      resolve(Number(text));
    });
    s.on("error", (e) => {
      clearTimeout(t);
      reject(e);
    });
  });
}

describe("relay workers (node:cluster mechanics)", () => {
  test("N workers share one port; a killed worker is replaced, with backoff when it dies again", async () => {
    const dir = mkdtempSync(join(tmpdir(), "revtun-workers-"));
    const script = join(dir, "worker.mjs");
    // The tiniest relay stand-in: answers each connection with its pid on the shared port.
    writeFileSync(
      script,
      `import net from "node:net";
net.createServer((c) => c.end(String(process.pid) + (process.env.REVTUN_WORKER_INDEX === undefined ? "?" : "")))
  .listen(Number(process.env.SHARED_PORT), "127.0.0.1");
`,
    );
    const port = await freePort();
    const sup = forkWorkers({ count: 2, exec: script, env: () => ({ SHARED_PORT: String(port) }) });
    const exited: WorkerEvents["exited"][0][] = [];
    const listening: number[] = [];
    sup.on("exited", (e) => exited.push(e));
    sup.on("listening", (e) => listening.push(e.pid));
    const started: number[] = [];
    try {
      await waitFor(() => listening.length === 2, "two workers listening", 10_000);
      const first = sup.pids() as number[];
      started.push(...first);
      const seen = new Set<number>();
      for (let i = 0; i < 20 && seen.size < 2; i++) seen.add(await whoAnswers(port));
      assert.deepEqual([...seen].sort(), [...first].sort(), "both workers answer on the one port");

      const victim = first[0] as number;
      const killedAt = performance.now();
      process.kill(victim, "SIGKILL");
      await waitFor(() => listening.length === 3, "replacement listening", 10_000, 10);
      console.log(
        `# killed worker replaced and listening after ${Math.round(performance.now() - killedAt)} ms`,
      );
      assert.deepEqual(
        exited.map(({ index, signal, restartInMs }) => ({ index, signal, restartInMs })),
        [{ index: 0, signal: "SIGKILL", restartInMs: 200 }],
      );
      const second = sup.pids() as number[];
      started.push(second[0] as number);
      assert.notEqual(second[0], victim);
      assert.equal(second[1], first[1]);
      const after = new Set<number>();
      for (let i = 0; i < 20 && after.size < 2; i++) after.add(await whoAnswers(port));
      assert.deepEqual([...after].sort(), [...second].sort());

      // Dying again soon after starting doubles the pause.
      process.kill(second[0] as number, "SIGKILL");
      await waitFor(() => listening.length === 4, "second replacement", 10_000, 10);
      assert.equal(exited[1]?.restartInMs, 400);
      started.push(sup.pids()[0] as number);
    } finally {
      await sup.stop(2000);
      rmSync(dir, { recursive: true, force: true });
    }
    for (const pid of started) assert.equal(alive(pid), false, `worker ${pid} is gone after stop`);
    assert.throws(
      () => forkWorkers({ count: 0, exec: script }),
      /--workers 0: must be a whole number from 1 to 64/,
    );
  });
});
