/*
 * IPsec recovery for a DVIPA. On its owner, the recorder keeps in the coupling facility every
 * SA whose local address is the DVIPA (outbound: source; inbound: destination), whoever
 * negotiated it, with the policies that use it; a record is rewritten when its replay state
 * or counters moved, at most once per SA per interval. On the next owner, `reinstall` reads
 * the records of the previous epoch, installs each SA with its outbound sequence numbers
 * advanced by a margin and its inbound replay state as recorded, adds the policies it does
 * not have yet, and replaces the records with its own.
 */
import type { OwnerRecord } from '../net/ownership.js';
import type { Logger } from '../log.js';
import { forReinstall, readRecords, recordKey, sealRecord, type StoreError, type SaRecord } from './store.js';
import type { Policy, Sa, SaId } from './xfrm-codec.js';

type Awaitable<T> = T | Promise<T>;

/**
 * The XFRM operations recovery needs (src/ipsec/xfrm.ts in production); installs are batched,
 * and may run off the event loop (the kernel's batches do).
 */
export interface XfrmOps {
  dumpSas(): Sa[];
  dumpPolicies(): Policy[];
  /** Each SA's error, undefined where it went in. */
  addSas(sas: Sa[], opts?: { replace?: boolean }): Awaitable<Array<Error | undefined>>;
  putPolicies(ps: Policy[]): Awaitable<Array<Error | undefined>>;
  deleteSas(sas: SaId[]): Awaitable<Array<Error | undefined>>;
  /** Outbound packets whose policy has no SA yet are queued, not dropped (see xfrm.ts); absent: they are dropped. */
  queueUntilSa?(): void;
}

/** Records per etcd transaction (etcd allows 128 operations in one by default). */
const PER_TXN = 100;
/** etcd transactions in flight at once. */
const TXNS_IN_FLIGHT = 8;

/** Where records live (the etcd coupling facility in production). */
export interface RecordStore {
  /** All or none, while `owner` owns the DVIPA; false: fenced off. */
  putBlobsFenced(entries: Array<[string, Buffer]>, dvipa: string, owner: OwnerRecord): Promise<boolean>;
  getBlobs(keyPrefix: string): Promise<Map<string, Buffer>>;
  deleteBlobsFenced(keyPrefix: string, dvipa: string, owner: OwnerRecord): Promise<boolean>;
}

export const prefixOf = (dvipa: string) => `ipsec/${dvipa}/`;

/**
 * Fenced store operations on groups of `size` items, TXNS_IN_FLIGHT groups at a time
 * (thousands of records one by one take seconds); `done` for each item that went through.
 * False: one was refused (fenced off), and nothing after it was tried.
 */
async function fenced<T>(
  items: T[],
  size: number,
  op: (group: T[]) => Promise<boolean>,
  done: (t: T) => void,
): Promise<boolean> {
  const groups = Array.from({ length: Math.ceil(items.length / size) }, (_, i) =>
    items.slice(i * size, (i + 1) * size),
  );
  for (let i = 0; i < groups.length; i += TXNS_IN_FLIGHT) {
    const wave = groups.slice(i, i + TXNS_IN_FLIGHT);
    const ok = await Promise.all(wave.map(op));
    wave.forEach((g, k) => ok[k] && g.forEach(done));
    if (ok.includes(false)) return false;
  }
  return true;
}

/** The SAs of a DVIPA and, for each, the policies whose templates lead to or from it. */
export function sasOf(dvipa: string, sas: Sa[], policies: Policy[]): Array<{ sa: Sa; policies: Policy[] }> {
  // Indexed by tunnel ends: thousands of SAs each against thousands of policies is too slow a scan.
  const ends = (x: { src: string; dst: string; proto: string }) => `${x.src}|${x.dst}|${x.proto}`;
  const byEnds = new Map<string, Policy[]>();
  for (const p of policies) {
    for (const k of new Set(p.tmpls.map(ends))) {
      const list = byEnds.get(k);
      if (list) list.push(p);
      else byEnds.set(k, [p]);
    }
  }
  return sas
    .filter((s) => s.src === dvipa || s.dst === dvipa)
    .map((sa) => ({
      sa,
      policies: (byEnds.get(ends(sa)) ?? []).filter((p) =>
        p.tmpls.some((t) => ends(t) === ends(sa) && (t.reqid === 0 || t.reqid === sa.reqid)),
      ),
    }));
}

