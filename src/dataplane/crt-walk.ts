/*
 * Walks of the CRT off the event loop. A SYN flood fills the CRT to its million entries,
 * and reading them all takes the better part of a second: on the agent's event loop that
 * is a lease that expires (ownership flaps) while a metrics scraper counts. So counts and
 * listings run in a worker thread, on the same map (a file descriptor is the process's),
 * and the event loop only waits for the answer. The CRT is several tables (bpf/maps_router.h):
 * per family, confirmed connections and the unconfirmed (IPv4's cache, IPv6's LRU); a flow
 * is in one of them.
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { BpfMap } from './map.js';
import { FlowCache } from './flow-cache.js';
import { crt6Entry, crtEntry, flow, flow6, type CrtEntry } from './structs.js';
import type { Flow } from '../net/flow.js';

/**
 * One table of the CRT: its fd, whether its keys are IPv6 5-tuples (crt6, crt6_est), and
 * whether it holds the confirmed connections the agent writes (crt_est, crt6_est: swept).
 */
export interface CrtTable {
  fd: number;
  v6?: boolean;
  confirmed?: boolean;
  /** The IPv4 cache's: the fd of the map its key is in (crt_key). */
  keyFd?: number;
}

export interface CrtFilter {
  dvipa?: string;
  port?: number;
  client?: string;
}

interface Request {
  id: number;
  filter: CrtFilter;
  limit: number;
  /** Instead of a listing: delete the confirmed tables' entries stamped before this (CLOCK_MONOTONIC ns). */
  sweepBeforeNs?: bigint;
}
interface Answer {
  id: number;
  total: number;
  entries: Array<[Flow, CrtEntry]>;
  error?: string;
}

/** Deletes the entries stamped before `beforeNs`; returns how many. */
function sweep(crt: BpfMap<Flow, CrtEntry>, beforeNs: bigint): number {
  const stale: Flow[] = [];
  for (const [k, v] of crt.entries()) if (v.createdNs < beforeNs) stale.push(k);
  return crt.deleteBatch(stale);
}

/** A table the walker reads: a hash map, or the IPv4 cache of unconfirmed flows. */
type Table = Pick<BpfMap<Flow, CrtEntry>, 'entries' | 'count'>;

function walk(
  tables: Table[],
  confirmed: Array<BpfMap<Flow, CrtEntry>>,
  { id, filter, limit, sweepBeforeNs }: Request,
): Answer {
  const entries: Array<[Flow, CrtEntry]> = [];
  let total = 0;
  if (sweepBeforeNs !== undefined) {
    for (const crt of confirmed) total += sweep(crt, sweepBeforeNs);
    return { id, total, entries };
  }
  if (!filter.dvipa && !filter.port && !filter.client && limit === 0) {
    for (const crt of tables) total += crt.count();
    return { id, total, entries };
  }
  for (const crt of tables) {
    for (const [k, v] of crt.entries()) {
      if (filter.dvipa && k.daddr !== filter.dvipa) continue;
      if ((filter.port && k.dport !== filter.port) || (filter.client && k.saddr !== filter.client)) continue;
      total++;
      if (entries.length < limit) entries.push([k, v]);
    }
  }
  return { id, total, entries };
}

function cache(t: CrtTable): FlowCache {
  if (t.keyFd === undefined) throw new TypeError("the IPv4 cache's table has no keyFd (the fd of its crt_key map)");
  return new FlowCache('crt', t.fd, 'crt_key', t.keyFd);
}

if (!isMainThread && (workerData as { crtTables?: CrtTable[] } | null)?.crtTables !== undefined) {
  const specs = (workerData as { crtTables: CrtTable[] }).crtTables;
  const tables: Table[] = specs.map((t) =>
    t.v6
      ? new BpfMap('crt6', t.fd, flow6, crt6Entry)
      : t.confirmed
        ? new BpfMap('crt_est', t.fd, flow, crtEntry)
        : cache(t),
  );
  const confirmed = specs.flatMap((t, i) => (t.confirmed ? [tables[i] as BpfMap<Flow, CrtEntry>] : []));
  parentPort!.on('message', (req: Request) => {
    try {
      parentPort!.postMessage(walk(tables, confirmed, req));
    } catch (e) {
      parentPort!.postMessage({ id: req.id, total: 0, entries: [], error: (e as Error).message });
    }
  });
}

