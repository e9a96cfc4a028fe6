/**
 * `revtun relay`: runs the forwarding-only SSH relay until SIGTERM/SIGINT.
 * Parses flags, loads (or creates) the host key, logs every relay event as
 * one line, reloads authorized_keys on SIGHUP, and returns the exit code as
 * the other commands do: 0 after a signal, 2 for bad flags and configuration,
 * 255 when the relay cannot run.
 */

import { readFile } from "node:fs/promises";
import type { ParseArgsConfig } from "node:util";
import { type AdminServer, isLoopback, startAdminServer } from "../relay/admin/admin-server.js";
import { loadCertificateAuthority } from "../relay/enrollment/certificate-authority.js";
import {
  describeRelayEvent,
  RELAY_EVENT_NAMES,
  type RelayEventName,
  type RelayEvents,
} from "../relay/events.js";
import { type FleetKey, loadFleetKey } from "../relay/fleet/fleet-key.js";
import { FLEET_DEFAULTS } from "../relay/fleet/fleet-options.js";
import { probeRedisAuth } from "../relay/fleet/redis-auth.js";
import { MAX_WORKERS } from "../relay/fleet/workers.js";
import { checkHostCertificate } from "../relay/host-certificate.js";
import { Relay } from "../relay/relay.js";
import { formatHostPort } from "../shared/address.js";
import { quote } from "../shared/bounded-text.js";
import { loadRevokedKeys } from "../shared/certificates/index.js";
import { RevtunError } from "../shared/errors.js";
import { loadOrCreateHostKey, parsePublicKey } from "../shared/keys.js";
import { createLogger, type LogFormat, type Logger, RepeatCollapser, type Repeats } from "../shared/log.js";
import { type MetricsServer, parseListen } from "../shared/metrics-server.js";
import { RELAY_SYNOPSIS } from "./help.js";
import { parseLongOptions } from "./long-options.js";
import { startMetrics } from "./metrics-endpoint.js";
import { exitCodeFor, type Io, onSignals, readSecret } from "./process.js";
import {
  ENROLLMENT_FLAGS,
  ENROLLMENT_USAGE,
  type EnrollmentArgs,
  openEnrollment,
  parseEnrollmentArgs,
} from "./relay-enrollment-args.js";
import { type FleetArgs, fleetAuthHint, fleetCa, fleetPassword, parseFleetArgs } from "./relay-fleet-args.js";
import {
  checkWorkerPorts,
  leaveCluster,
  reportReady,
  runWorkers,
  workerIndex,
  workerPort,
} from "./relay-workers.js";

export const RELAY_USAGE = `usage: ${RELAY_SYNOPSIS}

  --listen [host:]port     where SSH clients connect (no host: all interfaces)
  --host-key FILE          host private key; an ed25519 key is generated there if missing
  --authorized-keys FILE   OpenSSH authorized_keys; reloaded on change and on SIGHUP
  --revoked-keys FILE      sshd's RevokedKeys: a KRL (ssh-keygen -k) or a public key list;
                           reloaded with authorized_keys; live sessions it revokes are closed
  --host-certificate FILE  sshd's HostCertificate: the host key's -cert.pub (ssh-keygen -s -h),
                           presented to clients with an @cert-authority line
  --metrics [host:]port    serve /metrics and /healthz (host defaults to 127.0.0.1)
  --admin [host:]port      serve the admin page, /api/sessions, /api/events, /metrics and
                           /healthz (host defaults to 127.0.0.1; beyond loopback a token is required)
  --admin-token-file FILE  bearer token for --admin (first line); or the env REVTUN_ADMIN_TOKEN
  --gateway-ports          let keys bind non-loopback addresses without a host permitlisten
  --max-channels N         forwarded connections one session may have open (default 256)
  --fleet redis://host:port[/db]
                           join a fleet of relays sharing tunnel names through this Redis
                           (or the env REVTUN_FLEET); operators reach devices on any member;
                           also rediss://[user@]host:port[/db] (TLS, verified) and
                           redis+sentinel://host:port[,host:port]/primary-name[/db] (Sentinel)
  --fleet-ca-file FILE     CA certificate(s), PEM, the rediss:// server's certificate must chain to
  --fleet-key FILE         the fleet's ed25519 private key (the same on every member, mode 600)
  --fleet-name NAME        the fleet's name, so several fleets share one Redis (keys under
                           revtun:NAME:; default revtun:)
  --fleet-password-file FILE
                           the Redis password (requirepass), first line, mode 600; or the
                           env REVTUN_FLEET_PASSWORD
  --relay-id ID            this relay's id in the fleet (default: hostname-port)
  --advertise host:port    where peer relays reach this one (default: the --listen address,
                           required when that is a wildcard or port 0)
  --workers N              run N relay processes sharing the port, each a fleet member
                           <relay-id>-w<index> with its own peer port on the --advertise host;
                           worker i serves --admin and --metrics on port + i (needs --fleet)
  --state-dir DIR          keep state that outlives the relay here, without --fleet (with --fleet
                           it is in Redis): device records (DIR/inventory.json) and, with
                           --ca-key, tokens and enrolled devices; created mode 700
${ENROLLMENT_USAGE}  --log-format text|json   log line format (default text)
  -v, --verbose            debug logging (every forwarded connection, ignored key options)
  -h, --help               this text
`;