/** What moves as traffic flows: a record is rewritten only when this changed. */
const progress = (sa: Sa) =>
  `${sa.replay.oseqHi}:${sa.replay.oseq}:${sa.replay.seqHi}:${sa.replay.seq}:${sa.replay.bitmap.toString('hex')}:${sa.current?.bytes ?? 0}`;

export interface SyncResult {
  written: number;
  unchanged: number;
  deferred: number;
  removed: number;
  fenced: boolean;
}

export class SaRecorder {
  /** Per DVIPA, per record key: what was last written and when. */
  private readonly last = new Map<string, Map<string, { progress: string; at: number }>>();
  /** Per DVIPA, record keys in the store that this recorder has not written (a predecessor's, or this node's before a restart). */
  private readonly unknown = new Map<string, Set<string>>();

  constructor(
    private readonly xfrm: XfrmOps,
    private readonly store: RecordStore,
    private readonly key: Buffer,
    private readonly node: string,
    private readonly intervalMs: number,
  ) {}

  /** When this node last wrote a record of the DVIPA. */
  lastWrite(dvipa: string): number | undefined {
    const times = [...(this.last.get(dvipa)?.values() ?? [])].map((l) => l.at);
    return times.length ? Math.max(...times) : undefined;
  }

  /**
   * The store holds the DVIPA's records of exactly these SAs, just written (reinstall replaced
   * them all): not rewritten until they move, and no other record to look for.
   */
  seed(dvipa: string, sas: Sa[], now = Date.now()): void {
    const mine = this.mine(dvipa);
    for (const sa of sas) mine.set(recordKey(dvipa, sa), { progress: progress(sa), at: now });
    this.unknown.set(dvipa, new Set());
  }

  /** This node no longer owns the DVIPA: its next ownership starts from the store again. */
  forget(dvipa: string): void {
    this.last.delete(dvipa);
    this.unknown.delete(dvipa);
  }

  private mine(dvipa: string): Map<string, { progress: string; at: number }> {
    let m = this.last.get(dvipa);
    if (!m) this.last.set(dvipa, (m = new Map<string, { progress: string; at: number }>()));
    return m;
  }

  /**
   * Records what changed and removes the records of SAs that are gone (deleted, expired,
   * re-keyed); `fenced`: the store refused a write (this node no longer owns the DVIPA).
   */
  async sync(dvipa: string, owner: OwnerRecord, now = Date.now()): Promise<SyncResult> {
    const r: SyncResult = { written: 0, unchanged: 0, deferred: 0, removed: 0, fenced: false };
    const mine = this.mine(dvipa);
    let unknown = this.unknown.get(dvipa);
    if (!unknown) {
      unknown = new Set([...(await this.store.getBlobs(prefixOf(dvipa))).keys()].filter((k) => !mine.has(k)));
      this.unknown.set(dvipa, unknown);
    }
    const present = new Set<string>();
    const writes: Array<{ where: string; progress: string; record: SaRecord }> = [];
    for (const { sa, policies } of sasOf(dvipa, this.xfrm.dumpSas(), this.xfrm.dumpPolicies())) {
      const where = recordKey(dvipa, sa);
      present.add(where);
      const last = mine.get(where);
      const p = progress(sa);
      if (last?.progress === p) {
        r.unchanged++;
        continue;
      }
      if (last && now - last.at < this.intervalMs) {
        r.deferred++;
        continue;
      }
      writes.push({
        where,
        progress: p,
        record: { dvipa, epoch: owner.epoch, owner: this.node, savedAt: new Date(now).toISOString(), sa, policies },
      });
    }
    const gone = [...mine.keys(), ...unknown].filter((k) => !present.has(k));
    const seal = (ws: typeof writes) =>
      ws.map((w): [string, Buffer] => [w.where, sealRecord(this.key, w.where, w.record)]);
    const written = await fenced(
      writes,
      PER_TXN,
      (ws) => this.store.putBlobsFenced(seal(ws), dvipa, owner),
      (w) => {
        mine.set(w.where, { progress: w.progress, at: now });
        unknown.delete(w.where);
        r.written++;
      },
    );
    if (!written) return { ...r, fenced: true };
    const removed = await fenced(
      gone,
      1,
      ([where]) => this.store.deleteBlobsFenced(where, dvipa, owner),
      (where) => {
        mine.delete(where);
        unknown.delete(where);
        r.removed++;
      },
    );
    return removed ? r : { ...r, fenced: true };
  }
}

