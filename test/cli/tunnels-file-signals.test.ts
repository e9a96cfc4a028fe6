/**
 * `revtun --config` stopped while it loads and starts its tunnels (issue 12
 * item 11): exit 0 at every moment, and no tunnel started after the signal
 * keeps the process alive.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { closeSync, constants, openSync, readFileSync, writeFileSync, writeSync } from "node:fs";
import type net from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Revtun } from "../helpers/cli.js";
import { echoServer, type Listening } from "../helpers/net.js";
import { Sshd } from "../helpers/sshd.js";

describe("revtun --config stopped while starting", () => {
  let sshd: Sshd;
  let echo: Listening<net.Server>;
  let file = "";
  const tunnel = (name: string, key = sshd.userKey) => `  ${name}:
    HostName: 127.0.0.1
    Port: ${sshd.port}
    User: ${sshd.user}
    IdentityFile: ${key}
    UserKnownHostsFile: ${sshd.knownHosts}
    RemoteForward:
      - "127.0.0.1:0 127.0.0.1:${echo.port}"
`;
  before(async () => {
    sshd = await Sshd.start();
    echo = await echoServer();
    file = join(sshd.dir, "tunnels.yaml");
    writeFileSync(file, `tunnels:\n${["a", "b", "c", "d"].map((n) => tunnel(n)).join("")}`);
  });
  after(async () => {
    await echo.close();
    await sshd.close();
  });

  /** Stops after `ms`, or when `re` shows on stderr; a process still alive 5 s later is SIGKILLed. */
  async function stopAt(moment: number | RegExp) {
    const r = new Revtun(["--config", file]);
    if (typeof moment === "number") await new Promise((res) => setTimeout(res, moment));
    else await r.waitFor(moment);
    r.proc.kill("SIGTERM");
    const killer = setTimeout(() => r.proc.kill("SIGKILL"), 5_000);
    const exit = await r.exited;
    clearTimeout(killer);
    return { ...exit, out: r.stdout + r.stderr };
  }

  it("SIGTERM at 0 to 700 ms, and after the first and last forward: exit 0", async () => {
    for (const moment of [0, 150, 250, 350, 450, 550, 700, /Allocated port/, /(Allocated port[\s\S]*){4}/]) {
      const s = await stopAt(moment);
      if (s.signal === "SIGTERM") {
        // Only while node itself boots, before revtun's code runs.
        assert.equal(s.out, "", `killed at ${moment} only before revtun printed anything`);
      } else {
        assert.deepEqual([s.code, s.signal], [0, null], `at ${moment}: ${s.out}`);
      }
    }
  });

  /**
   * A FIFO holds revtun at a known step: its read of the FIFO waits for us.
   * The non-blocking open for writing succeeds only once revtun opened it
   * for reading (ENXIO before), so the poll tells when revtun is there.
   */
  async function heldAt(fifo: string, args: string[], content: string) {
    execFileSync("mkfifo", [fifo]);
    const r = new Revtun(args);
    const deadline = Date.now() + 10_000;
    let fd = -1;
    while (fd < 0) {
      try {
        fd = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
      } catch (err) {
        if (
          (err as NodeJS.ErrnoException).code !== "ENXIO" ||
          Date.now() > deadline ||
          r.proc.exitCode !== null
        ) {
          r.proc.kill("SIGKILL");
          throw err;
        }
        await new Promise((res) => setTimeout(res, 2));
      }
    }
    r.proc.kill("SIGTERM");
    // Let the signal be handled while revtun still waits on the FIFO.
    await new Promise((res) => setTimeout(res, 100));
    writeSync(fd, content);
    closeSync(fd);
    const killer = setTimeout(() => r.proc.kill("SIGKILL"), 5_000);
    const exit = await r.exited;
    clearTimeout(killer);
    return { ...exit, out: r.stdout + r.stderr };
  }

  it("SIGTERM while the tunnels file is being read: exit 0, no tunnel started", async () => {
    const fifo = join(sshd.dir, "fifo-tunnels.yaml");
    const s = await heldAt(fifo, ["--config", fifo], `tunnels:\n${tunnel("a")}`);
    assert.deepEqual([s.code, s.signal], [0, null], s.out);
    assert.doesNotMatch(s.out, /connecting/);
  });

  it("SIGTERM while the second tunnel starts: exit 0, the tunnels started after the signal are closed too", async () => {
    const fifo = join(sshd.dir, "fifo-key");
    const held = join(sshd.dir, "held.yaml");
    writeFileSync(held, `tunnels:\n${tunnel("a")}${tunnel("b", fifo)}${tunnel("c")}`);
    const s = await heldAt(fifo, ["--config", held], readFileSync(sshd.userKey, "utf8"));
    assert.deepEqual([s.code, s.signal], [0, null], s.out);
  });
});
