/*
 * Weighted Maglev lookup tables (Eisenbud et al., NSDI 2016). Each target walks its own
 * permutation of the slots; in every round each target earns credit in proportion to its
 * weight and, per full credit, claims its next free preferred slot. Equal weights give
 * slot counts within one of each other, and removing a target moves few other slots, so
 * connections without a CRT entry mostly keep their target when the set changes.
 *
 * The table depends only on the set of (address, weight): every routing node builds the
 * same one, which is what lets a backup find the targets of connections it never saw.
 */
import { hash4, ipv6Words } from './flowhash.js';
import { formatIpv4, ipFamily, parseIpv4 } from '../net/addr.js';

/** Slots per table: a prime, as Maglev's permutations need; the same as MAGLEV_SIZE in bpf/dvipa.h. */
export const MAGLEV_SIZE = 65537;

export interface WeightedTarget {
  addr: string;
  weight: number;
}

const SEED_OFFSET = 0x6d61676c; // "magl"
const SEED_SKIP = 0x65763031; // "ev01"

function isPrime(n: number): boolean {
  if (n < 2 || !Number.isInteger(n)) return false;
  for (let d = 2; d * d <= n; d++) if (n % d === 0) return false;
  return true;
}

/** A target's address as four host-order words: IPv4 is (addr, 0, 0, 0), so IPv4 tables stay as they were. */
function addrWords(addr: string): [number, number, number, number] {
  return ipFamily(addr) === 6 ? ipv6Words(addr) : [parseIpv4(addr), 0, 0, 0];
}

function compareWords(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < 4; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return 0;
}

/** Slot -> target address (host-order uint32; 0 = no target). IPv4 targets only. */
export function buildMaglev(targets: readonly WeightedTarget[], size = MAGLEV_SIZE): Uint32Array {
  for (const t of targets) parseIpv4(t.addr);
  const { slots, addrs } = buildMaglevIndexed(targets, size);
  const byOrdinal = [0, ...addrs.map(parseIpv4)];
  return slots.map((o) => byOrdinal[o]);
}

/**
 * Targets of either family: slot -> 1 + the target's position in `addrs` (0 = no target).
 * IPv6 targets hash by their four words, IPv4 ones as before.
 */
export function buildMaglevIndexed(
  targets: readonly WeightedTarget[],
  size = MAGLEV_SIZE,
): { slots: Uint32Array; addrs: string[] } {
  if (!isPrime(size)) throw new RangeError(`Maglev table size ${size} is not a prime`);
  const seen = new Set<string>();
  const live: Array<{ addr: string; words: [number, number, number, number]; weight: number }> = [];
  for (const t of targets) {
    const words = addrWords(t.addr);
    if (words.every((w) => w === 0)) throw new RangeError(`target ${t.addr} is not an address (0 marks an empty slot)`);
    const key = words.join(',');
    if (seen.has(key)) throw new RangeError(`duplicate target ${t.addr}`);
    seen.add(key);
    if (!Number.isInteger(t.weight) || t.weight < 0)
      throw new RangeError(`target ${t.addr}: weight ${t.weight} is not an integer >= 0`);
    if (t.weight > 0) live.push({ addr: t.addr, words, weight: t.weight });
  }
  const table = new Uint32Array(size);
  const addrs = live.sort((a, b) => compareWords(a.words, b.words)).map((t) => t.addr);
  if (live.length === 0) return { slots: table, addrs };
  if (live.length > size) throw new RangeError(`${live.length} targets do not fit a table of ${size} slots`);

  const n = live.length;
  const pos = new Uint32Array(n);
  const skip = new Uint32Array(n);
  const credit = new Float64Array(n);
  const maxWeight = Math.max(...live.map((t) => t.weight));
  for (let i = 0; i < n; i++) {
    pos[i] = hash4(...live[i].words, SEED_OFFSET) % size;
    skip[i] = (hash4(...live[i].words, SEED_SKIP) % (size - 1)) + 1;
  }
  const taken = new Uint8Array(size);
  let filled = 0;
  while (filled < size) {
    for (let i = 0; i < n && filled < size; i++) {
      credit[i] += live[i].weight;
      if (credit[i] < maxWeight) continue;
      credit[i] -= maxWeight;
      // pos + skip < 2 * size: a subtraction replaces the modulo in this, the hot loop.
      const step = skip[i];
      let c = pos[i];
      while (taken[c]) {
        c += step;
        if (c >= size) c -= size;
      }
      taken[c] = 1;
      table[c] = i + 1;
      c += step;
      pos[i] = c >= size ? c - size : c;
      filled++;
    }
  }
  return { slots: table, addrs };
}

/** How many slots each target owns, by address. */
export function tableShares(table: Uint32Array): Map<string, number> {
  const counts = new Map<number, number>();
  for (const a of table) if (a !== 0) counts.set(a, (counts.get(a) ?? 0) + 1);
  return new Map([...counts].map(([a, n]) => [formatIpv4(a), n]));
}
