/*
 * The IPv4 CRT's unconfirmed flows (map `crt`): a set-associative cache in an mmapable array
 * (bpf/dvipa.h). User space reads and writes its slots in the map's memory, with the data
 * plane's protocol on each slot's `seq` (bpf/distributor.h): a writer claims a slot by moving
 * `seq` from even to odd with a compare-and-swap, writes, and makes it even again; a reader
 * keeps what it read only if `seq` was even and the same before and after. So a packet on
 * another CPU never takes half of a slot user space is writing, and user space never takes
 * half of one a packet is writing. The protocol's user-space side is the addon's (seqRead,
 * seqWrite): V8's Atomics are not atomic on memory that is not a SharedArrayBuffer (a test
 * with them left slots claimed for good).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import {
  flow as flowCodec,
  crtKey as crtKeyCodec,
  crtSlot,
  CRT_WAYS,
  u32,
  type CrtEntry,
  type CrtOrigin,
  type CrtSlot,
} from './structs.js';
import { BpfMap } from './map.js';
import { DvipaError } from '../errors.js';
import { mapRef } from '../kernel/object.js';
import { sys } from '../kernel/sys.js';
import type { Flow } from '../net/flow.js';
import { crtHashAt, crtKeyOf, crtSetOfHash, type CrtKey } from '../tables/crt-hash.js';

const SLOT = crtSlot.size;
const SET = SLOT * CRT_WAYS;
/** created_s counts units of 2^30 ns (bpf_ktime_get_coarse_ns() >> 30). */
const STAMP_SHIFT = 30n;
/** Where a slot's flow lies: saddr, daddr and ports as struct dvipa_flow has them, then proto. */
const KEY_AT = crtSlot.fields.find((f) => f.name === 'saddr')!.offset;
const KEY_BYTES = 12;
const PROTO = crtSlot.fields.find((f) => f.name === 'proto')!.offset;
/** Way 0's byte of the set's CLOCK hand, which the data plane moves (bpf/distributor.h crt_insert). */
const HAND = crtSlot.fields.find((f) => f.name === 'hand')!.offset;
const BOOT_ID = '/proc/sys/kernel/random/boot_id';

/**
 * The secret of the cache map of id `mapId`: a hash of this boot's random id and the map's id.
 * Every process that opens the map derives the same key, with nothing stored to race on, for
 * as long as the map lives (a map id is not reused within a boot, and pins do not outlive
 * one); no one off the machine knows the boot id, so no one there can tell which flows share
 * a set.
 */
function cacheKey(mapId: number): CrtKey {
  let boot: string;
  try {
    boot = fs.readFileSync(BOOT_ID, 'utf8').trim();
  } catch (e) {
    throw new DvipaError(`the CRT cache's key is made from ${BOOT_ID}: ${(e as Error).message}`);
  }
  return crtKeyOf(createHash('sha256').update(`dvipa crt_key ${boot} ${mapId}`).digest());
}

export class FlowCache {
  readonly name: string;
  /** Slots: the most flows the cache holds. */
  readonly maxEntries: number;
  readonly sets: number;
  /** The secret placing flows in sets, as the data plane has it (map crt_key). */
  readonly key: CrtKey;
  private readonly map: ArrayBuffer;
  private readonly mem: Buffer;

  /** The cache `name` (fd `fd`) and the map its key is in (`keyName`, fd `keyFd`), which this writes. */
  constructor(
    name: string,
    readonly fd: number,
    keyName: string,
    readonly keyFd: number,
  ) {
    this.name = name;
    const info = sys.mapInfo(name, mapRef(name, fd));
    if (info.valueSize !== SET)
      throw new TypeError(
        `map ${name}: kernel has ${info.valueSize}-byte sets, user space expects ${SET} (${CRT_WAYS} × ${crtSlot.cName}): rebuild, or remove stale pins`,
      );
    this.sets = info.maxEntries;
    this.maxEntries = info.maxEntries * CRT_WAYS;
    this.map = sys.mapMmap(name, fd);
    this.mem = Buffer.from(this.map, 0, this.sets * SET);
    this.key = cacheKey(info.id);
    // The same value from every process: a write racing another, or over the key already there, changes nothing.
    new BpfMap(keyName, keyFd, u32, crtKeyCodec).set(0, this.key);
  }

