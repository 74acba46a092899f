/*
 * IPsec SA records in the coupling facility: what the owner of a DVIPA keeps so that its
 * successor can re-install the kernel SAs (keys, selectors, replay state) and policies.
 * Each record is sealed with AES-256-GCM under a key derived from the cluster key (HKDF),
 * bound to its place (the etcd key is the additional data, so a record moved elsewhere does
 * not open) and stamped with the owner's epoch: records of a deposed epoch, sealed with
 * another key, or corrupt are refused with a clear error and never installed.
 */
import { DvipaError } from '../errors.js';
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import type { Policy, Sa } from './xfrm-codec.js';

const MAGIC = Buffer.from('DVS1');
const IV = 12;
const TAG = 16;

export interface SaRecord {
  dvipa: string;
  /** The owner's epoch when it wrote the record. */
  epoch: number;
  owner: string;
  savedAt: string;
  sa: Sa;
  /** The policies whose templates point at this SA's addresses. */
  policies: Policy[];
}

export class StoreError extends DvipaError {
  constructor(
    readonly key: string,
    message: string,
  ) {
    super(`${key}: ${message}`);
  }
}

/** Where a record lives, under the cluster's etcd prefix. */
export function recordKey(dvipa: string, sa: Pick<Sa, 'spi' | 'dst' | 'proto'>): string {
  return `ipsec/${dvipa}/${sa.proto}-${sa.dst}-${sa.spi.toString(16).padStart(8, '0')}`;
}

/** The store's key: never the cluster key itself, which also authenticates the transport. */
export function storeKey(clusterKey: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', clusterKey, Buffer.from('dvipa'), Buffer.from('ipsec sa store v1'), 32));
}

// JSON has neither Buffers nor bigints: both become tagged strings, and only those come back.
const replacer = (_: string, v: unknown) => {
  if (typeof v === 'bigint') return `n:${v}`;
  if (
    v &&
    typeof v === 'object' &&
    (v as { type?: string }).type === 'Buffer' &&
    Array.isArray((v as { data?: unknown }).data)
  )
    return `b:${Buffer.from((v as { data: number[] }).data).toString('base64')}`;
  return v;
};
const reviver = (_: string, v: unknown) => {
  if (typeof v !== 'string') return v;
  if (v.startsWith('n:')) return BigInt(v.slice(2));
  if (v.startsWith('b:')) return Buffer.from(v.slice(2), 'base64');
  return v;
};

/** Seals any JSON-able record (Buffers and bigints kept) at `where`: the SA records here, the IKE records in ike.ts. */
export function sealJson(key: Buffer, where: string, r: object): Buffer {
  const iv = randomBytes(IV);
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(Buffer.from(where));
  const body = Buffer.concat([c.update(JSON.stringify(r, replacer)), c.final()]);
  return Buffer.concat([MAGIC, iv, c.getAuthTag(), body]);
}

export const sealRecord = (key: Buffer, where: string, r: SaRecord): Buffer => sealJson(key, where, r);

/** Opens what sealJson sealed at `where`, or says why not: not ours, wrong key or tampered, not JSON. */
export function openJson(key: Buffer, where: string, blob: Buffer): unknown {
  if (blob.length < MAGIC.length + IV + TAG || !blob.subarray(0, MAGIC.length).equals(MAGIC))
    throw new StoreError(where, 'not a dvipa SA record');
  const iv = blob.subarray(MAGIC.length, MAGIC.length + IV);
  const tag = blob.subarray(MAGIC.length + IV, MAGIC.length + IV + TAG);
  const d = createDecipheriv('aes-256-gcm', key, iv);
  d.setAAD(Buffer.from(where));
  d.setAuthTag(tag);
  let text: string;
  try {
    text = Buffer.concat([d.update(blob.subarray(MAGIC.length + IV + TAG)), d.final()]).toString('utf8');
  } catch {
    throw new StoreError(where, 'does not open: sealed with another cluster key, moved from another place, or corrupt');
  }
  try {
    return JSON.parse(text, reviver);
  } catch {
    throw new StoreError(where, 'opens but is not JSON (written by another version?)');
  }
}

/** Opens a record, or says why not: not ours, wrong key or tampered, malformed, ahead of the DVIPA's epoch. */
export function openRecord(key: Buffer, where: string, blob: Buffer, currentEpoch: number): SaRecord {
  const r = openJson(key, where, blob) as SaRecord;
  if (typeof r?.epoch !== 'number' || typeof r.dvipa !== 'string' || !r.sa || typeof r.sa.spi !== 'number')
    throw new StoreError(where, 'opens but lacks its epoch, DVIPA or SA');
  if (r.epoch > currentEpoch)
    throw new StoreError(where, `written at epoch ${r.epoch}, ahead of the DVIPA's epoch ${currentEpoch}: refused`);
  return r;
}

/**
 * Every record of a DVIPA that may be installed, and why the others may not. Writes are
 * fenced in etcd (only the owner of the epoch writes), and a new owner replaces all records
 * with its own: a record older than the newest epoch among them is a deposed owner's.
 */
export function readRecords(
  key: Buffer,
  blobs: Map<string, Buffer>,
  currentEpoch: number,
): { records: SaRecord[]; refused: StoreError[] } {
  const refused: StoreError[] = [];
  const opened: Array<[string, SaRecord]> = [];
  for (const [where, blob] of blobs) {
    try {
      opened.push([where, openRecord(key, where, blob, currentEpoch)]);
    } catch (e) {
      if (!(e instanceof StoreError)) throw e;
      refused.push(e);
    }
  }
  const newest = Math.max(0, ...opened.map(([, r]) => r.epoch));
  const records: SaRecord[] = [];
  for (const [where, r] of opened) {
    if (r.epoch < newest)
      refused.push(
        new StoreError(
          where,
          `written at epoch ${r.epoch} by ${r.owner}, older than the newest records (epoch ${newest}): a deposed owner's, refused`,
        ),
      );
    else records.push(r);
  }
  return { records, refused };
}

/**
 * The SA as the successor installs it: outbound sequence numbers advanced by `margin` (the
 * old owner may have sent that many since its last write; a number used twice would be a
 * replay at the peer), inbound replay state as recorded. Without ESN a jump past 2^32 would
 * wrap: refused, the SA needs a re-key instead.
 */
export function forReinstall(sa: Sa, margin: number): Sa {
  if (!Number.isInteger(margin) || margin < 0) throw new RangeError(`sequence margin ${margin}: a whole number >= 0`);
  const full = BigInt(sa.replay.oseqHi) * 2n ** 32n + BigInt(sa.replay.oseq) + BigInt(margin);
  if (!sa.replay.esn && full >= 2n ** 32n)
    throw new RangeError(
      `SA ${sa.spi.toString(16)}: outbound sequence ${sa.replay.oseq} + ${margin} passes 2^32 without ESN: re-key it instead`,
    );
  if (full >= 2n ** 64n) throw new RangeError(`SA ${sa.spi.toString(16)}: outbound sequence exhausted`);
  return { ...sa, replay: { ...sa.replay, oseq: Number(full & 0xffffffffn), oseqHi: Number(full >> 32n) } };
}
