/*
 * How many entries maps hold, as the kernel counts them: since Linux 6.6 every hash and LRU
 * map keeps per-CPU counts of its inserts and deletions (evictions included), read by a BPF
 * iterator (bpf/mapcount.bpf.c). Counting a full CRT this way reads no entry: a walk of its
 * million entries costs the better part of a CPU second, in a worker or not, every scrape.
 */
import { loadObject, type BpfObject } from '../kernel/object.js';
import { sys } from '../kernel/sys.js';
import { struct } from './codec.js';

/** One record of the iterator per map. */
export const mapCount = struct<{ id: number; entries: bigint }>('dvipa_map_count', [
  ['id', 'u32'],
  ['pad', { pad: 4 }],
  ['entries', 'u64'],
]);

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
    for (let at = 0; at + mapCount.size <= out.length; at += mapCount.size) {
      const r = mapCount.decode(out, at);
      if (this.ids.has(r.id)) total += Number(r.entries);
    }
    return total;
  }

  close(): void {
    this.obj.close();
  }
}
