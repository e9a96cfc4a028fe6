/**
 * An in-process ssh2 Server and Client on 127.0.0.1 (ephemeral port, a fresh
 * ed25519 host key), for tests of what revtun does with ssh2's own channels
 * and internals: test/shared/splice.test.ts, test/ssh2/hooks.test.ts.
 * Everything it opens is destroyed by close().
 */
import { once } from "node:events";
import type net from "node:net";
import type { AddressInfo } from "node:net";
import ssh2, { type Algorithms, type Channel, type Client, type Connection, type Server } from "ssh2";
import { generateEd25519 } from "../../src/shared/keys.js";

export interface Ssh2Pair {
  server: Server;
  client: Client;
  /** The server's side of the client's connection. */
  conn: Connection;
  /** Called for each client forwardOut, before the server accepts or rejects it. */
  onTcpip?: (accept: () => Channel, reject: () => void, info: ssh2.TcpipRequestInfo) => void;
  /** A server-side channel and its client-side peer (server conn.forwardOut to a client forwardIn). */
  serverChannel(): Promise<{ server: Channel; client: Channel }>;
  /** A client-side channel (client forwardOut) and its server-side peer. */
  clientChannel(): Promise<{ client: Channel; server: Channel }>;
  close(): Promise<void>;
}

export async function ssh2Pair(
  opts: { algorithms?: Algorithms; beforeConnect?: (client: Client) => void } = {},
): Promise<Ssh2Pair> {
  const sockets = new Set<net.Socket>();
  let resolveConn: (c: Connection) => void = () => {};
  const connReady = new Promise<Connection>((r) => (resolveConn = r));
  let pair: Ssh2Pair | undefined;
  const server = new ssh2.Server(
    { hostKeys: [generateEd25519().private], ...(opts.algorithms ? { algorithms: opts.algorithms } : {}) },
    (conn) => {
      conn.on("error", () => {});
      conn.on("authentication", (ctx) => ctx.accept());
      conn.on("request", (accept, _reject, name, info) => {
        if (name === "tcpip-forward") accept?.((info as { bindPort: number }).bindPort || 40000);
        else accept?.();
      });
      conn.on("tcpip", (accept, reject, info) => {
        if (pair?.onTcpip) pair.onTcpip(accept, reject, info);
        else reject();
      });
      const sock = (conn as unknown as { _sock?: net.Socket })._sock;
      if (sock) sockets.add(sock);
      conn.on("ready", () => resolveConn(conn));
    },
  );
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as AddressInfo).port;
  const client = new ssh2.Client();
  client.on("error", () => {});
  opts.beforeConnect?.(client);
  client.connect({
    host: "127.0.0.1",
    port,
    username: "test",
    readyTimeout: 5000,
    ...(opts.algorithms ? { algorithms: opts.algorithms } : {}),
  });
  await once(client, "ready");
  const conn = await connReady;
  const clientSock = (client as unknown as { _sock?: net.Socket })._sock;
  if (clientSock) sockets.add(clientSock);

  // One forwardIn for the whole pair; each serverChannel() opens a forwarded-tcpip on it.
  let forwardPort: number | undefined;
  const pendingTcp: ((ch: Channel) => void)[] = [];
  client.on("tcp connection", (_info, accept) => {
    const ch = accept();
    pendingTcp.shift()?.(ch);
  });

  pair = {
    server,
    client,
    conn,
    async serverChannel() {
      if (forwardPort === undefined) {
        forwardPort = await new Promise<number>((resolve, reject) =>
          client.forwardIn("127.0.0.1", 0, (err, p) => (err ? reject(err) : resolve(p))),
        );
      }
      const clientSide = new Promise<Channel>((r) => pendingTcp.push(r));
      const serverSide = await new Promise<Channel>((resolve, reject) =>
        conn.forwardOut("127.0.0.1", forwardPort ?? 0, "127.0.0.1", 1, (err, ch) =>
          err ? reject(err) : resolve(ch),
        ),
      );
      return { server: serverSide, client: await clientSide };
    },
    async clientChannel() {
      const previous = pair?.onTcpip;
      const serverSide = new Promise<Channel>((resolve) => {
        if (pair)
          pair.onTcpip = (accept) => {
            if (pair) pair.onTcpip = previous;
            resolve(accept());
          };
      });
      const clientSide = await new Promise<Channel>((resolve, reject) =>
        client.forwardOut("127.0.0.1", 1, "127.0.0.1", 2, (err, ch) => (err ? reject(err) : resolve(ch))),
      );
      return { client: clientSide, server: await serverSide };
    },
    async close() {
      client.end();
      client.destroy();
      conn.end();
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  return pair;
}
