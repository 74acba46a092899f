/*
 * How many entries maps hold, as the kernel counts them: since Linux 6.6 every hash and LRU
 * map keeps per-CPU counts of its inserts and deletions (evictions included), read by a BPF
 * iterator (bpf/mapcount.bpf.c). Counting a full CRT this way reads no entry: a walk of its
 * million entries costs the better part of a CPU second, in a worker or not, every scrape.
 */
import { loadObject, type BpfObject } from '../kernel/object.js';
import { sys } from '../kernel/sys.js';

/** One record of the iterator: map id u32, padding u32, entries s64 (struct map_count). */
const RECORD = 16;

export class MapCounter {
  private readonly ids: Set<number>;

  private constructor(
    private readonly obj: BpfObject,
    fds: readonly number[],
  ) {
    this.ids = new Set(fds.map((fd) => sys.mapInfo('map count', fd).id));
  }

  /** A counter of these maps; undefined where the kernel cannot count (before 6.6: no kfunc). */
  static open(fds: readonly number[]): MapCounter | undefined {
    let obj: BpfObject;
    try {
      obj = loadObject('mapcount');
    } catch {
      return undefined;
    }
    try {
      const counter = new MapCounter(obj, fds);
      counter.count();
      return counter;
    } catch {
      obj.close();
      return undefined;
    }
  }

  /** The entries of all the maps together, now. */
  count(): number {
    const out = this.obj.readIter('count_entries');
    let total = 0;
    for (let at = 0; at + RECORD <= out.length; at += RECORD)
      if (this.ids.has(out.readUInt32LE(at))) total += Number(out.readBigInt64LE(at + 8));
    return total;
  }

  close(): void {
    this.obj.close();
  }
}
