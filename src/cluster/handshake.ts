/*
 * How two agents prove who they are when a connection opens. Both send a HELLO (name,
 * fresh nonce, ephemeral X25519 key, the agent's run: see Transport), then an AUTH: a proof
 * over both HELLOs and their own role (dialer or listener), so a recorded HELLO or AUTH is
 * worth nothing on another connection and one side's proof cannot be reflected back as the
 * other's.
 *
 * The proof is an Ed25519 signature when the cluster has per-node identities (CLUSTER
 * IDENTITIES: each node holds its own private key and every node's public key), so that a
 * node can speak only as itself; without them it is an HMAC with the cluster key, and any
 * holder of that key can claim any name. The session key mixes the X25519 secret with the
 * cluster key: someone who knows the cluster key and watches the wire still cannot read
 * the session key or inject frames.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  randomBytes,
  sign,
  timingSafeEqual,
  verify,
  type KeyObject,
} from 'node:crypto';
import type { Hello } from './messages.js';
import { readSecretFile } from '../config/secret-file.js';

/** This node's private key and its peers' public keys (Ed25519). */
export interface Identities {
  own: KeyObject;
  peers: Map<string, KeyObject>;
  /** Where more peers' keys are read from as they appear (nodes found through etcd member records). */
  dir?: string;
}

/** A node name that is also a safe file name in the identities directory (no path, no dot first). */
export const NODE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/**
 * `node`'s public key: one loaded at start, else `dir`/`node`.pub read now (a node that joined
 * later, once its key was copied there). Undefined without one: nothing proves that name.
 */
export function publicKeyOf(ids: Identities, node: string): KeyObject | undefined {
  const known = ids.peers.get(node);
  if (known || !ids.dir || !NODE_NAME.test(node)) return known;
  let pub: KeyObject;
  try {
    pub = createPublicKey(fs.readFileSync(keyPath(ids.dir, node, 'pub')));
  } catch {
    return undefined;
  }
  if (pub.asymmetricKeyType !== 'ed25519') return undefined;
  ids.peers.set(node, pub);
  return pub;
}

/** A short, stable name of a key pair: the first 16 bytes of the SHA-256 of its public key's SPKI form, hex. */
export function keyId(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  return createHash('sha256')
    .update(pub.export({ format: 'der', type: 'spki' }))
    .digest()
    .subarray(0, 16)
    .toString('hex');
}

export type Side = 'dialer' | 'listener';

const keyPath = (dir: string, node: string, kind: 'key' | 'pub') => path.join(dir, `${node}.${kind}`);

/**
 * `dir`/`me`.key (PKCS#8 PEM, private: mode 0600 or stricter) and `dir`/`peer`.pub (SPKI
 * PEM) for every peer. Throws with the file at fault.
 */
export function loadIdentities(dir: string, me: string, peers: readonly string[]): Identities {
  const ed25519 = (k: KeyObject, file: string) => {
    if (k.asymmetricKeyType !== 'ed25519') throw new Error(`${file}: an ${k.asymmetricKeyType} key, expected Ed25519`);
    return k;
  };
  const read = <T>(file: string, parse: (text: Buffer) => T): T => {
    try {
      return parse(file.endsWith('.key') ? readSecretFile(file, 40) : fs.readFileSync(file));
    } catch (e) {
      throw new Error(`node identity ${file}: ${(e as Error).message}`, { cause: e });
    }
  };
  const ownFile = keyPath(dir, me, 'key');
  const own = ed25519(
    read(ownFile, (t) => createPrivateKey(t)),
    ownFile,
  );
  const map = new Map<string, KeyObject>();
  for (const p of peers) {
    const file = keyPath(dir, p, 'pub');
    map.set(
      p,
      ed25519(
        read(file, (t) => createPublicKey(t)),
        file,
      ),
    );
  }
  return { own, peers: map, dir };
}

/** Writes a new key pair for `node` into `dir`: `node`.key (0600) and `node`.pub. */
export function newIdentity(dir: string, node: string): { key: string; pub: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const key = keyPath(dir, node, 'key');
  const pub = keyPath(dir, node, 'pub');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(key, privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600, flag: 'wx' });
  fs.writeFileSync(pub, publicKey.export({ format: 'pem', type: 'spki' }), { flag: 'wx' });
  return { key, pub };
}

/** One side of one handshake. */
export class Handshake {
  private readonly eph = generateKeyPairSync('x25519');
  readonly hello: Hello;

  /** `run`: this agent's run (8 bytes in hex); a one-off dialer is a run of its own. */
  constructor(
    private readonly clusterKey: Buffer,
    me: string,
    private readonly ids?: Identities,
    run: string = randomBytes(8).toString('hex'),
  ) {
    const x = this.eph.publicKey.export({ format: 'jwk' }).x!;
    this.hello = {
      node: me,
      nonce: randomBytes(16).toString('hex'),
      eph: Buffer.from(x, 'base64url').toString('hex'),
      run,
    };
  }

  /** What both proofs cover: both HELLOs, in dialer-listener order. */
  static transcript(dialer: Hello, listener: Hello): Buffer {
    const fields = [
      dialer.node,
      listener.node,
      dialer.nonce,
      listener.nonce,
      dialer.eph,
      listener.eph,
      dialer.run,
      listener.run,
    ];
    return createHash('sha256')
      .update(`dvipa/3 ${JSON.stringify(fields)}`)
      .digest();
  }

  /** This node's proof, as `side`, over the transcript. */
  prove(side: Side, transcript: Buffer): string {
    const data = Buffer.concat([Buffer.from(`${side} `), transcript]);
    const proof = this.ids
      ? sign(null, data, this.ids.own)
      : createHmac('sha256', this.clusterKey).update(data).digest();
    return proof.toString('hex');
  }

  /** Whether `proof` is `peer`'s, speaking as `side`, over the transcript. */
  check(peer: string, side: Side, transcript: Buffer, proof: string): boolean {
    const data = Buffer.concat([Buffer.from(`${side} `), transcript]);
    const got = Buffer.from(proof, 'hex');
    if (!this.ids) {
      const want = createHmac('sha256', this.clusterKey).update(data).digest();
      return got.length === want.length && timingSafeEqual(got, want);
    }
    const pub = publicKeyOf(this.ids, peer);
    return pub !== undefined && got.length === 64 && verify(null, data, pub, got);
  }

  /** The key of the frames after the handshake; undefined if the peer's ephemeral key is unusable. */
  sessionKey(theirEph: string, transcript: Buffer): Buffer | undefined {
    let shared: Buffer;
    try {
      const x = Buffer.from(theirEph, 'hex').toString('base64url');
      const key = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x }, format: 'jwk' });
      shared = diffieHellman({ privateKey: this.eph.privateKey, publicKey: key });
    } catch {
      return undefined;
    }
    // An all-zero secret means a low-order point: the peer chose it, so it proves nothing.
    if (shared.every((b) => b === 0)) return undefined;
    return createHmac('sha256', this.clusterKey).update('dvipa/3 session').update(shared).update(transcript).digest();
  }
}
