/**
 * Signature verification is real: a client that presents an authorized
 * public key but cannot sign with it is refused. OpenSSH always signs
 * correctly, so an ssh2 client with a lying agent plays the forger.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import ssh2, { type ParsedKey } from "ssh2";
import { fingerprintSha256 } from "../../src/shared/keys.js";
import { nextEvent, RelayFixture, withTimeout } from "../helpers/relay.js";

function parse(text: string): ParsedKey {
  const k = ssh2.utils.parseKey(text);
  const key = Array.isArray(k) ? k[0] : k;
  if (!key || key instanceof Error) throw new Error("unparsable test key");
  return key;
}

/** Offers `shown` (authorized) and signs with `signer` (not). */
class ForgingAgent extends ssh2.BaseAgent<ParsedKey> {
  constructor(
    private readonly shown: ParsedKey,
    private readonly signer: ParsedKey,
  ) {
    super();
  }
  getIdentities(cb: (err: Error | undefined, keys?: ParsedKey[]) => void): void {
    cb(undefined, [this.shown]);
  }
  sign(_pub: ParsedKey, data: Buffer, ...rest: unknown[]): void {
    const cb = rest.find((x) => typeof x === "function") as (err: Error | undefined, sig?: Buffer) => void;
    const sig = this.signer.sign(data);
    if (sig instanceof Error) cb(sig);
    else cb(undefined, sig);
  }
}

test("a signature from another key is refused", async () => {
  const f = new RelayFixture();
  try {
    const authorized = f.key();
    const forger = f.key();
    const relay = await f.start([authorized.pub]);
    const refused = nextEvent(relay, "auth-refused", (e) => e.reason === "bad signature");
    const client = new ssh2.Client();
    const outcome = new Promise<string>((resolve) => {
      client.on("ready", () => resolve("authenticated"));
      client.on("error", (err) => resolve(err.message));
    });
    client.connect({
      host: "127.0.0.1",
      port: f.port,
      username: "forger",
      agent: new ForgingAgent(parse(authorized.pub), parse(readFileSync(forger.file, "utf8"))),
      hostVerifier: () => true,
      readyTimeout: 10_000,
    });
    try {
      const result = await withTimeout(outcome, 15_000, "ssh2 client outcome");
      assert.match(result, /All configured authentication methods failed/);
      const [e] = await refused;
      assert.equal(e.fingerprint, fingerprintSha256(parse(authorized.pub).getPublicSSH()));
    } finally {
      client.end();
    }
  } finally {
    await f.cleanup();
  }
});
