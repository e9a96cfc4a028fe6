/**
 * The device inventory on one relay with a state directory (issue 22 items
 * 1 and 3): a device that binds a name gets a record with its key, client
 * version and bindings; it stays listed after it disconnects, as offline
 * with "last seen"; an operator opening its name is told it is offline and
 * since when, while a name nobody ever held still gets "no tunnel"; and the
 * record survives a restart of the relay (inventory.json in --state-dir).
 * Retention: offline devices not seen for 30 days are forgotten, enrolled
 * ones (DIR/devices/<name>.json) never.
 */
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { type Client, connect, device, ed, sleep } from "../../helpers/fleet.js";
import { RelayFixture } from "../../helpers/relay.js";

/** An operator's direct-tcpip; resolves with the refusal's text (or "opened"). */
async function refusal(port: number, key: string, name: string): Promise<string> {
  const c = await connect(port, key);
  c.on("error", () => {});
  try {
    return await new Promise<string>((resolve) =>
      c.forwardOut("192.0.2.9", 4000, name, 22, (err, ch) => {
        if (err) resolve(err.message.replace(/^\(SSH\) Channel open failure: /, ""));
        else {
          ch.close();
          resolve("opened");
        }
      }),
    );
  } finally {
    c.end();
  }
}

describe("device inventory, one relay with --state-dir", () => {
  const f = new RelayFixture();
  const clients: Client[] = [];
  after(async () => {
    for (const c of clients) c.end();
    await f.cleanup();
  });

  test("online, offline with last seen, the operator's line, kept across a restart", async () => {
    const dev = ed();
    const op = ed();
    const lines = [
      `restrict,port-forwarding,permitlisten="device42:22" ${dev.public} pump-42`,
      `restrict,permitopen="device*:22" ${op.public} operator`,
    ];
    const stateDir = join(f.dir, "state");
    const options = { stateDir, inventory: { relayId: "relay-a" } };
    await f.start(lines, options);
    const c = await device(f.port, dev.private);
    clients.push(c);
    const online = f.relay.devices.list();
    assert.equal(online.devices.length, 1, "the operator's session is not a device");
    const r = online.devices[0];
    assert.ok(r);
    assert.equal(r.state, "online");
    assert.deepEqual(r.names, ["device42"]);
    assert.deepEqual(r.bindings, ["device42:22"]);
    assert.equal(r.keyComment, "pump-42");
    assert.equal(r.relayId, "relay-a");
    assert.match(r.clientVersion ?? "", /^SSH-2\.0-ssh2js/);
    assert.deepEqual(online.counts, { online: 1, offline: 0 });
    assert.equal(await refusal(f.port, op.private, "device42"), "opened");

    const before = Date.now();
    c.end();
    for (let i = 0; i < 100 && f.relay.devices.totals().offline === 0; i++) await sleep(20);
    const off = f.relay.devices.list({ state: "offline" });
    assert.equal(off.total, 1);
    assert.equal(off.devices[0]?.id, r.id);
    assert.deepEqual(off.devices[0]?.bindings, ["device42:22"], "what it bound last is kept");
    const seen = off.devices[0]?.lastSeen ?? 0;
    assert.ok(seen >= before - 1000 && seen <= Date.now(), `${seen}`);

    const why = await refusal(f.port, op.private, "device42");
    assert.match(why, /^device42 is offline \(last seen \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ on relay-a\)$/);
    assert.equal(await refusal(f.port, op.private, "device99"), "no tunnel device99:22");
    assert.equal(f.relay.devices.list({ state: "online" }).total, 0);
    assert.equal(f.relay.devices.list({ name: "DEVICE4" }).total, 1, "the name filter ignores case");
    assert.equal(f.relay.devices.list({ name: "nothing" }).total, 0);

    // A restart: the record is read back from the state directory, still offline.
    await f.relay.close();
    const file = JSON.parse(readFileSync(join(stateDir, "inventory.json"), "utf8")) as {
      devices: { id: string; online: boolean }[];
    };
    assert.deepEqual(
      file.devices.map((d) => [d.id, d.online]),
      [[r.id, false]],
    );
    await f.start(lines, options);
    const again = f.relay.devices.list();
    assert.equal(again.devices[0]?.id, r.id);
    assert.equal(again.devices[0]?.state, "offline");
    assert.equal(again.devices[0]?.lastSeen, seen);
    assert.match(
      await refusal(f.port, op.private, "device42"),
      /^device42 is offline \(last seen .* on relay-a\)$/,
    );

    // Back online: the same record, first seen kept.
    clients.push(await device(f.port, dev.private));
    const back = f.relay.devices.get(r.id);
    assert.equal(back?.state, "online");
    assert.equal(back?.firstSeen, r.firstSeen);
  });
});

describe("device inventory retention", () => {
  const f = new RelayFixture();
  after(() => f.cleanup());

  test("offline devices past the retention are forgotten at start, enrolled ones and recent ones kept", async () => {
    const stateDir = join(f.dir, "state");
    mkdirSync(join(stateDir, "devices"), { recursive: true });
    const day = 86_400_000;
    const rec = (name: string, lastSeen: number) => ({
      id: `SHA256:${name}`,
      names: [name],
      keyComment: name,
      keyType: "ssh-ed25519",
      username: "d",
      firstSeen: lastSeen,
      lastSeen,
      relayId: "relay-a",
      online: false,
      peer: "192.0.2.1:1",
      bindings: [`${name}:22`],
      connections: 0,
      connectionsTotal: 0,
      bytesIn: 0,
      bytesOut: 0,
      minutes: [],
    });
    const now = Date.now();
    writeFileSync(
      join(stateDir, "inventory.json"),
      JSON.stringify({
        v: 1,
        devices: [rec("old", now - 31 * day), rec("enrolled", now - 90 * day), rec("recent", now - 29 * day)],
        history: [],
      }),
    );
    // The enrollment's record of an enrolled device (docs/enrollment.md: DIR/devices/<name>.json).
    writeFileSync(join(stateDir, "devices", "enrolled.json"), "{}");
    await f.start([], { stateDir, inventory: { relayId: "relay-a" } });
    assert.deepEqual(
      f.relay.devices
        .list()
        .devices.map((d) => d.names[0])
        .sort(),
      ["enrolled", "recent"],
    );
    await f.relay.close();
    const file = JSON.parse(readFileSync(join(stateDir, "inventory.json"), "utf8")) as {
      devices: { id: string }[];
    };
    assert.deepEqual(file.devices.map((d) => d.id).sort(), ["SHA256:enrolled", "SHA256:recent"]);
  });
});