  /** The index of the set the flow lives in: the data plane's crt_set(). */
  setIndex(f: Flow): number {
    return this.setOf(flowCodec.encode(f)) / SET;
  }

  get(f: Flow): CrtEntry | undefined {
    const key = flowCodec.encode(f);
    const at = this.find(key, this.setOf(key));
    const e = at === undefined ? undefined : this.read(at);
    // What was read is the flow's, unless another writer replaced it after find().
    return e && flowCodec.encode(e[0]).equals(key) ? e[1] : undefined;
  }

  /**
   * Writes the flow's entry: over its slot if it has one, else into its set's first empty
   * slot, else over the set's first (the data plane's victim would be at the set's hand).
   */
  set(f: Flow, e: CrtEntry): void {
    const key = flowCodec.encode(f);
    const base = this.setOf(key);
    for (;;) {
      const at = this.find(key, base);
      let free: number | undefined;
      for (let w = 0; at === undefined && free === undefined && w < CRT_WAYS; w++)
        if (!this.mem[base + w * SLOT + PROTO]) free = base + w * SLOT;
      // A packet may take the slot between the look and the claim: then look again.
      const [slot, expect] = at !== undefined ? [at, holding(key)] : free !== undefined ? [free, EMPTY_SLOT] : [base];
      if (this.write(slot, { ...f, ...e }, expect)) return;
    }
  }

  setBatch(entries: ReadonlyArray<readonly [Flow, CrtEntry]>): void {
    for (const [k, v] of entries) this.set(k, v);
  }

  /** Returns false if the flow was not there. */
  delete(f: Flow): boolean {
    const key = flowCodec.encode(f);
    const at = this.find(key, this.setOf(key));
    return at !== undefined && this.write(at, undefined, holding(key));
  }

  deleteBatch(flows: readonly Flow[]): number {
    let n = 0;
    for (const f of flows) if (this.delete(f)) n++;
    return n;
  }

  *entries(): Generator<[Flow, CrtEntry]> {
    for (let at = 0; at < this.sets * SET; at += SLOT) {
      if (!this.mem[at + PROTO]) continue;
      const e = this.read(at);
      if (e) yield e;
    }
  }

  count(): number {
    let n = 0;
    for (let at = PROTO; at < this.sets * SET; at += SLOT) if (this.mem[at]) n++;
    return n;
  }

  /** The byte offset of the set of the flow encoded as `key`. */
  private setOf(key: Buffer): number {
    return this.setOfHash(crtHashAt(key, 0, key[KEY_BYTES], this.key));
  }

  /** The byte offset of the set of a flow of crt_hash `hash`. */
  private setOfHash(hash: number): number {
    return crtSetOfHash(hash, this.sets) * SET;
  }

  /** The byte offset of the slot in the set at `base` that holds the flow encoded as `key`, if one does. */
  private find(key: Buffer, base: number): number | undefined {
    for (let w = 0; w < CRT_WAYS; w++) if (this.holds(base + w * SLOT, key)) return base + w * SLOT;
    return undefined;
  }

  private holds(at: number, key: Buffer): boolean {
    return (
      this.mem[at + PROTO] === key[KEY_BYTES] &&
      key[KEY_BYTES] !== 0 &&
      this.mem.compare(key, 0, KEY_BYTES, at + KEY_AT, at + KEY_AT + KEY_BYTES) === 0
    );
  }

  /**
   * Empties the slots a writer left claimed: a process killed between its claim and its
   * release (XDP always releases) would otherwise take a slot out of its set for good, every
   * insert into it busy. A slot still claimed, by the same claim, `waitMs` after it was seen
   * is such a slot. Returns how many were emptied. Run by the node's agent when it opens the
   * data path.
   */
  async repair(waitMs = 20): Promise<number> {
    const claimed: Array<[number, number]> = [];
    for (let at = 0; at < this.sets * SET; at += SLOT) {
      const seq = this.mem.readUInt32LE(at);
      if (seq & 1) claimed.push([at, seq]);
    }
    if (!claimed.length) return 0;
    await new Promise((r) => setTimeout(r, waitMs));
    return claimed.filter(([at, seq]) => sys.seqReset(this.name, this.map, at, seq, SLOT)).length;
  }

