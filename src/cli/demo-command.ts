/**
 * `revtun demo`: the whole thing on one machine, no setup. A relay on
 * loopback, a tiny HTTP service, and an agent tunnel from one to the other;
 * one request through the tunnel to show it works; serve until a signal, then
 * remove everything created.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseRemoteForward } from "../agent/forward-spec.js";
import { Tunnel } from "../agent/tunnel.js";
import { Relay } from "../relay/relay.js";
import { RevtunError } from "../shared/errors.js";
import { generateEd25519, loadOrCreateHostKey } from "../shared/keys.js";
import { createLogger } from "../shared/log.js";
import { type Io, onSignals } from "./process.js";
import { logTunnel } from "./tunnel-log.js";

function listen(server: http.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port));
  });
}

function get(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: "127.0.0.1", port, path: "/", agent: false, timeout: 5_000 }, (res) => {
        let body = "";
        res.setEncoding("utf8").on("data", (d: string) => {
          body += d;
        });
        res.on("end", () => resolve(`HTTP ${res.statusCode} ${body.trim()}`));
      })
      .on("timeout", function (this: http.ClientRequest) {
        this.destroy(new Error("no answer within 5 s"));
      })
      .on("error", reject);
  });
}

/** Thrown inside demoCommand when a signal arrives while it starts; never escapes it. */
const STOPPED = Symbol("stopped");

export async function demoCommand(argv: string[], io: Io): Promise<number> {
  if (argv.length) throw new RevtunError("USAGE", `demo takes no arguments, got "${argv.join(" ")}"`);
  // Signals before anything exists (issue 12 item 11): a SIGTERM while the
  // demo started used to kill it by the default handler, exit 143, leaving
  // its directory and private keys in the temporary directory. Now every
  // step checks for a stop and the finally block removes what was made.
  let stopRequested = false;
  let wake = () => {};
  const stop = new Promise<typeof STOPPED>((resolve) => {
    wake = () => resolve(STOPPED);
  });
  // Never removed: a second Ctrl-C that lands after the cleanup, while the
  // process exits, would otherwise get the default action (measured: two
  // SIGTERMs 20 ms apart at "serving" gave exit by signal). Signal listeners
  // do not keep the event loop alive.
  onSignals(() => {
    stopRequested = true;
    wake();
  });
  const check = () => {
    if (stopRequested) throw STOPPED;
  };
  /** Waits for `p` or a stop, whichever is first; `p` losing must not reject unhandled later. */
  const until = async <T>(p: Promise<T>): Promise<T> => {
    p.catch(() => {});
    const r = await Promise.race([p, stop]);
    if (r === STOPPED) throw STOPPED;
    return r as T;
  };
  const out = (line: string) => io.stdout.write(`${line}\n`);
  const log = createLogger({ format: "text", level: "info", stream: io.stderr });
  let served = 0;
  const service = http.createServer((req, res) => {
    served++;
    res.writeHead(200, { "content-type": "text/plain" });
    res.end(`hello from the service behind the tunnel (request ${served}, ${req.method} ${req.url})\n`);
  });
  let dir: string | undefined;
  let relay: Relay | undefined;
  let tunnel: Tunnel | undefined;
  try {
    // The short steps run to their end (a half-made directory or listener
    // would escape the cleanup below); the check after each one stops there.
    dir = await mkdtemp(join(tmpdir(), "revtun-demo-"));
    check();
    const servicePort = await listen(service);
    check();
    const hostKey = await loadOrCreateHostKey(join(dir, "relay_host_ed25519"));
    const agentKey = generateEd25519();
    await writeFile(join(dir, "agent_ed25519"), agentKey.private, { mode: 0o600 });
    await writeFile(join(dir, "authorized_keys"), `${agentKey.public} revtun-demo-agent\n`);
    check();
    relay = new Relay({
      listen: { host: "127.0.0.1", port: 0 },
      hostKey: hostKey.privateKey,
      authorizedKeysFile: join(dir, "authorized_keys"),
      watchAuthorizedKeys: false,
    });
    const relayAddr = await relay.start();
    await writeFile(join(dir, "known_hosts"), `[127.0.0.1]:${relayAddr.port} ${hostKey.publicKey}\n`);
    check();
    out(`relay    listening on 127.0.0.1:${relayAddr.port} (host key ${hostKey.fingerprint})`);
    out(`service  http://127.0.0.1:${servicePort}/`);
    out(`files    ${dir} (keys, authorized_keys, known_hosts; removed on exit)`);

    tunnel = new Tunnel({
      host: "127.0.0.1",
      port: relayAddr.port,
      username: "demo",
      identityFiles: [join(dir, "agent_ed25519")],
      knownHostsFiles: [join(dir, "known_hosts")],
      strictHostKeyChecking: "yes",
      forwards: [parseRemoteForward(`127.0.0.1:0:127.0.0.1:${servicePort}`)],
    });
    logTunnel(tunnel, log, io.stderr);
    const t = tunnel;
    const bound = new Promise<number>((resolve, reject) => {
      t.once("forward-bound", (e) => resolve(e.port ?? 0));
      t.once("stopped", (e) => reject(e.error ?? new Error("tunnel stopped")));
    });
    await tunnel.start();
    const port = await until(bound);
    out(`tunnel   relay port ${port} → 127.0.0.1:${servicePort}, through SSH`);
    out("");
    out(`clients use  127.0.0.1:${port}`);
    out(`try          curl http://127.0.0.1:${port}/`);
    out(`response     ${await until(get(port))}`);
    out("");
    out("serving until Ctrl-C");
    await stop;
    return 0;
  } catch (err) {
    if (err === STOPPED) return 0;
    throw err;
  } finally {
    // Each step on its own: a failing close must not keep the keys on disk.
    await tunnel?.close(1_000).catch(() => {});
    await relay?.close().catch(() => {});
    await new Promise<void>((r) => {
      service.closeAllConnections();
      service.close(() => r());
    });
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    out("demo stopped, temporary files removed");
  }
}