/** Every flag `revtun relay` parses; the help texts are tested against this list. */
export const RELAY_OPTIONS = {
  listen: { type: "string" },
  "host-key": { type: "string" },
  "authorized-keys": { type: "string" },
  "revoked-keys": { type: "string" },
  "host-certificate": { type: "string" },
  metrics: { type: "string" },
  admin: { type: "string" },
  "admin-token-file": { type: "string" },
  "gateway-ports": { type: "boolean" },
  "max-channels": { type: "string" },
  "log-format": { type: "string" },
  fleet: { type: "string" },
  "fleet-key": { type: "string" },
  "fleet-name": { type: "string" },
  "fleet-password-file": { type: "string" },
  "fleet-ca-file": { type: "string" },
  "relay-id": { type: "string" },
  advertise: { type: "string" },
  workers: { type: "string" },
  "state-dir": { type: "string" },
  ...ENROLLMENT_FLAGS,
  verbose: { type: "boolean", short: "v", multiple: true },
  help: { type: "boolean", short: "h" },
} as const satisfies ParseArgsConfig["options"];

interface RelayArgs {
  listen: { host?: string; port: number };
  hostKey: string;
  authorizedKeys: string;
  revokedKeys?: string;
  hostCertificate?: string;
  metrics?: { host: string; port: number };
  admin?: { host: string; port: number };
  adminTokenFile?: string;
  gatewayPorts: boolean;
  maxChannels?: number;
  logFormat: LogFormat;
  verbose: boolean;
  fleet?: FleetArgs;
  workers: number;
  stateDir?: string;
  enrollment?: EnrollmentArgs;
}

