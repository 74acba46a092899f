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
import { hash4 } from './flowhash.js';
import { formatIpv4, parseIpv4 } from '../net/addr.js';

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

/** Slot -> target address (host-order uint32; 0 = no target). */
export function buildMaglev(targets: readonly WeightedTarget[], size = MAGLEV_SIZE): Uint32Array {
  if (!isPrime(size)) throw new RangeError(`Maglev table size ${size} is not a prime`);
  const seen = new Set<number>();
  const live: Array<{ addr: number; weight: number }> = [];
  for (const t of targets) {
    const addr = parseIpv4(t.addr);
    if (addr === 0) throw new RangeError('target 0.0.0.0 is not an address (0 marks an empty slot)');
    if (seen.has(addr)) throw new RangeError(`duplicate target ${t.addr}`);
    seen.add(addr);
    if (!Number.isInteger(t.weight) || t.weight < 0)
      throw new RangeError(`target ${t.addr}: weight ${t.weight} is not an integer >= 0`);
    if (t.weight > 0) live.push({ addr, weight: t.weight });
  }
  const table = new Uint32Array(size);
  if (live.length === 0) return table;
  if (live.length > size) throw new RangeError(`${live.length} targets do not fit a table of ${size} slots`);
  live.sort((a, b) => a.addr - b.addr);

  const n = live.length;
  const pos = new Uint32Array(n);
  const skip = new Uint32Array(n);
  const credit = new Float64Array(n);
  const maxWeight = Math.max(...live.map((t) => t.weight));
  for (let i = 0; i < n; i++) {
    pos[i] = hash4(live[i].addr, 0, 0, 0, SEED_OFFSET) % size;
    skip[i] = (hash4(live[i].addr, 0, 0, 0, SEED_SKIP) % (size - 1)) + 1;
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
      table[c] = live[i].addr;
      c += step;
      pos[i] = c >= size ? c - size : c;
      filled++;
    }
  }
  return table;
}

/** How many slots each target owns, by address. */
export function tableShares(table: Uint32Array): Map<string, number> {
  const counts = new Map<number, number>();
  for (const a of table) if (a !== 0) counts.set(a, (counts.get(a) ?? 0) + 1);
  return new Map([...counts].map(([a, n]) => [formatIpv4(a), n]));
}