/** Counts and lists the CRT's tables in a worker thread, started on first use and restarted if it dies. */
export class CrtWalker {
  private worker?: Worker;
  private next = 0;
  private counting?: Promise<number>;
  private lastCount?: number;
  private readonly inFlight = new Set<Promise<Answer>>();
  private readonly pending = new Map<number, { resolve: (a: Answer) => void; reject: (e: Error) => void }>();

  /** The tables, walked in this order; `sweep` deletes from the first. */
  constructor(private readonly crtTables: readonly CrtTable[]) {}

  /** Entries matching `filter`, at most `limit` of them, and how many matched in all. */
  async select(filter: CrtFilter, limit: number): Promise<{ total: number; entries: Array<[Flow, CrtEntry]> }> {
    const a = await this.ask({ id: ++this.next, filter, limit });
    return { total: a.total, entries: a.entries };
  }

  /**
   * The number of entries. One walk at a time: while it runs, callers get the last count
   * (a scrape is never held up by a walk of a million entries), or, before the first, share it.
   */
  count(): Promise<number> {
    if (!this.counting) {
      this.counting = this.ask({ id: ++this.next, filter: {}, limit: 0 })
        .then((a) => (this.lastCount = a.total))
        .finally(() => (this.counting = undefined));
      // Callers handed the last count do not wait for this walk: a failure shows in the next one.
      this.counting.catch(() => undefined);
    }
    return this.lastCount === undefined ? this.counting : Promise.resolve(this.lastCount);
  }

  /**
   * Deletes the first table's entries stamped before `beforeNs` (process.hrtime.bigint()),
   * off the event loop; returns how many. A restarted agent's way to drop the confirmed
   * connections its predecessor wrote and that ended meanwhile: the agent stamps what it
   * confirms, and once the targets have reported, what is older is gone.
   */
  async sweep(beforeNs: bigint): Promise<number> {
    return (await this.ask({ id: ++this.next, filter: {}, limit: 0, sweepBeforeNs: beforeNs })).total;
  }

  /**
   * Waits for the walks in flight, then ends the worker: terminating it inside a native call
   * (a batch lookup) throws from C++ and aborts the process.
   */
  async close(): Promise<void> {
    await Promise.allSettled([...this.inFlight]);
    const w = this.worker;
    this.worker = undefined;
    await w?.terminate();
  }

  private ask(req: Request): Promise<Answer> {
    const w = this.worker ?? this.start();
    // Held alive while a question is open, idle it keeps nothing alive.
    w.ref();
    const answer = new Promise<Answer>((resolve, reject) => {
      this.pending.set(req.id, { resolve, reject });
      w.postMessage(req);
    });
    this.inFlight.add(answer);
    void answer.finally(() => this.inFlight.delete(answer)).catch(() => undefined);
    return answer.then((a) => {
      if (a.error) throw new Error(`CRT walk: ${a.error}`);
      return a;
    });
  }

  private start(): Worker {
    const w = new Worker(fileURLToPath(import.meta.url), { workerData: { crtTables: this.crtTables } });
    w.on('message', (a: Answer) => {
      this.pending.get(a.id)?.resolve(a);
      this.pending.delete(a.id);
      if (!this.pending.size) w.unref();
    });
    const fail = (e: Error) => {
      if (this.worker === w) this.worker = undefined;
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    w.on('error', fail);
    w.on('exit', (code) => fail(new Error(`CRT walker exited (${code})`)));
    this.worker = w;
    return w;
  }
}