export interface ReinstallResult {
  /** The SAs now in the kernel, as installed (sequence numbers advanced). */
  installed: Sa[];
  policies: number;
  refused: StoreError[];
  failed: Array<{ spi: number; error: string }>;
  recorded: number;
  /** False: this node lost the DVIPA while it re-installed; its records were not written. */
  owner: boolean;
  /** Milliseconds: reading and opening the records, installing the SAs, the policies, rewriting the records. */
  phases: { readMs: number; saMs: number; policyMs: number; recordMs: number };
}

/** Writes `records` as this node's, at its epoch, `written` for each; false: fenced off (no longer the owner). */
export async function writeRecords(
  store: RecordStore,
  key: Buffer,
  node: string,
  dvipa: string,
  owner: OwnerRecord,
  records: SaRecord[],
  written: () => void,
): Promise<boolean> {
  const savedAt = new Date().toISOString();
  const seal = (r: SaRecord): [string, Buffer] => {
    const where = recordKey(dvipa, r.sa);
    return [where, sealRecord(key, where, { ...r, epoch: owner.epoch, owner: node, savedAt })];
  };
  return fenced(records, PER_TXN, (rs) => store.putBlobsFenced(rs.map(seal), dvipa, owner), written);
}

/** What makes two policies the same for de-duplication (the kernel's index aside). */
const policyKey = (p: Policy) => JSON.stringify([p.dir, p.selector, p.tmpls]);

/**
 * The new owner's half: install what the previous owner recorded, then own the records.
 * `inKernel` is called once the SAs and policies are in, before the records are rewritten.
 */
export async function reinstall(
  xfrm: XfrmOps,
  store: RecordStore,
  key: Buffer,
  node: string,
  dvipa: string,
  owner: OwnerRecord,
  margin: number,
  log?: Logger,
  inKernel?: () => void,
): Promise<ReinstallResult> {
  let at = performance.now();
  const lap = () => {
    const was = at;
    at = performance.now();
    return Math.round(at - was);
  };
  const { records, refused } = readRecords(key, await store.getBlobs(prefixOf(dvipa)), owner.epoch);
  for (const e of refused) log?.error({ dvipa, err: e.message }, 'IPsec SA record refused');
  const have = new Set(xfrm.dumpPolicies().map(policyKey));
  const result: ReinstallResult = {
    installed: [],
    policies: 0,
    refused,
    failed: [],
    recorded: 0,
    owner: true,
    phases: { readMs: lap(), saMs: 0, policyMs: 0, recordMs: 0 },
  };
  const ready: SaRecord[] = [];
  for (const r of records) {
    try {
      // Only what the DVIPA sends moves on: an inbound SA's replay state is the peer's numbering.
      ready.push({ ...r, sa: forReinstall(r.sa, r.sa.src === dvipa ? margin : 0) });
    } catch (e) {
      result.failed.push({ spi: r.sa.spi, error: (e as Error).message });
    }
  }
  const errors = await xfrm.addSas(
    ready.map((r) => r.sa),
    { replace: true },
  );
  const installed = ready.filter((r, i) => {
    if (!errors[i]) return true;
    result.failed.push({ spi: r.sa.spi, error: errors[i].message });
    return false;
  });
  result.installed = installed.map((r) => r.sa);
  result.phases.saMs = lap();
  for (const f of result.failed)
    log?.error({ dvipa, spi: f.spi.toString(16), err: f.error }, 'IPsec SA not re-installed');
  const missing: Policy[] = [];
  for (const p of installed.flatMap((r) => r.policies)) {
    if (have.has(policyKey(p))) continue;
    have.add(policyKey(p));
    missing.push(p);
  }
  const policyErrors = await xfrm.putPolicies(missing);
  result.policies = policyErrors.filter((e) => !e).length;
  for (const e of policyErrors) if (e) log?.error({ dvipa, err: e.message }, 'IPsec policy not installed');
  result.phases.policyMs = lap();
  inKernel?.();
  // The previous owner's records go; ours, at our epoch, replace them.
  if (!(await store.deleteBlobsFenced(prefixOf(dvipa), dvipa, owner))) return { ...result, owner: false };
  if (!(await writeRecords(store, key, node, dvipa, owner, installed, () => result.recorded++)))
    return { ...result, owner: false };
  result.phases.recordMs = lap();
  return result;
}
