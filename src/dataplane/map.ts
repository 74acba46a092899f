/*
 * Typed access to one BPF map: keys and values go through the struct codecs, and every
 * failure names the map. Batch operations move whole tables in a few syscalls.
 */
import type { Struct } from './codec.js';
import { mapRef, type MapRef } from '../kernel/object.js';
import { sys } from '../kernel/sys.js';

export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;

/** Entries per batch syscall: large enough to amortise, small enough for modest buffers. */
const BATCH = 8192;

/** Every key of a map, one syscall each (bpf_map_get_next_key). */
function* rawKeys(name: string, map: MapRef, size: number): Generator<Buffer> {
  let cur: Buffer | null = null;
  for (;;) {
    const next = Buffer.alloc(size);
    if (!sys.mapGetNextKey(name, map, cur, next)) return;
    yield next;
    cur = next;
  }
}

export class BpfMap<K, V> {
  /** The map's size, as the kernel has it. */
  readonly maxEntries: number;
  /** The fd with the map's info, read once: no info syscall per operation. */
  private readonly map: MapRef;

  constructor(
    readonly name: string,
    readonly fd: number,
    readonly key: Struct<K>,
    readonly value: Struct<V>,
  ) {
    this.map = mapRef(name, fd);
    const info = sys.mapInfo(name, this.map);
    if (info.keySize !== key.size || info.valueSize !== value.size) {
      throw new TypeError(
        `map ${name}: kernel has key/value ${info.keySize}/${info.valueSize} bytes, ` +
          `user space expects ${key.size}/${value.size} (${key.cName}/${value.cName}): rebuild, or remove stale pins`,
      );
    }
    this.maxEntries = info.maxEntries;
  }

  get(k: K): V | undefined {
    const v = Buffer.alloc(this.value.size);
    return sys.mapLookup(this.name, this.map, this.key.encode(k), v) ? this.value.decode(v) : undefined;
  }

  set(k: K, v: V, flags = BPF_ANY): void {
    sys.mapUpdate(this.name, this.map, this.key.encode(k), this.value.encode(v), flags);
  }

  /** Returns false if the key was not there. */
  delete(k: K): boolean {
    return sys.mapDelete(this.name, this.map, this.key.encode(k));
  }

  *keys(): Generator<K> {
    for (const k of rawKeys(this.name, this.map, this.key.size)) yield this.key.decode(k);
  }

  setBatch(entries: ReadonlyArray<readonly [K, V]>, flags = BPF_ANY): void {
    for (let i = 0; i < entries.length; i += BATCH) {
      const chunk = entries.slice(i, i + BATCH);
      const keys = Buffer.alloc(chunk.length * this.key.size);
      const values = Buffer.alloc(chunk.length * this.value.size);
      chunk.forEach(([k, v], j) => {
        this.key.encode(k, keys, j * this.key.size);
        this.value.encode(v, values, j * this.value.size);
      });
      this.setBatchRaw(keys, values, chunk.length, flags);
    }
  }

  /** Pre-encoded keys and values, for callers that build large tables directly. */
  setBatchRaw(keys: Buffer, values: Buffer, count: number, flags = BPF_ANY): void {
    for (let done = 0; done < count; done += BATCH) {
      const n = Math.min(BATCH, count - done);
      sys.mapUpdateBatch(
        this.name,
        this.map,
        keys.subarray(done * this.key.size, (done + n) * this.key.size),
        values.subarray(done * this.value.size, (done + n) * this.value.size),
        n,
        flags,
      );
    }
  }

  deleteBatch(keys: readonly K[]): number {
    let deleted = 0;
    for (let i = 0; i < keys.length; i += BATCH) {
      const chunk = keys.slice(i, i + BATCH);
      const buf = Buffer.alloc(chunk.length * this.key.size);
      chunk.forEach((k, j) => this.key.encode(k, buf, j * this.key.size));
      deleted += sys.mapDeleteBatch(this.name, this.map, buf, chunk.length);
    }
    return deleted;
  }

  /** Every entry, read BATCH at a time with BPF_MAP_LOOKUP_BATCH. */
  *entries(): Generator<[K, V]> {
    for (const { keys, values, count } of this.rawBatches()) {
      for (let j = 0; j < count; j++)
        yield [this.key.decode(keys, j * this.key.size), this.value.decode(values, j * this.value.size)];
    }
  }

  /** Raw batches, for callers that only count or filter. */
  *rawBatches(): Generator<{ keys: Buffer; values: Buffer; count: number }> {
    const token = Math.max(this.key.size, 8);
    let inBatch: Buffer | null = null;
    for (;;) {
      const outBatch: Buffer = Buffer.alloc(token);
      const keys = Buffer.alloc(BATCH * this.key.size);
      const values = Buffer.alloc(BATCH * this.value.size);
      const r = sys.mapLookupBatch(this.name, this.map, inBatch, outBatch, keys, values, BATCH);
      if (r.count > 0) yield { keys, values, count: r.count };
      if (r.done) return;
      inBatch = outBatch;
    }
  }

  count(): number {
    let n = 0;
    for (const b of this.rawBatches()) n += b.count;
    return n;
  }
}

/** Per-CPU values: reads sum the CPUs' copies. */
abstract class PerCpuMap<V extends object> {
  protected readonly cpus = sys.numPossibleCpus('possible CPUs');
  protected readonly stride: number;
  protected readonly map: MapRef;

  constructor(
    readonly name: string,
    readonly fd: number,
    readonly value: { size: number; decode(b: Buffer, off?: number): V },
    private readonly sum: (a: V, b: V) => V,
  ) {
    this.stride = Math.ceil(value.size / 8) * 8;
    this.map = mapRef(name, fd);
    const info = sys.mapInfo(name, this.map);
    if (info.valueSize !== value.size)
      throw new TypeError(`map ${name}: kernel value is ${info.valueSize} bytes, user space expects ${value.size}`);
  }

  protected lookupSum(key: Buffer): V | undefined {
    const buf = Buffer.alloc(this.stride * this.cpus);
    if (!sys.mapLookup(this.name, this.map, key, buf)) return undefined;
    let acc = this.value.decode(buf, 0);
    for (let c = 1; c < this.cpus; c++) acc = this.sum(acc, this.value.decode(buf, c * this.stride));
    return acc;
  }
}

/** A per-CPU array; writes set every CPU's copy. */
export class PerCpuArray<V extends object> extends PerCpuMap<V> {
  get(index: number): V {
    const key = Buffer.alloc(4);
    key.writeUInt32LE(index);
    const v = this.lookupSum(key);
    if (!v) throw new RangeError(`map ${this.name}: index ${index} out of range`);
    return v;
  }

  /** Zeroes one slot on every CPU (a service id being reused starts from 0). */
  reset(index: number): void {
    const key = Buffer.alloc(4);
    key.writeUInt32LE(index);
    sys.mapUpdate(this.name, this.map, key, Buffer.alloc(this.stride * this.cpus), BPF_ANY);
  }
}

/** A per-CPU hash, read whole. */
export class PerCpuHash<K, V extends object> extends PerCpuMap<V> {
  constructor(
    name: string,
    fd: number,
    readonly key: Struct<K>,
    value: { size: number; decode(b: Buffer, off?: number): V },
    sum: (a: V, b: V) => V,
  ) {
    super(name, fd, value, sum);
  }

  *entries(): Generator<[K, V]> {
    for (const k of rawKeys(this.name, this.map, this.key.size)) {
      const v = this.lookupSum(k);
      if (v) yield [this.key.decode(k), v];
    }
  }
}
