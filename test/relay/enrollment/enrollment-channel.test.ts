/**
 * The enroll@revtun subsystem as a hostile client sees it: a request line
 * past 64 KiB is answered "invalid" (not buffered on), a second session
 * channel on the same connection is refused, other subsystems and shells
 * are refused, and a session that is not enrolling gets no session channel.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import ssh2, { type ClientChannel } from "ssh2";
import { loadCertificateAuthority } from "../../../src/relay/enrollment/certificate-authority.js";
import { ENROLL_USER } from "../../../src/relay/enrollment/certificate-login.js";
import { ENROLL_SUBSYSTEM, MAX_REQUEST_BYTES } from "../../../src/relay/enrollment/enrollment-channel.js";
import { StateDirStore } from "../../../src/relay/enrollment/state-dir-store.js";
import { withFixture, withTimeout } from "../../helpers/relay.js";
import { keygen } from "../../helpers/sshd.js";

function login(port: number): Promise<ssh2.Client> {
  return new Promise((resolve, reject) => {
    const c = new ssh2.Client();
    c.on("ready", () => resolve(c));
    c.on("error", reject);
    c.connect({
      host: "127.0.0.1",
      port,
      username: ENROLL_USER,
      authHandler: ["none"],
      hostVerifier: () => true,
    });
  });
}

const subsys = (c: ssh2.Client, name: string) =>
  new Promise<ClientChannel | Error>((resolve) => c.subsys(name, (err, ch) => resolve(err ?? ch)));

test("an oversized request is answered invalid; a second channel and other subsystems are refused", () =>
  withFixture(async (f) => {
    keygen(join(f.dir, "ca"));
    await f.start([], {
      authFailureDelayMs: 10,
      enrollment: {
        ca: await loadCertificateAuthority(join(f.dir, "ca")),
        store: await StateDirStore.open(join(f.dir, "state")),
      },
    });
    const c = await login(f.port);
    try {
      const other = await subsys(c, "sftp");
      assert.ok(other instanceof Error, "sftp refused");
      const ch = await subsys(c, ENROLL_SUBSYSTEM);
      // The relay already gave this connection its one enrollment channel (the sftp attempt used it).
      assert.ok(ch instanceof Error, "a second session channel is refused");
    } finally {
      c.end();
    }
    const d = await login(f.port);
    try {
      const ch = await subsys(d, ENROLL_SUBSYSTEM);
      assert.ok(!(ch instanceof Error));
      let answer = "";
      ch.on("data", (b: Buffer) => {
        answer += b.toString();
      });
      const closed = new Promise((r) => ch.on("close", r));
      ch.write(Buffer.alloc(MAX_REQUEST_BYTES + 1024, "a"));
      await withTimeout(closed, 5_000, "the answer");
      assert.deepEqual(JSON.parse(answer), {
        ok: false,
        reason: "invalid",
        message: `request longer than ${MAX_REQUEST_BYTES} bytes`,
      });
    } finally {
      d.end();
    }
  }));
