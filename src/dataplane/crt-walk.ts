/*
 * Walks of the CRT off the event loop. A SYN flood fills the CRT to its million entries,
 * and reading them all takes the better part of a second: on the agent's event loop that
 * is a lease that expires (ownership flaps) while a metrics scraper counts. So counts and
 * listings run in a worker thread, on the same map (a file descriptor is the process's),
 * and the event loop only waits for the answer.
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { BpfMap } from './map.js';
import { crtEntry, flow, type CrtEntry } from './structs.js';
import type { Flow } from '../net/flow.js';

export interface CrtFilter {
  dvipa?: string;
  port?: number;
  client?: string;
}

interface Request {
  id: number;
  filter: CrtFilter;
  limit: number;
}
interface Answer {
  id: number;
  total: number;
  entries: Array<[Flow, CrtEntry]>;
  error?: string;
}

function walk(crt: BpfMap<Flow, CrtEntry>, { id, filter, limit }: Request): Answer {
  const entries: Array<[Flow, CrtEntry]> = [];
  let total = 0;
  if (!filter.dvipa && !filter.port && !filter.client && limit === 0) {
    for (const b of crt.rawBatches()) total += b.count;
    return { id, total, entries };
  }
  for (const [k, v] of crt.entries()) {
    if (filter.dvipa && k.daddr !== filter.dvipa) continue;
    if ((filter.port && k.dport !== filter.port) || (filter.client && k.saddr !== filter.client)) continue;
    total++;
    if (entries.length < limit) entries.push([k, v]);
  }
  return { id, total, entries };
}

if (!isMainThread && (workerData as { crtFd?: number } | null)?.crtFd !== undefined) {
  const crt = new BpfMap('crt', (workerData as { crtFd: number }).crtFd, flow, crtEntry);
  parentPort!.on('message', (req: Request) => {
    try {
      parentPort!.postMessage(walk(crt, req));
    } catch (e) {
      parentPort!.postMessage({ id: req.id, total: 0, entries: [], error: (e as Error).message });
    }
  });
}

/** Counts and lists the CRT in a worker thread, started on first use and restarted if it dies. */
export class CrtWalker {
  private worker?: Worker;
  private next = 0;
  private counting?: Promise<number>;
  private lastCount?: number;
  private readonly inFlight = new Set<Promise<Answer>>();
  private readonly pending = new Map<number, { resolve: (a: Answer) => void; reject: (e: Error) => void }>();

  constructor(private readonly crtFd: number) {}

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
    const w = new Worker(fileURLToPath(import.meta.url), { workerData: { crtFd: this.crtFd } });
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