/** Parses argv; throws RevtunError("USAGE") naming the bad value. Returns "help" for -h. */
export function parseRelayArgs(
  argv: string[],
  env: Record<string, string | undefined> = {},
): RelayArgs | "help" {
  const values = parseLongOptions(argv, RELAY_OPTIONS);
  if (values.help) return "help";
  const str = (name: string): string => {
    const v = values[name];
    if (typeof v !== "string" || v === "") throw new RevtunError("USAGE", `--${name} is required`);
    return v;
  };
  /** An optional flag's file name: given, it must not be empty. */
  const file = (name: string): string => {
    const v = values[name];
    if (typeof v !== "string" || v.trim() === "")
      throw new RevtunError("USAGE", `--${name} needs a file name`);
    return v;
  };
  const listenText = str("listen");
  // A bare port listens everywhere, as sshd does; [host:]port otherwise.
  const listen = /^\d+$/.test(listenText.trim())
    ? { port: parseListen(listenText, "--listen").port }
    : parseListen(listenText, "--listen");
  const format = values["log-format"] ?? "text";
  if (format !== "text" && format !== "json") {
    throw new RevtunError("USAGE", `bad --log-format ${quote(String(format))}: expected text or json`);
  }
  const metrics = values.metrics;
  const admin = values.admin;
  const adminTokenFile = values["admin-token-file"];
  if (adminTokenFile !== undefined && admin === undefined)
    throw new RevtunError("USAGE", "--admin-token-file needs --admin");
  const maxChannelsText = values["max-channels"];
  let maxChannels: number | undefined;
  if (typeof maxChannelsText === "string") {
    maxChannels = Number(maxChannelsText);
    if (!/^\d+$/.test(maxChannelsText) || maxChannels < 1 || maxChannels > 100_000)
      throw new RevtunError("USAGE", `bad --max-channels ${quote(maxChannelsText)}: expected 1 to 100000`);
  }
  const fleet = parseFleetArgs(values, listen, env);
  const enrollment = parseEnrollmentArgs(values, fleet !== undefined);
  const workersText = values.workers;
  let workers = 1;
  if (typeof workersText === "string") {
    workers = Number(workersText);
    if (!/^\d+$/.test(workersText) || workers < 1 || workers > MAX_WORKERS)
      throw new RevtunError("USAGE", `bad --workers ${quote(workersText)}: expected 1 to ${MAX_WORKERS}`);
    if (workers > 1 && !fleet)
      throw new RevtunError(
        "USAGE",
        `--workers ${workers} needs --fleet: the workers reach each other's devices through the fleet registry`,
      );
  }
  const metricsAt = typeof metrics === "string" ? parseListen(metrics, "--metrics") : undefined;
  const adminAt = typeof admin === "string" ? parseListen(admin, "--admin") : undefined;
  checkWorkerPorts(
    workers,
    [
      ...(adminAt ? [{ flag: "--admin", port: adminAt.port }] : []),
      ...(metricsAt ? [{ flag: "--metrics", port: metricsAt.port }] : []),
    ],
    listen.port,
  );
  return {
    listen,
    hostKey: str("host-key"),
    authorizedKeys: str("authorized-keys"),
    ...(values["revoked-keys"] !== undefined ? { revokedKeys: file("revoked-keys") } : {}),
    ...(values["host-certificate"] !== undefined ? { hostCertificate: file("host-certificate") } : {}),
    ...(metricsAt ? { metrics: metricsAt } : {}),
    ...(adminAt ? { admin: adminAt } : {}),
    ...(typeof adminTokenFile === "string" ? { adminTokenFile } : {}),
    gatewayPorts: values["gateway-ports"] === true,
    ...(maxChannels !== undefined ? { maxChannels } : {}),
    logFormat: format,
    verbose: Array.isArray(values.verbose) && values.verbose.length > 0,
    ...(fleet ? { fleet } : {}),
    ...(typeof values["state-dir"] === "string" ? { stateDir: str("state-dir") } : {}),
    workers,
    ...(enrollment ? { enrollment } : {}),
  };
}

