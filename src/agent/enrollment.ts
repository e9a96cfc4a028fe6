/**
 * The device's half of enrollment (docs/enrollment.md): make or read the
 * key, dial the relay, accept only a host key the token names, log in as
 * revtun-enroll, send the token and public keys over the `enroll@revtun`
 * subsystem, and write the certificates it answers with. Throws RevtunError:
 * AUTH for a refused token (`reason` says which), HOSTKEY_MISMATCH for a
 * relay the token does not name, CONNECT for the network.
 */
import { appendFile, mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import ssh2 from "ssh2";
import { ENROLL_USER } from "../relay/enrollment/certificate-login.js";
import { ENROLL_SUBSYSTEM } from "../relay/enrollment/enrollment-channel.js";
import { decodeToken } from "../relay/enrollment/token.js";
import { boundText } from "../shared/bounded-text.js";
import { RevtunError } from "../shared/errors.js";
import { fingerprintSha256, generateEd25519, keyTypeOf, parseKeyText } from "../shared/keys.js";
import { writeFileAtomic } from "../shared/write-atomic.js";
import { knownHostsName } from "./known-hosts.js";

export interface EnrollOptions {
  host: string;
  port: number;
  /** The token line (from a file or the environment; never argv). */
  token: string;
  /** The device's private key; an ed25519 key is made here (mode 600) when absent. */
  identityFile: string;
  /** sshd host public keys (`/etc/ssh/ssh_host_ed25519_key.pub`) to certify for the name. */
  hostKeyFiles?: string[];
  /** Where the relay's host key is recorded, for the tunnel that follows. */
  knownHostsFile: string;
  /** Connect, handshake and answer. Default 30 s. */
  timeoutMs?: number;
}

export interface EnrollResult {
  name: string;
  createdKey: boolean;
  certificateFile: string;
  hostCertificateFiles: string[];
  validBefore: Date;
  relayFingerprint: string;
}

/** The answer line is a certificate or two per host key: 1 MiB is far beyond any. */
const MAX_ANSWER = 1024 * 1024;

/** Refusals the relay can answer with, and the one line each prints. */
export const REFUSALS: Record<string, string> = {
  unknown: "token refused: the relay does not know it (mistyped, or made by another fleet)",
  used: "token refused: it has been used already; ask for a new one",
  expired: "token refused: it has expired; ask for a new one",
  "other-relay": "token refused: it was made for a relay with another CA; enroll with that relay",
};

export async function enroll(o: EnrollOptions): Promise<EnrollResult> {
  const token = decodeToken(o.token);
  if (token instanceof Error)
    throw new RevtunError("AUTH", `token refused: it is not a revtun enrollment token (${token.message})`, {
      reason: "auth",
    });
  const { publicKey, created } = await identity(o.identityFile);
  const hostKeys: string[] = [];
  for (const file of o.hostKeyFiles ?? []) {
    const text = await readFile(file, "utf8").catch((err: Error) => {
      throw new RevtunError("CONFIG", `cannot read host key ${file}: ${err.message}`);
    });
    const k = parseKeyText(text);
    if (k instanceof Error || k.isPrivateKey())
      throw new RevtunError("CONFIG", `host key ${file} is not a public key (give the .pub file)`);
    hostKeys.push(`${k.type} ${k.getPublicSSH().toString("base64")}`);
  }
  let relayKey: Buffer | undefined;
  const answer = await exchange(
    o,
    (key) => {
      relayKey = key;
      return token.hostKeyFingerprints.includes(fingerprintSha256(key));
    },
    `${JSON.stringify({ v: 1, token: o.token.trim(), key: publicKey, hostKeys })}\n`,
  );
  if (!relayKey) throw new RevtunError("PROTOCOL", "the relay presented no host key");
  if (answer.ok !== true) {
    const reason = typeof answer.reason === "string" ? answer.reason : "other";
    const line =
      REFUSALS[reason] ??
      `enrollment refused: ${boundText(typeof answer.message === "string" ? answer.message : reason)}`;
    throw new RevtunError("AUTH", line, { reason: "auth" });
  }
  const cert = typeof answer.certificate === "string" ? answer.certificate : "";
  const hostCerts = Array.isArray(answer.hostCertificates) ? answer.hostCertificates : [];
  const name = typeof answer.name === "string" ? answer.name : token.name;
  if (
    !/^[a-z0-9-]+-cert-v01@openssh\.com [A-Za-z0-9+/=]+ /.test(cert) ||
    hostCerts.length !== hostKeys.length
  )
    throw new RevtunError("PROTOCOL", "the relay's answer is not the certificates asked for");
  const certificateFile = `${o.identityFile}-cert.pub`;
  await writeFileAtomic(certificateFile, `${cert}\n`, 0o644);
  const hostCertificateFiles: string[] = [];
  for (const [i, file] of (o.hostKeyFiles ?? []).entries()) {
    const out = `${file.replace(/\.pub$/, "")}-cert.pub`;
    await writeFileAtomic(out, `${String(hostCerts[i])}\n`, 0o644);
    hostCertificateFiles.push(out);
  }
  await recordKnownHost(o.knownHostsFile, knownHostsName(o.host, o.port), relayKey);
  return {
    name,
    createdKey: created,
    certificateFile,
    hostCertificateFiles,
    validBefore: new Date(Number(answer.validBefore) * 1000),
    relayFingerprint: fingerprintSha256(relayKey),
  };
}

/** The public key of `file`, made (ed25519, mode 600, `.pub` beside it) if absent. */
async function identity(file: string): Promise<{ publicKey: string; created: boolean }> {
  let text: string;
  let created = false;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT")
      throw new RevtunError("IDENTITY", `cannot read identity ${file}: ${(err as Error).message}`);
    const pair = generateEd25519();
    await mkdir(dirname(file), { recursive: true, mode: 0o700 });
    await writeFile(file, pair.private, { mode: 0o600, flag: "wx" });
    await writeFile(`${file}.pub`, `${pair.public}\n`, { mode: 0o644 });
    text = pair.private;
    created = true;
  }
  const st = await stat(file);
  if ((st.mode & 0o077) !== 0)
    throw new RevtunError(
      "IDENTITY",
      `identity ${file} is readable by group or others (mode ${(st.mode & 0o777).toString(8)}): chmod 600 it`,
    );
  const key = parseKeyText(text);
  if (key instanceof Error || !key.isPrivateKey())
    throw new RevtunError("IDENTITY", `identity ${file} is not an unencrypted private key`);
  return { publicKey: `${key.type} ${key.getPublicSSH().toString("base64")}`, created };
}

