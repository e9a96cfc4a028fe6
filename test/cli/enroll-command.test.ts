/**
 * "Adding a device" end to end, with the built CLI and real OpenSSH: a relay
 * with --ca-key and --state-dir, `revtun relay token`, `revtun enroll` on the
 * device (its sshd's host key certified), the device's sshd presenting that
 * certificate, the device's tunnel, and an operator's stock `ssh -J` with
 * only an `@cert-authority` line for the device and StrictHostKeyChecking=yes.
 * Then `kill -9` of the relay: the enrollment survives in the state
 * directory and the device logs in again after the restart.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { Revtun, runRevtun } from "../helpers/cli.js";
import { freePort, keygen, Sshd } from "../helpers/sshd.js";

function relayArgs(dir: string, port: number, adminPort: number): string[] {
  return [
    "relay",
    "--listen",
    `127.0.0.1:${port}`,
    "--host-key",
    join(dir, "relay_host"),
    "--authorized-keys",
    join(dir, "authorized_keys"),
    "--ca-key",
    join(dir, "ca"),
    "--state-dir",
    join(dir, "state"),
    "--admin",
    `127.0.0.1:${adminPort}`,
    "--host-certificate",
    join(dir, "relay_host-cert.pub"),
  ];
}

/** The device's tunnel: the command `revtun enroll` printed, pointed at the test sshd's port. */
function deviceTunnel(printed: string, sshdPort: number): Revtun {
  const m = /^ {2}revtun (-N .*)$/m.exec(printed);
  assert.ok(m?.[1], printed);
  const args = m[1]
    .split(" ")
    .map((a) => (a === "device42:22:localhost:22" ? `device42:22:127.0.0.1:${sshdPort}` : a));
  return new Revtun(["-F", "none", "-o", "StrictHostKeyChecking=yes", ...args]);
}

test("adding a device: token, enroll, host certificate, ssh -J by name; survives kill -9 of the relay", async () => {
  const dir = mkdtempSync(join(tmpdir(), "revtun-enroll-e2e-"));
  const sshd = await Sshd.start();
  let relay: Revtun | undefined;
  const devices: Revtun[] = [];
  try {
    keygen(join(dir, "ca"));
    keygen(join(dir, "relay_host"));
    // The relay's own host certificate from the same CA: operators need one @cert-authority line in all.
    execFileSync("ssh-keygen", [
      "-q",
      "-s",
      join(dir, "ca"),
      "-h",
      "-I",
      "relay",
      "-n",
      "127.0.0.1",
      join(dir, "relay_host.pub"),
    ]);
    // The operator's key may reach every device's port 22; devices need no line at all.
    const operatorPub = readFileSync(`${sshd.userKey}.pub`, "utf8").trim();
    writeFileSync(join(dir, "authorized_keys"), `permitopen="*:22" ${operatorPub}\n`);
    const port = await freePort();
    const adminPort = await freePort();
    relay = new Revtun(relayArgs(dir, port, adminPort));
    await relay.waitFor(/relay listening/);

    const token = await runRevtun([
      "relay",
      "token",
      "--name",
      "device42",
      "--admin",
      `127.0.0.1:${adminPort}`,
    ]);
    assert.equal(token.code, 0, token.stderr);
    assert.match(token.stdout, /^revtun-enroll-1\.[A-Za-z0-9_-]+\n$/);
    assert.match(token.stderr, /one-time token for device42, valid until \d{4}-/);
    writeFileSync(join(dir, "token"), token.stdout);
    chmodSync(join(dir, "token"), 0o600);

    const hostKeyPub = `${sshd.hostKeys[0]}.pub`;
    const enrolled = await runRevtun([
      "enroll",
      "--token-file",
      join(dir, "token"),
      "-i",
      join(dir, "revtun_ed25519"),
      "--host-key",
      hostKeyPub,
      "-p",
      String(port),
      "-o",
      `UserKnownHostsFile=${join(dir, "device_known_hosts")}`,
      "127.0.0.1",
    ]);
    assert.equal(enrolled.code, 0, enrolled.stderr);
    assert.match(enrolled.stdout, /^enrolled as device42 at 127\.0\.0\.1/);
    assert.match(
      enrolled.stdout,
      /\n {2}revtun -N -i \S+ -p \d+ -o UserKnownHostsFile=\S+ -R device42:22:localhost:22 127\.0\.0\.1\n$/,
    );
    assert.match(relay.stderr, /enrollment: enrolled device42 from 127\.0\.0\.1:\d+ key SHA256:/);
    assert.ok(!relay.stderr.includes(token.stdout.trim().slice(16, 60)), "the relay never logs the token");

    // The device's sshd presents the host certificate it was given.
    sshd.opts.config = [...(sshd.opts.config ?? []), `HostCertificate ${sshd.hostKeys[0]}-cert.pub`];
    await sshd.restart();

    const tunnel = deviceTunnel(enrolled.stdout, sshd.port);
    devices.push(tunnel);
    await relay.waitFor(/holds tunnel device42:22/);

    // The operator: one @cert-authority line for every device.
    const caPub = readFileSync(join(dir, "ca.pub"), "utf8").trim();
    const relayPub = readFileSync(join(dir, "relay_host.pub"), "utf8")
      .trim()
      .split(" ")
      .slice(0, 2)
      .join(" ");
    writeFileSync(
      join(dir, "operator_known_hosts"),
      `@cert-authority * ${caPub}\n[127.0.0.1]:${port} ${relayPub}\n`,
    );
    writeFileSync(
      join(dir, "operator_config"),
      [
        "Host relay",
        "  HostName 127.0.0.1",
        `  Port ${port}`,
        "Host *",
        `  UserKnownHostsFile ${join(dir, "operator_known_hosts")}`,
        "  StrictHostKeyChecking yes",
        "  BatchMode yes",
        "  IdentitiesOnly yes",
        `  IdentityFile ${sshd.userKey}`,
        "",
      ].join("\n"),
    );
    const operator = (): string =>
      execFileSync(
        "ssh",
        [
          "-F",
          join(dir, "operator_config"),
          "-J",
          "relay",
          `${sshd.user}@device42`,
          "echo hello from device42",
        ],
        {
          encoding: "utf8",
          timeout: 20_000,
          env: { ...process.env, SSH_AUTH_SOCK: "" },
        },
      );
    assert.equal(operator().trim(), "hello from device42");

    const list = await runRevtun(["relay", "devices", "--enrolled", "--admin", `127.0.0.1:${adminPort}`]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^NAME\s+FINGERPRINT\s+SERIAL\s+EXPIRES\s+ENROLLED\s+REVOKED\n/);
    assert.match(list.stdout, /\ndevice42\s+SHA256:\S+\s+\d+\s+\d{4}-\S+Z\s+\d{4}-\S+Z\s+-\n$/);

    // kill -9: nothing is flushed on the way out; the state directory must already hold the device.
    relay.proc.kill("SIGKILL");
    await relay.exited;
    relay = new Revtun(relayArgs(dir, port, adminPort));
    await relay.waitFor(/relay listening/);
    // The same agent logs in again on its own, with the certificate from before the crash.
    await relay.waitFor(/holds tunnel device42:22/, 30_000);
    assert.equal(operator().trim(), "hello from device42");
  } finally {
    for (const d of devices) await d.stop("SIGKILL");
    await relay?.stop("SIGKILL");
    await sshd.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
