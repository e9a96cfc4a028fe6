/**
 * The floor for any agent built on ssh2: a bare reverse forwarder with none of
 * revtun's code (no supervisor, no events, no host key check, no batching),
 * only what a forwarder cannot do without: TCP_NODELAY both ways, the channel
 * accepted once the local connect succeeds, pipe() both ways. `npm run bench
 * -- --floor` measures it against `ssh -R` as a third table, to show how much
 * of revtun's gap to OpenSSH is Node + ssh2 itself.
 *
 * Takes the subset of ssh's arguments bench/tunnels.ts passes (-p, -i, -c,
 * -R [bind:]port:host:hostport, user@host; the rest is ignored) and prints
 * ssh's "Allocated port" line.
 */
import { readFileSync } from "node:fs";
import net from "node:net";
import ssh2 from "ssh2";

const args = process.argv.slice(2);
const opt = { port: 22, key: "", cipher: "", forwards: [], user: "", host: "" };
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === "-p") opt.port = Number(args[++i]);
  else if (a === "-i") opt.key = args[++i];
  else if (a === "-c") opt.cipher = args[++i];
  else if (a === "-R") opt.forwards.push(args[++i]);
  else if (a === "-o" || a === "-F") i++;
  else if (!a.startsWith("-")) [opt.user, opt.host] = a.split("@");
}

const targets = new Map(); // remote port -> [host, port]
const client = new ssh2.Client();
client.on("ready", () => {
  client.setNoDelay(true);
  for (const spec of opt.forwards) {
    const [bind, port, host, hostPort] = spec.split(":");
    client.forwardIn(bind, Number(port), (err, allocated) => {
      if (err) throw err;
      targets.set(allocated || Number(port), [host, Number(hostPort)]);
      process.stderr.write(`Allocated port ${allocated} for remote forward to ${host}:${hostPort}\n`);
    });
  }
});
client.on("tcp connection", (info, accept, reject) => {
  const [host, port] = targets.get(info.destPort) ?? [];
  if (!host) return reject();
  const sock = net.connect({ host, port, allowHalfOpen: true, noDelay: true });
  sock.once("error", () => reject());
  sock.once("connect", () => {
    const channel = accept();
    channel.pipe(sock);
    sock.pipe(channel);
    sock.on("error", () => channel.destroy());
    channel.on("close", () => sock.destroy());
  });
});
client.on("error", (err) => {
  process.stderr.write(`ssh2-floor: ${err.message}\n`);
  process.exit(255);
});
client.connect({
  host: opt.host,
  port: opt.port,
  username: opt.user,
  privateKey: readFileSync(opt.key),
  ...(opt.cipher ? { algorithms: { cipher: [opt.cipher] } } : {}),
});
process.on("SIGTERM", () => process.exit(0));
