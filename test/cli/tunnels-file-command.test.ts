/** `revtun --config tunnels.yaml`: two tunnels, one endpoint, SIGHUP reloads in place. */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Revtun } from "../helpers/cli.js";
import { echoServer, exchange, httpGet, type Listening, waitFor } from "../helpers/net.js";
import { freePort, Sshd } from "../helpers/sshd.js";

describe("revtun --config", () => {
  let sshd: Sshd;
  let echo: Listening<net.Server>;
  before(async () => {
    sshd = await Sshd.start();
    echo = await echoServer();
  });
  after(async () => {
    await echo.close();
    await sshd.close();
  });

  const tunnel = (name: string, port: number, extra = "") => `  ${name}:
    HostName: 127.0.0.1
    Port: ${sshd.port}
    User: ${sshd.user}
    IdentityFile: ${sshd.userKey}
    UserKnownHostsFile: ${sshd.knownHosts}
    ServerAliveInterval: 5${extra}
    RemoteForward:
      - "127.0.0.1:${port} 127.0.0.1:${echo.port}"
`;

  it("runs two tunnels; a reload rebuilds the changed one and leaves the other's open connection alone", async () => {
    const file = join(sshd.dir, "tunnels.yaml");
    const [pa, pb, pb2] = [await freePort(), await freePort(), await freePort()];
    writeFileSync(file, `tunnels:\n${tunnel("alpha", pa)}${tunnel("beta", pb)}`);
    const r = new Revtun(["--config", file, "--metrics", "127.0.0.1:0"]);
    try {
      const mport = Number((await r.waitFor(/metrics on http:\/\/127\.0\.0\.1:(\d+)/))[1]);
      await waitFor(async () => (await httpGet(mport, "/healthz")).status === 200, "both tunnels healthy");
      const metrics = await httpGet(mport, "/metrics");
      assert.match(metrics.body, /revtun_session_up\{tunnel="alpha"\} 1/);
      assert.match(metrics.body, /revtun_session_up\{tunnel="beta"\} 1/);

      // An open connection through alpha, mid-conversation.
      const s = net.connect({ host: "127.0.0.1", port: pa, allowHalfOpen: true });
      await new Promise((res) => s.once("connect", res));
      s.write("one ");
      await new Promise((res) => s.once("data", res));

      // An invalid file is refused and nothing changes.
      writeFileSync(file, `tunnels:\n${tunnel("alpha", pa)}  beta:\n    Port: nope\n`);
      r.proc.kill("SIGHUP");
      await r.waitFor(/reload refused, tunnels unchanged: .*tunnels\.yaml:\d+: tunnel "beta", field Port/);
      assert.equal((await exchange(pb, Buffer.from("b"))).toString(), "b");

      // Change beta's port: beta is rebuilt, alpha keeps its session and connection.
      writeFileSync(file, `tunnels:\n${tunnel("alpha", pa)}${tunnel("beta", pb2)}`);
      r.proc.kill("SIGHUP");
      await r.waitFor(/reloaded .*tunnels\.yaml/);
      await waitFor(
        () => exchange(pb2, Buffer.from("b2"), "127.0.0.1", 1_000).then((b) => b.toString() === "b2"),
        "beta on its new port",
      );
      assert.match(r.stderr, /changed=\["?beta"?\]|changed=beta/);
      const rest: Buffer[] = [];
      s.on("data", (d: Buffer) => rest.push(d));
      s.end("two");
      await new Promise((res) => s.once("end", res));
      assert.equal(Buffer.concat(rest).toString(), "two", "alpha's connection survived the reload");
      assert.equal(
        (r.stderr.match(/connected in \d+ ms.*tunnel=alpha/g) ?? []).length,
        1,
        "alpha connected once",
      );

      // Remove beta: it is closed, and its port is released.
      writeFileSync(file, `tunnels:\n${tunnel("alpha", pa)}`);
      r.proc.kill("SIGHUP");
      await waitFor(() => /removed=\["?beta"?\]|removed=beta/.test(r.stderr), "beta removed");
      await waitFor(
        () =>
          exchange(pb2, Buffer.from("x"), "127.0.0.1", 1_000).then(
            () => false,
            () => true,
          ),
        "beta's port released",
      );
    } finally {
      assert.equal(await r.stop(), 0);
    }
  });

  it("refuses an invalid file at start with every error, exit 2", async () => {
    const file = join(sshd.dir, "bad.yaml");
    writeFileSync(
      file,
      "tunnels:\n  a:\n    Port: 0\n    RemoteForward: '0 h:1'\n  b:\n    Bogus: 1\n    RemoteForward: '0 h:1'\n",
    );
    const r = new Revtun(["--config", file]);
    const { code } = await r.exited;
    assert.equal(code, 2);
    assert.match(r.stderr, /bad\.yaml:3: tunnel "a", field Port/);
    assert.match(r.stderr, /bad\.yaml:6: tunnel "b", field Bogus/);
  });
});
