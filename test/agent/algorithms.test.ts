import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { cipherList, hostKeyOrder } from "../../src/agent/algorithms.js";

describe("algorithms", () => {
  test("OpenSSH's Ciphers prefixes become ssh2's append/remove/prepend", () => {
    assert.deepEqual(cipherList(["aes128-gcm@openssh.com", "aes256-ctr"]), [
      "aes128-gcm@openssh.com",
      "aes256-ctr",
    ]);
    assert.deepEqual(cipherList(["+aes256-ctr"]), { append: ["aes256-ctr"] });
    assert.deepEqual(cipherList(["-aes128-ctr", "aes192-ctr"]), { remove: ["aes128-ctr", "aes192-ctr"] });
    assert.deepEqual(cipherList(["^chacha20-poly1305@openssh.com"]), {
      prepend: ["chacha20-poly1305@openssh.com"],
    });
  });

  test("host key types known_hosts has come first, the rest keep ssh2's order", () => {
    const order = hostKeyOrder(["rsa-sha2-512", "not-an-algorithm", "ssh-ed25519"]);
    assert.deepEqual(order.slice(0, 2), ["rsa-sha2-512", "ssh-ed25519"]);
    assert.equal(order.length, 7);
    assert.ok(!order.includes("not-an-algorithm" as never));
  });
});