  /**
   * Moves every flow found outside its set into it: a cache an older version filled, which
   * placed flows by another hash (the Maglev hash, then until 2026-12-03 an unkeyed one), would
   * otherwise hide them from the new program until they aged out (their packets then recovered
   * by hash, as new flows). Returns how many moved. Run by the node's agent when it opens the
   * data path, after repair().
   */
  rehome(): number {
    let moved = 0;
    for (let at = 0; at < this.sets * SET; at += SLOT) {
      const proto = this.mem[at + PROTO];
      // First from the bytes as they lie, without the protocol (a full cache of 1 Mi slots is
      // read in milliseconds, not the seconds a protected read of each takes): a slot being
      // written may look misplaced, and the protected read below decides.
      const base = at - (at % SET);
      if (!proto || this.setOfHash(crtHashAt(this.mem, at + KEY_AT, proto, this.key)) === base) continue;
      const e = this.read(at);
      if (!e) continue;
      const key = flowCodec.encode(e[0]);
      if (this.setOf(key) === base) continue;
      // Only if the slot still holds it: a packet may have replaced it since the read.
      if (!this.write(at, undefined, holding(key))) continue;
      this.set(...e);
      moved++;
    }
    return moved;
  }

  /** The slot's flow and entry, stable around the read; undefined if it was being written or is empty. */
  private read(at: number): [Flow, CrtEntry] | undefined {
    const copy = Buffer.alloc(SLOT);
    if (!sys.seqRead(this.name, this.map, at, copy)) return undefined;
    const s = crtSlot.decode(copy);
    if (!s.proto) return undefined;
    const { saddr, daddr, sport, dport, proto, target, svcId, origin, targetIdx } = s;
    return [
      { saddr, daddr, sport, dport, proto },
      { target, svcId, origin, targetIdx, createdNs: BigInt(s.createdS) << STAMP_SHIFT },
    ];
  }

  /**
   * Writes the slot (`s` undefined: empties it). With `expect`, only if the slot still holds
   * those bytes once claimed: returns whether it wrote.
   */
  private write(at: number, s: (Flow & CrtEntry) | undefined, expect?: Expected): boolean {
    // The hand is the set's, not the slot's: way 0 keeps it (a packet moving it meanwhile wins or loses, a hint either way).
    const hand = this.mem[at + HAND];
    const data = crtSlot.encode(
      s ? { ...s, seq: 0, ref: 0, hand, createdS: stampOf(s.createdNs) } : { ...EMPTY, hand },
    );
    return sys.seqWrite(this.name, this.map, at, data, expect?.at ?? 0, expect?.bytes ?? NONE);
  }
}

const NONE = Buffer.alloc(0);

/** Bytes a write expects at an offset of the slot once it holds it. */
interface Expected {
  at: number;
  bytes: Buffer;
}
/** The flow encoded as `key` still there: its addresses and ports, and its protocol after them. */
const holding = (key: Buffer): Expected => ({ at: KEY_AT, bytes: key.subarray(0, KEY_BYTES + 1) });
/** A slot seen free still empty: its protocol 0. */
const EMPTY_SLOT: Expected = { at: PROTO, bytes: Buffer.alloc(1) };

const stampOf = (ns: bigint) => Number((ns >> STAMP_SHIFT) & 0xffffffffn);

const EMPTY: CrtSlot = {
  seq: 0,
  saddr: '0.0.0.0',
  daddr: '0.0.0.0',
  sport: 0,
  dport: 0,
  proto: 0,
  origin: 0 as CrtOrigin,
  targetIdx: 0,
  target: '0.0.0.0',
  svcId: 0,
  ref: 0,
  hand: 0,
  createdS: 0,
};
