/*
 * Where a flow lives in the IPv4 CRT's cache of unconfirmed flows (bpf/dvipa.h): the data
 * plane's crt_hash() and crt_set() (bpf/distributor.h), in user space. A multiplicative hash of
 * the flow's addresses in host order and its ports as x86 loads them (network-order bytes read
 * little-endian), under the cache's secret, not its Maglev hash: no other node reads the cache.
 */

/** The secret of one cache's hash (struct dvipa_crt_key): odd multipliers and a salt. */
export interface CrtKey {
  saddrMul: number;
  daddrMul: number;
  portsMul: number;
  salt: number;
}

/** A key from 16 secret bytes: four words, the multipliers made odd (an even one drops a bit of its word). */
export function crtKeyOf(secret: Buffer): CrtKey {
  if (secret.length < 16) throw new RangeError(`a CRT key takes 16 secret bytes, not ${secret.length}`);
  return {
    saddrMul: (secret.readUInt32LE(0) | 1) >>> 0,
    daddrMul: (secret.readUInt32LE(4) | 1) >>> 0,
    portsMul: (secret.readUInt32LE(8) | 1) >>> 0,
    salt: secret.readUInt32LE(12),
  };
}

/** crt_hash under `k` of the addresses and ports at `at` (as struct dvipa_flow and a cache slot both lay them out) and `proto`. */
export function crtHashAt(b: Buffer, at: number, proto: number, k: CrtKey): number {
  let h =
    Math.imul(b.readUInt32BE(at), k.saddrMul) ^
    Math.imul(b.readUInt32BE(at + 4), k.daddrMul) ^
    Math.imul(b.readUInt32LE(at + 8), k.portsMul) ^
    proto ^
    k.salt;
  h ^= h >>> 16;
  h = Math.imul(h, 0x27d4eb2f);
  return (h ^ (h >>> 15)) >>> 0;
}

/**
 * The set of a flow of crt_hash `hash` among `sets`: (hash × sets) >> 32, as crt_set() reduces
 * it, in doubles and exactly (both halves of the product stay below 2^53).
 */
export function crtSetOfHash(hash: number, sets: number): number {
  const high = Math.floor(hash / 0x10000) * sets + Math.floor(((hash % 0x10000) * sets) / 0x10000);
  return Math.floor(high / 0x10000);
}
