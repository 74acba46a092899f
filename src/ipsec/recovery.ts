/*
 * IPsec recovery for a DVIPA. On its owner, the recorder keeps in the coupling facility every
 * SA whose local address is the DVIPA (outbound: source; inbound: destination), whoever
 * negotiated it, with the policies that use it; a record is rewritten when its replay state
 * or counters moved, at most once per SA per interval. On the next owner, `reinstall` reads
 * the records of the previous epoch, installs each SA with its outbound sequence numbers
 * advanced by a margin and its inbound replay state as recorded, adds the policies it does
 * not have yet, and replaces the records with its own.
 */
import type { OwnerRecord } from '../cluster/coupling.js';
import type { Logger } from '../log.js';
import { forReinstall, readRecords, recordKey, sealRecord, StoreError, type SaRecord } from './store.js';
import type { Policy, Sa } from './xfrm.js';

/** The XFRM operations recovery needs (src/ipsec/xfrm.ts in production); installs are batched. */
export interface XfrmOps {
  dumpSas(): Sa[];
  dumpPolicies(): Policy[];
  /** Each SA's error, undefined where it went in. */
  addSas(sas: Sa[], opts?: { replace?: boolean }): Array<Error | undefined>;
  putPolicies(ps: Policy[]): Array<Error | undefined>;
}

/** etcd writes in flight at once when a new owner rewrites its records. */
const WRITES_IN_FLIGHT = 64;

/** Where records live (the etcd coupling facility in production). */
export interface RecordStore {
  putBlobFenced(key: string, value: Buffer, dvipa: string, owner: OwnerRecord): Promise<boolean>;
  getBlobs(keyPrefix: string): Promise<Map<string, Buffer>>;
  deleteBlobs(keyPrefix: string): Promise<number>;
}

const prefixOf = (dvipa: string) => `ipsec/${dvipa}/`;

/** The SAs of a DVIPA and, for each, the policies whose templates lead to or from it. */
export function sasOf(dvipa: string, sas: Sa[], policies: Policy[]): Array<{ sa: Sa; policies: Policy[] }> {
  return sas.filter((s) => s.src === dvipa || s.dst === dvipa).map((sa) => ({
    sa,
    policies: policies.filter((p) => p.tmpls.some((t) => t.src === sa.src && t.dst === sa.dst && t.proto === sa.proto && (t.reqid === 0 || t.reqid === sa.reqid))),
  }));
}

/** What moves as traffic flows: a record is rewritten only when this changed. */
const progress = (sa: Sa) => `${sa.replay.oseqHi}:${sa.replay.oseq}:${sa.replay.seqHi}:${sa.replay.seq}:${sa.replay.bitmap.toString('hex')}:${sa.current?.bytes ?? 0}`;

export interface SyncResult { written: number; unchanged: number; deferred: number; fenced: boolean }

export class SaRecorder {
  private readonly last = new Map<string, { progress: string; at: number }>();

  constructor(
    private readonly xfrm: XfrmOps,
    private readonly store: RecordStore,
    private readonly key: Buffer,
    private readonly node: string,
    private readonly intervalMs: number,
  ) {}

  /** Records what changed; `fenced`: the store refused a write (this node no longer owns the DVIPA). */
  async sync(dvipa: string, owner: OwnerRecord, now = Date.now()): Promise<SyncResult> {
    const r: SyncResult = { written: 0, unchanged: 0, deferred: 0, fenced: false };
    for (const { sa, policies } of sasOf(dvipa, this.xfrm.dumpSas(), this.xfrm.dumpPolicies())) {
      const where = recordKey(dvipa, sa);
      const last = this.last.get(where);
      const p = progress(sa);
      if (last?.progress === p) {
        r.unchanged++;
        continue;
      }
      if (last && now - last.at < this.intervalMs) {
        r.deferred++;
        continue;
      }
      const record: SaRecord = { dvipa, epoch: owner.epoch, owner: this.node, savedAt: new Date(now).toISOString(), sa, policies };
      if (!(await this.store.putBlobFenced(where, sealRecord(this.key, where, record), dvipa, owner))) {
        r.fenced = true;
        return r;
      }
      this.last.set(where, { progress: p, at: now });
      r.written++;
    }
    return r;
  }
}

export interface ReinstallResult { installed: number; policies: number; refused: StoreError[]; failed: Array<{ spi: number; error: string }>; recorded: number }

/** What makes two policies the same for de-duplication (the kernel's index aside). */
const policyKey = (p: Policy) => JSON.stringify([p.dir, p.selector, p.tmpls]);

/** The new owner's half: install what the previous owner recorded, then own the records. */
export async function reinstall(xfrm: XfrmOps, store: RecordStore, key: Buffer, node: string, dvipa: string, owner: OwnerRecord, margin: number, log?: Logger): Promise<ReinstallResult> {
  const { records, refused } = readRecords(key, await store.getBlobs(prefixOf(dvipa)), owner.epoch);
  for (const e of refused) log?.error({ dvipa, err: e.message }, 'IPsec SA record refused');
  const have = new Set(xfrm.dumpPolicies().map(policyKey));
  const result: ReinstallResult = { installed: 0, policies: 0, refused, failed: [], recorded: 0 };
  const ready: SaRecord[] = [];
  for (const r of records) {
    try {
      ready.push({ ...r, sa: forReinstall(r.sa, margin) });
    } catch (e) {
      result.failed.push({ spi: r.sa.spi, error: (e as Error).message });
    }
  }
  const errors = xfrm.addSas(ready.map((r) => r.sa), { replace: true });
  const installed = ready.filter((r, i) => {
    if (!errors[i]) return true;
    result.failed.push({ spi: r.sa.spi, error: errors[i]!.message });
    return false;
  });
  result.installed = installed.length;
  for (const f of result.failed) log?.error({ dvipa, spi: f.spi.toString(16), err: f.error }, 'IPsec SA not re-installed');
  const missing: Policy[] = [];
  for (const p of installed.flatMap((r) => r.policies)) {
    if (have.has(policyKey(p))) continue;
    have.add(policyKey(p));
    missing.push(p);
  }
  const policyErrors = xfrm.putPolicies(missing);
  result.policies = policyErrors.filter((e) => !e).length;
  for (const e of policyErrors) if (e) log?.error({ dvipa, err: e.message }, 'IPsec policy not installed');
  // The previous owner's records go; ours, at our epoch, replace them.
  await store.deleteBlobs(prefixOf(dvipa));
  for (let i = 0; i < installed.length; i += WRITES_IN_FLIGHT) {
    const done = await Promise.all(installed.slice(i, i + WRITES_IN_FLIGHT).map((r) => {
      const where = recordKey(dvipa, r.sa);
      const mine: SaRecord = { ...r, epoch: owner.epoch, owner: node, savedAt: new Date().toISOString() };
      return store.putBlobFenced(where, sealRecord(key, where, mine), dvipa, owner);
    }));
    result.recorded += done.filter(Boolean).length;
  }
  return result;
}
