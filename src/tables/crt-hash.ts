/*
 * Where a flow lives in the IPv4 CRT's cache of unconfirmed flows (bpf/dvipa.h): the data
 * plane's crt_hash() and crt_set() (bpf/distributor.h), in user space. A multiplicative hash of
 * the flow's addresses in host order and its ports as x86 loads them (network-order bytes read
 * little-endian), not its Maglev hash: no other node reads the cache.
 */

/** crt_hash of the addresses and ports at `at` (as struct dvipa_flow and a cache slot both lay them out) and `proto`. */
export function crtHashAt(b: Buffer, at: number, proto: number): number {
  let h =
    Math.imul(b.readUInt32BE(at), 0x9e3779b1) ^
    Math.imul(b.readUInt32BE(at + 4), 0x85ebca77) ^
    Math.imul(b.readUInt32LE(at + 8), 0xc2b2ae3d) ^
    proto;
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
