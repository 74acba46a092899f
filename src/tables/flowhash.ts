/*
 * The flow hash of bpf/flowhash.h, in user space (Bob Jenkins' lookup3 mix and final on
 * host-order words). Tests and tools use it to predict where the data plane places a flow.
 */
import { parseIpv4 } from '../net/addr.js';
import type { Flow } from '../net/flow.js';

const HASH_INIT = (0xdeadbeef + (4 << 2)) >>> 0;

const rol = (x: number, k: number) => ((x << k) | (x >>> (32 - k))) >>> 0;

export function hash4(w0: number, w1: number, w2: number, w3: number, seed: number): number {
  let a = (HASH_INIT + seed + w0) >>> 0;
  let b = (HASH_INIT + seed + w1) >>> 0;
  let c = (HASH_INIT + seed + w2) >>> 0;

  a = (a - c) >>> 0;
  a = (a ^ rol(c, 4)) >>> 0;
  c = (c + b) >>> 0;
  b = (b - a) >>> 0;
  b = (b ^ rol(a, 6)) >>> 0;
  a = (a + c) >>> 0;
  c = (c - b) >>> 0;
  c = (c ^ rol(b, 8)) >>> 0;
  b = (b + a) >>> 0;
  a = (a - c) >>> 0;
  a = (a ^ rol(c, 16)) >>> 0;
  c = (c + b) >>> 0;
  b = (b - a) >>> 0;
  b = (b ^ rol(a, 19)) >>> 0;
  a = (a + c) >>> 0;
  c = (c - b) >>> 0;
  c = (c ^ rol(b, 4)) >>> 0;
  b = (b + a) >>> 0;

  a = (a + w3) >>> 0;

  c = (c ^ b) >>> 0;
  c = (c - rol(b, 14)) >>> 0;
  a = (a ^ c) >>> 0;
  a = (a - rol(c, 11)) >>> 0;
  b = (b ^ a) >>> 0;
  b = (b - rol(a, 25)) >>> 0;
  c = (c ^ b) >>> 0;
  c = (c - rol(b, 16)) >>> 0;
  a = (a ^ c) >>> 0;
  a = (a - rol(c, 4)) >>> 0;
  b = (b ^ a) >>> 0;
  b = (b - rol(a, 14)) >>> 0;
  c = (c ^ b) >>> 0;
  c = (c - rol(b, 24)) >>> 0;
  return c;
}

export function flowHash(f: Flow): number {
  return hash4(parseIpv4(f.saddr), parseIpv4(f.daddr), ((f.sport << 16) | f.dport) >>> 0, f.proto, 0);
}
