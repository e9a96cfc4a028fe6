/**
 * How every fleet connection to Redis is made (the registry, the password
 * probe, the device store), from a RedisTarget (fleet-options.ts): plain,
 * TLS with the server's certificate verified (`rediss://`, a CA file), an
 * ACL user name, and Redis Sentinel. ioredis does the work; this is the one
 * place that maps our options onto its.
 *
 * Sentinel: ioredis asks the sentinels for the primary's address on every
 * (re)connect, and drops a connection whose server reports it is a replica
 * (it checks ROLE), so after a failover the next reconnect lands on the new
 * primary. `failoverDetector` makes it also watch the sentinels'
 * +switch-master, so it moves without waiting for the old primary's socket
 * to time out.
 */
import type { Redis, RedisOptions } from "ioredis";
import type { RedisTarget } from "./fleet-options.js";

export function redisConnectionOptions(target: RedisTarget): RedisOptions {
  const tls = target.tls
    ? {
        // Verified (rejectUnauthorized is Node's default, said here so no one turns it off by accident).
        rejectUnauthorized: true,
        ...(target.tls.ca !== undefined ? { ca: target.tls.ca } : {}),
      }
    : undefined;
  const auth = {
    db: target.db,
    ...(target.username !== undefined ? { username: target.username } : {}),
    ...(target.password !== undefined ? { password: target.password } : {}),
  };
  if (target.sentinel) {
    return {
      ...auth,
      sentinels: target.sentinel.sentinels,
      name: target.sentinel.name,
      failoverDetector: true,
      // The sentinels get the same credentials and TLS as the primary.
      ...(target.username !== undefined ? { sentinelUsername: target.username } : {}),
      ...(target.password !== undefined ? { sentinelPassword: target.password } : {}),
      ...(tls ? { tls, enableTLSForSentinelMode: true, sentinelTLS: tls } : {}),
      // Sentinels' own reconnects: as quick as the registry's (fleet-options.ts reconnectMaxDelayMs).
      sentinelRetryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 10), 1000),
    };
  }
  return {
    ...auth,
    host: target.host,
    port: target.port,
    // Node checks the certificate against the host dialled (a name, or an IP address SAN).
    ...(tls ? { tls } : {}),
  };
}

/**
 * Keeps a client connecting for as long as its owner is open. Through
 * Sentinel, ioredis 5.11 ends a client for good ("Connection is closed",
 * status "end") when a reconnect races the sentinel connector's own retry
 * (measured: after kill -9 of the primary, the registry's client ended 1.8 s
 * later and never saw the promoted replica); a plain client never ends this
 * way, and the owner's retry strategy stays the one that paces reconnects.
 */
export function keepConnecting(client: Redis, closed: () => boolean, delayMs = 200): void {
  client.on("end", () => {
    if (closed()) return;
    setTimeout(() => {
      if (!closed() && client.status === "end") client.connect().catch(() => {});
    }, delayMs).unref();
  });
}
