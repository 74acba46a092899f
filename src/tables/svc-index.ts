/*
 * The index the distributor looks services up in (maps svc_index and svc_index6, bpf/dvipa.h):
 * a family's services in an array of SVC_SLOTS slots, placed by linear probing from the slot
 * their key's hash names, each at most SVC_PROBES - 1 slots further. The data plane reads
 * slots from there until it finds the key or an empty slot; an array's lookups are inlined
 * by the verifier, where a hash map's lookup is a call that hashes the key.
 */
import { endianness } from 'node:os';

/** DVIPA_SVC_SLOTS: a power of two, eight times the most services a node distributes. */
export const SVC_SLOTS = 8192;
/** DVIPA_SVC_PROBES: the slots the data plane reads at most for one key. */
export const SVC_PROBES = 16;

/** The key's 32-bit words as the BPF program loads them: in the host's byte order. */
const LITTLE_ENDIAN = endianness() === 'LE';
const readWord = (b: Buffer, offset: number) => (LITTLE_ENDIAN ? b.readUInt32LE(offset) : b.readUInt32BE(offset));

/** The slot a key's probe starts at: svc_hash of bpf/distributor.h, over the encoded key. */
export function svcSlotOf(key: Buffer): number {
  let h = 0;
  for (let o = 0; o < key.length; o += 4) {
    h = Math.imul(h ^ readWord(key, o), 0x9e3779b1) >>> 0;
    h = (h ^ (h >>> 16)) >>> 0;
  }
  return h & (SVC_SLOTS - 1);
}

export interface IndexedService {
  /** The encoded key (dvipa_svc_key or dvipa_svc6_key): a whole number of words, its last never 0. */
  key: Buffer;
  /** The encoded struct dvipa_svc. */
  value: Buffer;
  /** How an error names the service. */
  name: string;
}

/**
 * The index's slots, `slotSize` bytes each (the key, then the value), for these services.
 * Keys are placed in the order given; a key whose SVC_PROBES slots are all taken is an
 * error that names it (1024 services in 8192 slots make that improbable, not impossible).
 */
export function buildSvcIndex(services: readonly IndexedService[], slotSize: number): Buffer {
  const slots = Buffer.alloc(SVC_SLOTS * slotSize);
  const taken = new Uint8Array(SVC_SLOTS);
  for (const s of services) {
    if (s.key.length % 4 || s.key.length + s.value.length > slotSize)
      throw new RangeError(
        `service index: ${s.name}: a key and value of ${s.key.length} and ${s.value.length} bytes do not fit a slot of ${slotSize}`,
      );
    // The data plane takes a slot whose last key word is 0 for an empty one.
    if (!readWord(s.key, s.key.length - 4))
      throw new RangeError(`service index: ${s.name}: the key's last word (port and protocol) is 0`);
    const start = svcSlotOf(s.key);
    let i = 0;
    while (i < SVC_PROBES && taken[(start + i) & (SVC_SLOTS - 1)]) i++;
    if (i === SVC_PROBES)
      throw new RangeError(
        `service index: ${s.name}: the ${SVC_PROBES} slots from ${start} are taken by other services`,
      );
    const at = (start + i) & (SVC_SLOTS - 1);
    taken[at] = 1;
    s.key.copy(slots, at * slotSize);
    s.value.copy(slots, at * slotSize + s.key.length);
  }
  return slots;
}