/** Adds `name type key` to known_hosts unless that exact key is listed for that name. */
async function recordKnownHost(file: string, name: string, key: Buffer): Promise<void> {
  const line = `${name} ${keyTypeOf(key)} ${key.toString("base64")}`;
  const text = await readFile(file, "utf8").catch(() => "");
  if (text.split(/\r?\n/).some((l) => l.trim() === line)) return;
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  await appendFile(file, `${text === "" || text.endsWith("\n") ? "" : "\n"}${line}\n`, { mode: 0o644 });
}

/** Dials, checks the host key with `trust`, sends `request` on the subsystem, resolves the answer's JSON. */
function exchange(
  o: EnrollOptions,
  trust: (key: Buffer) => boolean,
  request: string,
): Promise<Record<string, unknown>> {
  const timeoutMs = o.timeoutMs ?? 30_000;
  return new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    let settled = false;
    let mismatch: string | undefined;
    const finish = (err: Error | undefined, value?: Record<string, unknown>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      client.end();
      client.destroy();
      if (err) reject(err);
      else resolve(value ?? {});
    };
    const timer = setTimeout(
      () =>
        finish(
          new RevtunError("CONNECT", `no answer from ${o.host}:${o.port} within ${timeoutMs} ms`, {
            reason: "timeout",
          }),
        ),
      timeoutMs,
    );
    client.on("error", (err) => {
      if (mismatch) finish(new RevtunError("HOSTKEY_MISMATCH", mismatch));
      else
        finish(
          new RevtunError("CONNECT", `cannot enroll at ${o.host}:${o.port}: ${err.message}`, {
            reason: "error",
          }),
        );
    });
    client.on("close", () =>
      finish(
        new RevtunError("CONNECT", `the relay at ${o.host}:${o.port} closed the connection before answering`),
      ),
    );
    client.on("ready", () => {
      client.subsys(ENROLL_SUBSYSTEM, (err, stream) => {
        if (err) {
          finish(
            new RevtunError(
              "PROTOCOL",
              `the relay at ${o.host}:${o.port} does not enroll devices (no --ca-key?)`,
            ),
          );
          return;
        }
        let buf = Buffer.alloc(0);
        stream.on("data", (d: Buffer) => {
          buf = Buffer.concat([buf, d]);
          const nl = buf.indexOf(10);
          if (nl < 0 && buf.length < MAX_ANSWER) return;
          try {
            const v = JSON.parse(buf.subarray(0, nl < 0 ? buf.length : nl).toString("utf8"));
            finish(undefined, typeof v === "object" && v !== null ? v : {});
          } catch {
            finish(new RevtunError("PROTOCOL", "the relay's answer is not JSON"));
          }
        });
        stream.stderr.on("data", () => {});
        stream.on("close", () =>
          finish(new RevtunError("PROTOCOL", "the relay closed the enrollment channel without an answer")),
        );
        stream.end(request);
      });
    });
    client.connect({
      host: o.host,
      port: o.port,
      username: ENROLL_USER,
      readyTimeout: timeoutMs,
      // No trust on first use: the token names the relays' host keys. Nothing
      // of the token has been sent when this runs (kex precedes authentication).
      hostVerifier: (key: Buffer) => {
        if (trust(key)) return true;
        mismatch = `relay host key ${fingerprintSha256(key)} at ${o.host}:${o.port} is not one the token names (a man in the middle, or a relay of another fleet); nothing was sent`;
        return false;
      },
      // The token is the credential, sent inside the session (docs/enrollment.md).
      authHandler: ["none"],
    });
  });
}