/** The --host-certificate file's text; a read failure is a configuration error (exit 2). */
async function readHostCertificate(file: string): Promise<string> {
  try {
    return await readFile(file, "utf8");
  } catch (err) {
    throw new RevtunError("CONFIG", `cannot read --host-certificate ${file}: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/** Repeats of one event and reason within this window are counted, not logged (issue 12 item 8). */
export const REPEAT_WINDOW_MS = 10_000;
/** Distinct (event, reason) pairs tracked at once: bounded memory whatever peers send. */
const REPEAT_KEYS = 256;
/**
 * The refusals and failures a peer can repeat at will (one per connection
 * or request). Lifecycle records (session-closed, forward-released) are
 * never collapsed: each names a different session.
 */
const COLLAPSED: ReadonlySet<RelayEventName> = new Set<RelayEventName>([
  "connection-refused",
  "handshake-ended",
  "auth-refused",
  "forward-refused",
  "channel-refused",
  "forwarded-failed",
]);

interface Logged {
  level: "error" | "warn" | "info" | "debug";
  msg: string;
  fields: Record<string, unknown>;
}

/**
 * Logs every relay event as one record. Refusals and failures (COLLAPSED)
 * are collapsed: the same event name and reason within
 * REPEAT_WINDOW_MS is logged once, then one "… (repeated N times)" line.
 * Returns a function that stops the summary timer and writes what is pending.
 */
export function logEvents(relay: Relay, log: Logger, now: () => number = Date.now): () => void {
  const repeats = new RepeatCollapser<Logged>({ windowMs: REPEAT_WINDOW_MS, maxKeys: REPEAT_KEYS, now });
  const summarize = (ended: Repeats<Logged>[]) => {
    for (const { first, count } of ended) {
      log[first.level](
        { ...first.fields, repeated: count },
        `${first.msg} (repeated ${count} time${count === 1 ? "" : "s"})`,
      );
    }
  };
  const subscribe = <K extends RelayEventName>(name: K) => {
    const listener = (...args: RelayEvents[K]) => {
      const { level, msg } = describeRelayEvent(name, ...args);
      // Per-connection events are debug: skip building their records otherwise.
      if (!log.isLevelEnabled(level)) return;
      const fields: Record<string, unknown> = { event: name, ...(args[0] ?? {}) };
      const reason = fields.reason;
      if (COLLAPSED.has(name) && typeof reason === "string") {
        const { log: write, ended } = repeats.admit(`${name}\0${reason}`, { level, msg, fields });
        summarize(ended);
        if (!write) return;
      }
      log[level](fields, msg);
    };
    // The generic EventEmitter cannot relate K to its listener type here.
    (relay.on as (event: K, fn: (...args: RelayEvents[K]) => void) => Relay).call(relay, name, listener);
  };
  for (const name of RELAY_EVENT_NAMES) subscribe(name);
  // Ends quiet windows, so a burst's count is written within a window of its end.
  const timer = setInterval(() => summarize(repeats.flush()), REPEAT_WINDOW_MS);
  timer.unref();
  return () => {
    clearInterval(timer);
    summarize(repeats.flush(true));
  };
}

export async function relayCommand(
  argv: string[],
  io: Pick<Io, "stdout" | "stderr"> & Partial<Pick<Io, "env">>,
): Promise<number> {
  if (argv[0] === "status") {
    const { relayStatusCommand } = await import("./relay-status-command.js");
    return relayStatusCommand(argv.slice(1), { env: {}, ...io });
  }
  // Enrollment (docs/enrollment.md) and the inventory: each its own file, talking to the admin API.
  // `relay devices` lists the fleet's devices; `relay devices --enrolled` the enrolled ones.
  const subcommands = {
    token: async () => (await import("./relay-token-command.js")).relayTokenCommand,
    revoke: async () => (await import("./relay-revoke-command.js")).relayRevokeCommand,
    devices: async () =>
      argv.includes("--enrolled")
        ? (await import("./relay-devices-command.js")).relayDevicesCommand
        : (await import("./relay-status-command.js")).relayDevicesCommand,
  };
  const sub = argv[0] as keyof typeof subcommands;
  if (Object.hasOwn(subcommands, sub))
    return (await subcommands[sub]())(
      argv.slice(1).filter((a) => a !== "--enrolled"),
      { env: {}, ...io },
    );
  let args: RelayArgs | "help";
  try {
    args = parseRelayArgs(argv, io.env ?? {});
  } catch (err) {
    io.stderr.write(`revtun relay: ${(err as Error).message}\n${RELAY_USAGE}`);
    return 2;
  }
  if (args === "help") {
    io.stdout.write(RELAY_USAGE);
    return 0;
  }
  // The token is settled before anything starts: beyond loopback, no token, no relay.
  let adminToken: string | undefined;
  if (args.admin) {
    try {
      adminToken = (await readSecret(args.adminTokenFile, io.env?.REVTUN_ADMIN_TOKEN))?.trim() || undefined;
      if (adminToken === undefined && !isLoopback(args.admin.host)) {
        throw new RevtunError(
          "USAGE",
          `--admin ${formatHostPort(args.admin.host, args.admin.port)} is beyond loopback: give a token with --admin-token-file FILE or REVTUN_ADMIN_TOKEN`,
        );
      }
    } catch (err) {
      io.stderr.write(`revtun relay: ${(err as Error).message}\n`);
      return exitCodeFor(err);
    }
  }
  let worker: number | undefined;
  try {
    worker = workerIndex(io.env ?? {}, args.workers);
  } catch (err) {
    io.stderr.write(`revtun relay: ${(err as Error).message}\n`);
    return exitCodeFor(err);
  }
  const primary = args.workers > 1 && worker === undefined;
  const base = createLogger({
    format: args.logFormat,
    level: args.verbose ? "debug" : "info",
    stream: io.stderr,
  });
  // The workers share the primary's stderr: each line says whose it is.
  const log = worker === undefined ? base : base.child({ worker });
  let fleetKey: FleetKey | undefined;
  let password: string | undefined;
  if (args.fleet) {
    try {
      fleetKey = await loadFleetKey(args.fleet.keyFile);
      password = await fleetPassword(args.fleet, io.env ?? {});
      args.fleet.redis = { ...args.fleet.redis, ...(await fleetCa(args.fleet)) };
      // The primary asks once, so a wrong password is one line and exit 2, not N workers failing.
      if (primary)
        await probeRedisAuth(
          { ...args.fleet.redis, ...(password !== undefined ? { password } : {}) },
          FLEET_DEFAULTS,
        );
    } catch (err) {
      io.stderr.write(
        `revtun relay: ${(err as Error).message}${fleetAuthHint(err, args.fleet, io.env ?? {})}\n`,
      );
      return exitCodeFor(err);
    }
  }
  // The CA key is checked before anything starts, as the fleet key is: one line and exit 2.
  if (args.enrollment) {
    try {
      await loadCertificateAuthority(args.enrollment.caKeyFile);
    } catch (err) {
      io.stderr.write(`revtun relay: ${(err as Error).message}\n`);
      return exitCodeFor(err);
    }
  }
  if (primary) {
    // Here, not in each worker: N workers generating a missing key at once would each use a different one.
    try {
      const hostKey = await loadOrCreateHostKey(args.hostKey);
      const made = hostKey.created ? ` (generated a new ed25519 key in ${args.hostKey})` : "";
      // Once here, so a certificate for another key is one line and exit 2, not N workers failing.
      if (args.hostCertificate !== undefined) {
        const blob = parsePublicKey(hostKey.publicKey)?.blob ?? Buffer.alloc(0);
        checkHostCertificate(await readHostCertificate(args.hostCertificate), blob, new Date());
      }
      // And the revoked keys file: every worker would refuse to start on a bad one.
      if (args.revokedKeys !== undefined) await loadRevokedKeys(args.revokedKeys);
      io.stdout.write(`revtun relay: host key ${hostKey.fingerprint}${made}\n`);
    } catch (err) {
      io.stderr.write(`revtun relay: ${(err as Error).message}\n`);
      return exitCodeFor(err);
    }
    return runWorkers(args.workers, argv, log);
  }
  const relayId =
    args.fleet && worker !== undefined ? `${args.fleet.relayId}-w${worker}` : args.fleet?.relayId;

  // Handlers go in before anything starts: a SIGTERM while starting still
  // means a clean stop, and a SIGHUP must never fall through to its default (exit).
  let relay: Relay | undefined;
  let stopSignal: NodeJS.Signals | undefined;
  let wake: () => void = () => {};
  const stopped = new Promise<void>((resolve) => {
    wake = resolve;
  });
  const offSignals = onSignals(
    (_immediate, signal) => {
      if (stopSignal) return;
      stopSignal = signal;
      log.info({ event: "shutdown", signal }, `${signal}: closing sessions and stopping`);
      wake();
    },
    () => {
      if (!relay?.listening) return;
      log.info(
        { event: "reload" },
        `SIGHUP: reloading authorized keys${args.revokedKeys ? " and revoked keys" : ""}`,
      );
      void relay.reloadAuthorizedKeys("SIGHUP");
    },
  );

  let metrics: MetricsServer | undefined;
  let stopLogging: (() => void) | undefined;
  let admin: AdminServer | undefined;
  try {
    const hostKey = await loadOrCreateHostKey(args.hostKey);
    const made = hostKey.created ? ` (generated a new ed25519 key in ${args.hostKey})` : "";
    if (worker === undefined) io.stdout.write(`revtun relay: host key ${hostKey.fingerprint}${made}\n`);
    log.info(
      { event: "host-key", fingerprint: hostKey.fingerprint, file: args.hostKey, generated: hostKey.created },
      `host key ${hostKey.fingerprint}${made}`,
    );
    const enrollment = args.enrollment
      ? await openEnrollment(
          args.enrollment,
          args.fleet
            ? {
                redis: { ...args.fleet.redis, ...(password !== undefined ? { password } : {}) },
                prefix: args.fleet.prefix,
              }
            : undefined,
        )
      : undefined;
    const r = new Relay({
      ...(enrollment ? { enrollment } : {}),
      listen: args.listen,
      hostKey: hostKey.privateKey,
      authorizedKeysFile: args.authorizedKeys,
      ...(args.revokedKeys !== undefined ? { revokedKeysFile: args.revokedKeys } : {}),
      ...(args.hostCertificate !== undefined
        ? { hostCertificate: await readHostCertificate(args.hostCertificate) }
        : {}),
      gatewayPorts: args.gatewayPorts,
      ...(args.maxChannels !== undefined ? { limits: { maxChannelsPerSession: args.maxChannels } } : {}),
      ...(args.stateDir !== undefined ? { stateDir: args.stateDir } : {}),
      ...(args.fleet && fleetKey && relayId
        ? {
            fleet: {
              redis: { ...args.fleet.redis, ...(password !== undefined ? { password } : {}) },
              fleetKey,
              relayId,
              ...(args.fleet.prefix !== undefined ? { prefix: args.fleet.prefix } : {}),
              // A worker: peers reach it on a port of its own (see relay-workers.ts).
              ...(worker === undefined
                ? { advertise: args.fleet.advertise }
                : {
                    advertise: formatHostPort(args.fleet.advertiseHost, 0),
                    peerListen: {
                      ...(args.listen.host !== undefined ? { host: args.listen.host } : {}),
                      port: 0,
                    },
                  }),
            },
          }
        : {}),
    });
    relay = r;
    stopLogging = logEvents(r, log);
    // Before start, so the inventory sees every connection's bytes.
    if (args.admin && !stopSignal) {
      admin = await startAdminServer({
        relay: r,
        ...workerPort(args.admin, worker),
        ...(adminToken !== undefined ? { token: adminToken } : {}),
        requireToken: !isLoopback(args.admin.host),
      });
      const where = formatHostPort(admin.address.host, admin.address.port);
      log.info(
        { event: "admin-listening", ...admin.address, token: adminToken !== undefined },
        `admin page on http://${where}/${adminToken !== undefined ? " (bearer token required)" : ""}`,
      );
    }
    if (!stopSignal) await r.start();
    if (args.metrics && !stopSignal) {
      metrics = await startMetrics(
        workerPort(args.metrics, worker),
        r.registry,
        () => ({
          ok: r.listening,
          sessions: r.authenticatedSessions().length,
          forwards: r.forwards().length,
        }),
        log,
      );
    }
    if (worker !== undefined && !stopSignal) reportReady();
    await stopped;
    return 0;
  } catch (err) {
    io.stderr.write(
      `revtun relay: ${(err as Error).message}${fleetAuthHint(err, args.fleet, io.env ?? {})}\n`,
    );
    return exitCodeFor(err);
  } finally {
    await relay?.close();
    stopLogging?.();
    await metrics?.close();
    await admin?.close();
    offSignals();
    if (worker !== undefined) leaveCluster();
  }
}
