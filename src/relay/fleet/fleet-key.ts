/**
 * The fleet key (`--fleet-key FILE`): one ed25519 key pair every relay of a
 * fleet is configured with. Its private half signs this relay in when it
 * dials a peer (peer-client.ts); its public half is what this relay admits
 * as a peer, with direct-tcpip to any tunnel name and nothing else. See
 * peer-client.ts for why peers need both this and the registry's host key.
 */
import { RevtunError } from "../../shared/errors.js";
import { fingerprintSha256, parseKeyText } from "../../shared/keys.js";
import { readPrivateFile } from "./fleet-secrets.js";

export interface FleetKey {
  /** OpenSSH private key text, for ssh2's Client `privateKey`. */
  privateKey: string;
  /** The public key's wire blob: the relay admits a peer whose offered key equals it. */
  publicBlob: Buffer;
  /** "ssh-ed25519 AAAA...", for an authorized_keys-style record and logs. */
  publicKey: string;
  fingerprint: string;
}

/** Reads and checks a fleet key file; a problem is a CONFIG error naming the file. */
export async function loadFleetKey(file: string): Promise<FleetKey> {
  // Every relay of the fleet trusts whoever holds this key: refuse it readable by others, as ssh does.
  return parseFleetKey(await readPrivateFile(file, "fleet key"), file);
}

export function parseFleetKey(text: string, file = "fleet key"): FleetKey {
  const key = parseKeyText(text);
  if (key instanceof Error)
    throw new RevtunError("CONFIG", `fleet key ${file} is not an unencrypted private key: ${key.message}`);
  if (!key.isPrivateKey())
    throw new RevtunError("CONFIG", `fleet key ${file} is a public key; give the private key`);
  if (key.type !== "ssh-ed25519")
    throw new RevtunError("CONFIG", `fleet key ${file} is ${key.type}; the fleet key must be ed25519`);
  const publicBlob = key.getPublicSSH();
  return {
    privateKey: text,
    publicBlob,
    publicKey: `${key.type} ${publicBlob.toString("base64")}`,
    fingerprint: fingerprintSha256(publicBlob),
  };
}

/** Whether a key a client offers is the fleet key (constant-time is not needed: public keys are public). */
export function isFleetKey(fleet: FleetKey, offeredBlob: Buffer): boolean {
  return fleet.publicBlob.equals(offeredBlob);
}
