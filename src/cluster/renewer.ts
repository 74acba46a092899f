/*
 * An owner renews its claim on each DVIPA every few tens of milliseconds, and its data plane
 * answers for the DVIPA only until a fence after the last renewal etcd confirmed. Renewals
 * run in a worker thread: the agent's main thread stalls now and then (a Maglev table
 * built, a garbage collection, a burst of reports), and a stall must neither let the fence
 * lapse nor make the backups think the owner dead.
 */
import { Worker } from 'node:worker_threads';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ClaimTxn } from './coupling.js';
import type { ClaimAnswer, HandedOver, WorkerRequest, WorkerSetup } from './renewal-worker.js';
import type { Logger } from '../log.js';

const WORKER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'renewal-worker.js');

export class Renewer {
  private readonly worker: Worker;
  /** Whether the worker has reached etcd: until then a claim would not be renewed. */
  connected = false;
  private handed?: (dvipas: Set<string>) => void;
  private readonly claims = new Map<number, { resolve: (rev?: number) => void; reject: (e: Error) => void }>();
  private nextClaim = 1;

  constructor(setup: WorkerSetup, log: Logger) {
    this.worker = new Worker(WORKER, { workerData: setup });
    // Without renewals fences lapse and backups take over: loud, but the agent goes on.
    this.worker.on('error', (e) =>
      log.error({ err: e.message }, 'renewal worker failed: this node no longer renews its DVIPAs'),
    );
    this.worker.on('message', (m: 'connected' | HandedOver | ClaimAnswer) => {
      if (m === 'connected') this.connected = true;
      else if ('handed' in m) this.handed?.(new Set(m.handed));
      else this.answered(m);
    });
    // A worker gone answers no hand-over, nor any claim: the stop goes on without one.
    this.worker.on('exit', () => {
      this.connected = false;
      this.handed?.(new Set());
      for (const id of [...this.claims.keys()]) this.answered({ id, error: 'renewal worker gone' });
    });
    this.worker.unref();
  }

  /**
   * Commits a claim from the renewal thread (EtcdCoupling.committer): if etcd takes it, that
   * thread renews and moves the fence from then on. Resolves to etcd's revision, or undefined
   * if the claim was refused (what the claimant saw had changed).
   */
  claim(dvipa: string, claim: ClaimTxn): Promise<number | undefined> {
    const id = this.nextClaim++;
    return new Promise((resolve, reject) => {
      this.claims.set(id, { resolve, reject });
      this.post({ op: 'claim', id, dvipa, claim });
    });
  }

  private answered(a: ClaimAnswer): void {
    const waiting = this.claims.get(a.id);
    this.claims.delete(a.id);
    if (a.error !== undefined) waiting?.reject(new Error(a.error));
    else waiting?.resolve(a.revision);
  }

  extend(dvipa: string, deadlineNs: bigint): void {
    this.post({ op: 'extend', dvipa, deadlineNs });
  }

  /** Renewals stop; the fence runs out by itself, or drains until `drainUntilNs` (a handover). */
  drop(dvipa: string, drainUntilNs?: bigint): void {
    this.post({ op: 'drop', dvipa, drainUntilNs });
  }

  /**
   * A clean stop: renewals end and each owned DVIPA's key goes to a grace lease, its fence
   * moved to match (renewal-worker.ts); resolves to the DVIPAs handed over.
   */
  handOver(graceSec: number): Promise<Set<string>> {
    return new Promise((resolve) => {
      this.handed = resolve;
      this.post({ op: 'handOver', graceSec });
    });
  }

  /** Renewals end at once (what was asked before may not be done). */
  async stop(): Promise<void> {
    await this.worker.terminate();
  }

  private post(m: WorkerRequest): void {
    this.worker.postMessage(m);
  }
}
