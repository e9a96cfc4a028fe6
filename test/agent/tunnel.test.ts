/** The library against a real OpenSSH sshd: byte-exact forwarding, concurrency, half-close. */
import assert from "node:assert/strict";
import type net from "node:net";
import { after, before, describe, it } from "node:test";
import { openTunnel, parseRemoteForward, type Tunnel } from "../../src/index.js";
import {
  downloadServer,
  downloadThenUpload,
  echoServer,
  exchange,
  httpGet,
  httpServer,
  type Listening,
  random,
  sha256,
  waitFor,
} from "../helpers/net.js";
import { freePort, Sshd } from "../helpers/sshd.js";

describe("tunnel through OpenSSH sshd", () => {
  let sshd: Sshd;
  let echo: Listening<net.Server>;
  const tunnels: Tunnel[] = [];

  before(async () => {
    sshd = await Sshd.start();
    echo = await echoServer();
  });
  after(async () => {
    await Promise.all(tunnels.map((t) => t.close(0)));
    await echo.close();
    await sshd.close();
  });

  async function tunnel(...specs: string[]): Promise<{ t: Tunnel; ports: number[] }> {
    const t = await openTunnel({
      ...sshd.tunnelLogin(),
      forwards: specs.map(parseRemoteForward),
    });
    tunnels.push(t);
    const ports: number[] = [];
    await new Promise<void>((resolve, reject) => {
      t.on("forward-bound", (e) => {
        ports[specs.indexOf(e.forward.text)] = e.port ?? 0;
        if (ports.filter((p) => p !== undefined).length === specs.length) resolve();
      });
      t.on("error", reject);
    });
    return { t, ports };
  }

  it("moves 32 MiB both ways byte-exact, with the client half-closing", async () => {
    const { ports } = await tunnel(`127.0.0.1:0:127.0.0.1:${echo.port}`);
    const payload = random(32 * 1024 * 1024);
    const back = await exchange(ports[0] ?? 0, payload);
    assert.equal(back.length, payload.length);
    assert.equal(sha256(back), sha256(payload));
  });

  it("passes the service's half-close through: download to EOF, then upload", async () => {
    const download = random(20 * 1024 * 1024);
    const svc = await downloadServer(download);
    try {
      const { ports } = await tunnel(`0:127.0.0.1:${svc.port}`);
      const upload = random(10 * 1024 * 1024);
      const got = await downloadThenUpload(ports[0] ?? 0, upload);
      assert.equal(sha256(got), sha256(download));
      await waitFor(() => svc.received.length === 1, "the service to see the upload end");
      assert.equal(svc.received[0], sha256(upload));
    } finally {
      await svc.close();
    }
  });

  it("serves 100 concurrent connections", async () => {
    const { ports } = await tunnel(`127.0.0.1:0:127.0.0.1:${echo.port}`);
    const payloads = Array.from({ length: 100 }, () => random(64 * 1024));
    const results = await Promise.all(payloads.map((p) => exchange(ports[0] ?? 0, p)));
    results.forEach((r, i) => {
      assert.equal(sha256(r), sha256(payloads[i] ?? Buffer.alloc(0)));
    });
  });

  it("serves 300 sequential HTTP clients on one tunnel", async () => {
    const web = await httpServer("sequential\n");
    try {
      const { t, ports } = await tunnel(`127.0.0.1:0:127.0.0.1:${web.port}`);
      for (let i = 0; i < 300; i++) {
        const r = await httpGet(ports[0] ?? 0, "/");
        assert.equal(r.status, 200);
        assert.equal(r.body, "sequential\n");
      }
      await waitFor(() => t.status().openConnections === 0, "connections to be released");
    } finally {
      await web.close();
    }
  });

  for (const [bind, connectHost] of [
    [undefined, "127.0.0.1"],
    ["localhost", "127.0.0.1"],
    ["127.0.0.1", "127.0.0.1"],
    ["0.0.0.0", "127.0.0.1"],
    ["*", "127.0.0.1"],
    ["[::1]", "::1"],
  ] as const) {
    it(`matches incoming channels with bind address ${bind ?? "(none)"}`, async () => {
      const spec = `${bind === undefined ? "" : `${bind}:`}0:127.0.0.1:${echo.port}`;
      const { ports } = await tunnel(spec);
      const payload = random(4096);
      const back = await exchange(ports[0] ?? 0, payload, connectHost);
      assert.equal(sha256(back), sha256(payload));
    });
  }

  it("binds a fixed port", async () => {
    const port = await freePort();
    await tunnel(`127.0.0.1:${port}:127.0.0.1:${echo.port}`);
    const back = await exchange(port, Buffer.from("fixed"));
    assert.equal(back.toString(), "fixed");
  });

  it("closes the remote client at once when the local target refuses, and serves on", async () => {
    const dead = await freePort();
    const { t, ports } = await tunnel(`127.0.0.1:0:127.0.0.1:${dead}`, `127.0.0.1:0:127.0.0.1:${echo.port}`);
    const rejected = new Promise((r) => t.once("connection-rejected", r));
    const started = Date.now();
    const got = await exchange(ports[0] ?? 0, Buffer.from("anyone?")).catch(() => Buffer.alloc(0));
    assert.equal(got.length, 0);
    assert.ok(Date.now() - started < 5_000, "the client is closed promptly");
    await rejected;
    const back = await exchange(ports[1] ?? 0, Buffer.from("still here"));
    assert.equal(back.toString(), "still here");
  });
});
