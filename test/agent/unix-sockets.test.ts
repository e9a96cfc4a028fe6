/** Unix sockets on either side of a forward, through OpenSSH's streamlocal extension. */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { openTunnel, parseRemoteForward, type Tunnel } from "../../src/index.js";
import { echoServer, exchange, type Listening, random, sha256, waitFor } from "../helpers/net.js";
import { Sshd } from "../helpers/sshd.js";

function unixExchange(path: string, payload: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ path, allowHalfOpen: true });
    const chunks: Buffer[] = [];
    s.on("data", (d: Buffer) => chunks.push(d));
    s.on("end", () => {
      s.destroy();
      resolve(Buffer.concat(chunks));
    });
    s.on("error", reject);
    s.end(payload);
  });
}

describe("unix socket forwards", () => {
  let sshd: Sshd;
  let echo: Listening<net.Server>;
  let unixEcho: net.Server;
  let localSock: string;
  const tunnels: Tunnel[] = [];

  before(async () => {
    sshd = await Sshd.start({ config: ["StreamLocalBindUnlink yes"] });
    echo = await echoServer();
    localSock = join(sshd.dir, "local-echo.sock");
    unixEcho = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on("error", () => s.destroy());
      s.pipe(s);
    });
    await new Promise<void>((r) => unixEcho.listen(localSock, r));
  });
  after(async () => {
    await Promise.all(tunnels.map((t) => t.close(0)));
    await new Promise((r) => unixEcho.close(r));
    await echo.close();
    await sshd.close();
  });

  async function open(spec: string) {
    const t = await openTunnel({
      ...sshd.tunnelLogin(),
      forwards: [parseRemoteForward(spec)],
    });
    tunnels.push(t);
    return new Promise<number | undefined>((resolve, reject) => {
      t.once("forward-bound", (e) => resolve(e.port));
      t.once("forward-failed", (e) => reject(new Error(e.reason)));
    });
  }

  it("listens on a unix socket on the server (-R /path/remote.sock:host:port)", async () => {
    const remote = join(sshd.dir, "remote.sock");
    await open(`${remote}:127.0.0.1:${echo.port}`);
    await waitFor(() => existsSync(remote), "the server's socket");
    const p = random(2 * 1024 * 1024);
    assert.equal(sha256(await unixExchange(remote, p)), sha256(p));
  });

  it("forwards a server port to a local unix socket (-R port:/path/local.sock)", async () => {
    const port = await open(`127.0.0.1:0:${localSock}`);
    const p = random(2 * 1024 * 1024);
    assert.equal(sha256(await exchange(port ?? 0, p)), sha256(p));
  });
});
