import assert from "node:assert/strict";
import net from "node:net";
import { describe, test } from "node:test";
import { dial } from "../../src/agent/dial.js";
import { RevtunError } from "../../src/shared/errors.js";
import { freePort } from "../helpers/sshd.js";

describe("dial", () => {
  test("connects, with TCP_NODELAY, to a listening port", async () => {
    const server = net.createServer((s) => s.end("hi"));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const sock = await dial({ host: "127.0.0.1", port, timeoutMs: 2_000 });
      const got = await new Promise<string>((r) => sock.once("data", (d: Buffer) => r(d.toString())));
      assert.equal(got, "hi");
      sock.destroy();
    } finally {
      server.close();
    }
  });

  test("a refused connection is a CONNECT error in ssh's words, with reason refused", async () => {
    const port = await freePort();
    await assert.rejects(
      dial({ host: "127.0.0.1", port, timeoutMs: 2_000 }),
      (e: unknown) =>
        e instanceof RevtunError &&
        e.code === "CONNECT" &&
        e.reason === "refused" &&
        e.message === `cannot connect to [127.0.0.1]:${port}: connection refused`,
    );
  });
});
