/**
 * Fleet test parties over ssh2: a device binding a name (`ssh -R
 * device42:22:...`'s tcpip-forward) that echoes what it is sent, and an
 * operator's direct-tcpip to a name (`ssh -W device42:22 relay`).
 */
import ssh2 from "ssh2";
import { random } from "./net.js";

const { Client, utils } = ssh2;
export type Client = InstanceType<typeof Client>;

/** ssh2 1.17 now and then generates an ed25519 key its own parser calls malformed: draw again. */
export function ed(): { private: string; public: string } {
  for (let i = 0; i < 10; i++) {
    const k = utils.generateKeyPairSync("ed25519");
    if (!(utils.parseKey(k.private) instanceof Error)) return k;
  }
  throw new Error("ssh2 generated 10 unreadable ed25519 keys in a row");
}
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function connect(port: number, privateKey: string, user = "t"): Promise<Client> {
  return new Promise((resolve, reject) => {
    const c = new Client();
    const t = setTimeout(() => {
      c.end();
      reject(new Error(`no SSH session on ${port} within 5 s`));
    }, 5000);
    c.once("ready", () => {
      clearTimeout(t);
      // As revtun's agent does: with ssh2's default (Nagle on) a small reply waits ~40 ms for a delayed ACK.
      c.setNoDelay(true);
      resolve(c);
    });
    c.once("error", (err) => {
      clearTimeout(t);
      reject(err);
    });
    c.connect({ host: "127.0.0.1", port, username: user, privateKey, readyTimeout: 5000 });
  });
}

/** A device: binds name:22 on the relay at `port` and echoes every connection's bytes back. */
export async function device(port: number, key: string, name = "device42"): Promise<Client> {
  const c = await connect(port, key);
  c.on("error", () => {});
  c.on("tcp connection", (_info, accept) => {
    const ch = accept();
    ch.pipe(ch);
  });
  await new Promise<void>((resolve, reject) =>
    c.forwardIn(name, 22, (err) => (err ? reject(err) : resolve())),
  );
  return c;
}

/** An operator's direct-tcpip to name:22 through the relay at `port`: sends `data`, returns what came back. */
export async function reach(port: number, key: string, data: Buffer, name = "device42"): Promise<Buffer> {
  const c = await connect(port, key);
  c.on("error", () => {});
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no echo of ${data.length} bytes within 5 s`)), 5000);
      c.forwardOut("192.0.2.9", 4000, name, 22, (err, ch) => {
        if (err) {
          clearTimeout(t);
          reject(err);
          return;
        }
        const got: Buffer[] = [];
        let n = 0;
        ch.on("data", (d: Buffer) => {
          got.push(d);
          n += d.length;
          if (n >= data.length) {
            clearTimeout(t);
            ch.close();
            resolve(Buffer.concat(got));
          }
        });
        ch.on("close", () => {
          clearTimeout(t);
          resolve(Buffer.concat(got));
        });
        ch.write(data);
      });
    });
  } finally {
    c.end();
  }
}

/** Retries `reach` every 100 ms until it echoes or `ms` passes; returns the time it took. */
export async function reachWithin(port: number, key: string, ms: number, name = "device42"): Promise<number> {
  const t0 = performance.now();
  const data = random(1000);
  let last: unknown;
  for (let i = 0; i < 200 && performance.now() - t0 < ms; i++) {
    try {
      if ((await reach(port, key, data, name)).equals(data)) return performance.now() - t0;
    } catch (err) {
      last = err;
    }
    await sleep(100);
  }
  throw new Error(`not reachable through ${port} within ${ms} ms: ${(last as Error)?.message}`);
}

/** `revtun relay` arguments for one member of a fleet on `redisUrl` (the tests' common part; `extra` follows). */
export function fleetRelayArgs(o: {
  port: number;
  hostKey: string;
  authorizedKeys: string;
  redisUrl: string;
  fleetKey: string;
  relayId: string;
  extra?: string[];
}): string[] {
  return [
    "relay",
    "--listen",
    `127.0.0.1:${o.port}`,
    "--host-key",
    o.hostKey,
    "--authorized-keys",
    o.authorizedKeys,
    "--fleet",
    o.redisUrl,
    "--fleet-key",
    o.fleetKey,
    "--relay-id",
    o.relayId,
    ...(o.extra ?? []),
  ];
}
