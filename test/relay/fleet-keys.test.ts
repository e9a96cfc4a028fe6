import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import { escapeKeyPart, FleetKeyspace } from "../../src/relay/fleet/keys.js";
import { RecordMac } from "../../src/relay/fleet/record-mac.js";
import { ed } from "../helpers/fleet.js";

describe("fleet key layout", () => {
  test("a fleet named relay and a default-fleet relay with id relays never share a key", () => {
    const named = new FleetKeyspace("relay");
    const dflt = new FleetKeyspace();
    assert.equal(named.relays(), "revtun:{relay}:relays");
    assert.equal(dflt.relay("relays"), "revtun:{}:relay:relays");
    assert.notEqual(named.relays(), dflt.relay("relays"));
    // Every key of every kind over a small alphabet of awkward ids: all distinct.
    const parts = ["", "relay", "relays", "a:b", "a", "b", "{x}", "%3A", ":", "é"];
    const seen = new Map<string, string>();
    for (const f of parts)
      for (const kind of ["relay", "names", "holders", "relays"] as const)
        for (const p of parts) {
          const k = new FleetKeyspace(f).key(kind, p);
          const who = JSON.stringify([f, kind, p]);
          assert.equal(seen.get(k) ?? who, who, `${k} built twice`);
          seen.set(k, who);
        }
  });

  test("components are escaped, plain ids are left alone", () => {
    assert.equal(escapeKeyPart("relay-1.a_b"), "relay-1.a_b");
    assert.equal(escapeKeyPart("device42:22"), "device42%3A22");
    assert.equal(escapeKeyPart("{%}"), "%7B%25%7D");
    assert.equal(escapeKeyPart("é"), "%C3%A9");
    assert.equal(new FleetKeyspace("t1:").holders("dev:22"), "revtun:{t1%3A}:holders:dev%3A22");
  });
});

describe("record MACs", () => {
  const secret = randomBytes(32);
  test("a record verifies only with its own fleet, kind, fields and key", () => {
    const m = new RecordMac(secret, "f");
    const mac = m.sign("relay", ["r1", "127.0.0.1:22", "SHA256:x"]);
    assert.match(mac, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(m.verify("relay", ["r1", "127.0.0.1:22", "SHA256:x"], mac), true);
    assert.equal(m.verify("relay", ["r2", "127.0.0.1:22", "SHA256:x"], mac), false);
    assert.equal(m.verify("relay", ["r1", "127.0.0.1:2", "2SHA256:x"], mac), false, "length-prefixed");
    assert.equal(m.verify("names", ["r1", "127.0.0.1:22", "SHA256:x"], mac), false);
    assert.equal(new RecordMac(secret, "g").verify("relay", ["r1", "127.0.0.1:22", "SHA256:x"], mac), false);
    assert.equal(
      new RecordMac(randomBytes(32), "f").verify("relay", ["r1", "127.0.0.1:22", "SHA256:x"], mac),
      false,
    );
    assert.equal(
      new RecordMac(secret, "f", "inventory").verify("relay", ["r1", "127.0.0.1:22", "SHA256:x"], mac),
      false,
    );
    for (const bad of [undefined, 1, "", "x".repeat(43), `${mac}=`, { mac }])
      assert.equal(m.verify("relay", ["r1", "127.0.0.1:22", "SHA256:x"], bad), false);
  });

  test("derived from the fleet key: same key, same MACs; another key, none", () => {
    const k1 = ed().private;
    const k2 = ed().private;
    const mac = RecordMac.fromFleetKey(k1).sign("relay", ["r1"]);
    assert.equal(RecordMac.fromFleetKey(k1).verify("relay", ["r1"], mac), true);
    assert.equal(RecordMac.fromFleetKey(k2).verify("relay", ["r1"], mac), false);
  });
});
