// The programs the tests run for real (OpenSSH's sshd and ssh, Dropbear, Redis and Sentinel, Chromium
// for the admin page, nginx and tinyproxy in front of the relay, netcat-openbsd's nc as a ProxyCommand,
// promtool for the alert rules), and the Debian packages that have them. Run before the tests: as root
// with apt-get it installs what is missing, as .ci/run does; otherwise it stops at once, naming each
// missing package and the command that installs it.
// Usage: node scripts/check-system.mjs [--install]   (--install: install even when not root, with sudo)
import { spawnSync } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { delimiter, join } from "node:path";

/** program → Debian package; absolute paths are checked as they are, names on PATH. */
const NEEDED = [
  ["/usr/sbin/sshd", "openssh-server"],
  ["ssh", "openssh-client"],
  ["ssh-keygen", "openssh-client"],
  ["/usr/sbin/dropbear", "dropbear-bin"],
  ["dropbearkey", "dropbear-bin"],
  ["redis-server", "redis-server"],
  ["/usr/bin/chromium", "chromium"],
  ["redis-sentinel", "redis-sentinel"],
  ["/usr/sbin/nginx", "nginx"],
  ["tinyproxy", "tinyproxy"],
  ["nc.openbsd", "netcat-openbsd"],
  ["promtool", "prometheus"],
];

function found(program) {
  const candidates = program.startsWith("/")
    ? [program]
    : (process.env.PATH ?? "").split(delimiter).map((d) => join(d, program));
  return candidates.some((p) => {
    try {
      accessSync(p, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

const missing = [...new Set(NEEDED.filter(([program]) => !found(program)).map(([, pkg]) => pkg))];
if (missing.length === 0) process.exit(0);

const isRoot = process.getuid?.() === 0;
const hasApt = found("apt-get");
if (hasApt && (isRoot || process.argv.includes("--install"))) {
  const sudo = isRoot ? [] : ["sudo"];
  console.error(`installing the test servers: ${missing.join(" ")}`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const run = (args) =>
    spawnSync(sudo[0] ?? args[0], sudo.length ? args : args.slice(1), { stdio: "inherit", env });
  if (
    run(["apt-get", "update", "-qq"]).status === 0 &&
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", ...missing]).status === 0
  ) {
    process.exit(0);
  }
  console.error(`could not install ${missing.join(" ")}; install them and run the tests again`);
  process.exit(1);
}
console.error(
  `the tests need ${missing.join(", ")} (real servers the suite starts itself); install with:\n  sudo apt-get install ${missing.join(" ")}`,
);
process.exit(1);
