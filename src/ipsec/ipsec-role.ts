/*
 * An agent's IPsec side (CLUSTER IPSEC), for the DVIPAs it may route: while this node owns
 * a DVIPA it keeps the DVIPA's SAs and policies in the coupling facility (on XFRM events and
 * every interval, at most one write per SA per interval); when it becomes the owner by a
 * takeover, takeback or move it re-installs its predecessor's SAs, so that ESP to and from
 * the DVIPA carries on without a new negotiation; when another node becomes the owner it
 * removes the DVIPA's SAs from its own kernel, as they are the new owner's now and a second
 * sender with the same SPIs would replay sequence numbers at the peer. The policies stay:
 * without their SAs they hold traffic back instead of letting it out in clear.
 */
import type { Claim, OwnerRecord } from '../net/ownership.js';
import type { Logger } from '../log.js';
import { forReinstall, recordKey, storeKey } from './store.js';
import { reinstall, SaRecorder, sasOf, type RecordStore, type ReinstallResult, type XfrmOps } from './recovery.js';
import type { Sa } from './xfrm-codec.js';
import type { XfrmEvent } from './events.js';
import { IkeContinuity, type IkeDaemon, type IkePeerRow, type PeerHandover, type RenegotiationResult } from './ike.js';

/** Opens the kernel's XFRM notifications (XfrmEventStream in production). */
export type XfrmSubscribe = (onEvent: (e: XfrmEvent) => void) => { close(): void };

export interface IpsecOptions {
  /** Outbound ESP sequence numbers of a re-installed SA jump this far: more than its old owner can send in an interval. */
  seqMargin: number;
  /** At most one store write per SA per interval; the SAs are also scanned this often. */
  intervalMs: number;
  /** charon's VICI socket: IKE continuity (IKE SAs recorded, renegotiated by a new owner, forgotten by the old). */
  vici?: string;
  /** How long a new owner's renegotiation of a peer may take (ms). */
  renegotiateMs?: number;
  /** Whether an address is on this node (default: this process's interfaces; tests look into a namespace). */
  addressHere?: (address: string) => boolean;
}

/** XFRM events come in bursts (a negotiation adds SAs and policies): one scan for a burst. */
const EVENT_SETTLE_MS = 50;
/** How long a node that lost a DVIPA waits at most for its address to go before its charon forgets (see IkeContinuity.forget). */
const RELEASE_WAIT_MS = 10_000;

export interface IpsecSaRow {
  spi: string;
  proto: string;
  mode: string;
  /** in: the DVIPA receives with it; out: the DVIPA sends with it. */
  dir: 'in' | 'out';
  src: string;
  dst: string;
  reqid: number;
  /**
   * negotiated: installed here (by the IKE daemon or by hand); reinstalled: from the store at a change of owner;
   * renegotiated: a CHILD SA this node's charon negotiated again after it took the DVIPA over.
   */
  source: 'negotiated' | 'reinstalled' | 'renegotiated';
  /** Outbound: the last sequence number sent; inbound: the highest received (64-bit with ESN). */
  seq: string;
  packets: string;
  bytes: string;
}

export interface IpsecDvipaRow {
  dvipa: string;
  owner: boolean;
  epoch: number;
  lastStoreWrite?: string;
  lastReinstall?: {
    at: string;
    how: Claim | 'adopted';
    installed: number;
    policies: number;
    refused: string[];
    failed: Array<{ spi: string; error: string }>;
    tookMs: number;
    phases: ReinstallResult['phases'];
  };
  sas: IpsecSaRow[];
  /** With IKE continuity: per peer, the IKE SA held here and how it came. */
  ike?: IkePeerRow[];
  lastRenegotiation?: RenegotiationResult & { at: string };
  /** Peers renegotiated and failed since this agent started. */
  renegotiations?: { renegotiated: number; failed: number };
}

const seqOf = (hi: number, lo: number) => ((BigInt(hi) << 32n) | BigInt(lo)).toString();

export class IpsecRole {
  private readonly recorder: SaRecorder;
  private readonly key: Buffer;
  private readonly owned = new Map<string, OwnerRecord>();
  private readonly dvipas = new Set<string>();
  /** DVIPAs owned now whose predecessor's SAs are still to be re-installed, and how they came. */
  private readonly pending = new Map<string, Claim | 'adopted'>();
  /** Per DVIPA, the work in progress: acquisitions, losses and scans run one after another. */
  private readonly queue = new Map<string, Promise<void>>();
  private readonly scanning = new Set<string>();
  /** Record keys of the SAs this node re-installed (and has not seen replaced since). */
  private readonly reinstalled = new Set<string>();
  /** Per DVIPA and peer: the re-installed outbound SAs taken out of the kernel while charon renegotiates. */
  private readonly held = new Map<string, Sa[]>();
  private readonly last = new Map<string, NonNullable<IpsecDvipaRow['lastReinstall']>>();
  private timer?: NodeJS.Timeout;
  private settle?: NodeJS.Timeout;
  private events?: { close(): void };
  private readonly ike?: IkeContinuity;

  constructor(
    private readonly xfrm: XfrmOps,
    private readonly store: RecordStore,
    clusterKey: Buffer,
    private readonly node: string,
    private readonly opts: IpsecOptions,
    private readonly log: Logger,
    private readonly subscribe?: XfrmSubscribe,
    ikeDaemon?: IkeDaemon,
  ) {
    this.key = storeKey(clusterKey);
    this.recorder = new SaRecorder(xfrm, store, this.key, node, opts.intervalMs);
    if (ikeDaemon)
      this.ike = new IkeContinuity(ikeDaemon, store, this.key, node, log, {
        renegotiateMs: opts.renegotiateMs,
        addressHere: opts.addressHere,
      });
  }

  /** A DVIPA this node may own. */
  watch(dvipa: string): void {
    this.dvipas.add(dvipa);
  }

  start(): void {
    if (this.ike) {
      try {
        this.xfrm.queueUntilSa?.();
      } catch (e) {
        const why = "ESP held during a renegotiation is dropped, not queued: the kernel's larval queue not enabled";
        this.log.warn({ err: (e as Error).message }, why);
      }
    }
    this.timer = setInterval(() => this.scanAll(), this.opts.intervalMs);
    this.events = this.subscribe?.((e) => this.onEvent(e));
    this.ike?.daemon.watch?.();
  }

  stop(): void {
    this.events?.close();
    this.ike?.daemon.close();
    clearInterval(this.timer);
    clearTimeout(this.settle);
    this.owned.clear();
  }

  private onEvent(e: XfrmEvent): void {
    switch (e.kind) {
      case 'sa':
      case 'expire':
      case 'aevent':
      case 'policy':
      case 'flush':
      case 'overflow':
        return this.changed();
      case 'malformed':
      case 'error':
        this.log.warn(
          { event: e.kind, err: 'error' in e ? String(e.error) : '' },
          'XFRM notification not understood; the interval scan still records the SAs',
        );
    }
  }

  /** charon's IKE or CHILD SAs changed (its VICI events): record them soon. */
  ikeChanged(): void {
    this.ike?.changed();
    this.changed();
  }

  /** The kernel's SAs or policies changed (or notifications were lost): scan soon. */
  changed(): void {
    if (this.settle || !this.owned.size) return;
    this.settle = setTimeout(() => {
      this.settle = undefined;
      this.scanAll();
    }, EVENT_SETTLE_MS);
  }

  /** Waits for the DVIPA's work in progress (tests, orderly stop). */
  async idle(dvipa: string): Promise<void> {
    await this.queue.get(dvipa);
  }

  /** Resolves once the predecessor's SAs and policies are in the kernel (or that attempt failed). */
  acquired(dvipa: string, owner: OwnerRecord, how: Claim | 'adopted'): Promise<void> {
    this.owned.set(dvipa, owner);
    this.pending.set(dvipa, how);
    return new Promise((inKernel) => {
      void this.enqueue(dvipa, () => this.step(dvipa, inKernel)).finally(inKernel);
    });
  }

  /** Re-installs while that is pending (retried each interval until it went through), else records. */
  private async step(dvipa: string, inKernel?: () => void): Promise<void> {
    const owner = this.owned.get(dvipa);
    if (!owner) return;
    const how = this.pending.get(dvipa);
    if (!how) {
      const r = await this.recorder.sync(dvipa, owner);
      const fenced =
        r.fenced || (this.ike && !(await this.ikeStep(dvipa, 'recording', (ike) => ike.sync(dvipa, owner), true)));
      if (fenced)
        this.log.warn(
          { dvipa, epoch: owner.epoch },
          'IPsec SA records of the DVIPA no longer ours to write: another node owns it',
        );
      return;
    }
    // A restarted agent finds its SAs in the kernel; a node rebooted within the restart grace does not.
    if (how === 'adopted' && sasOf(dvipa, this.xfrm.dumpSas(), []).length) {
      this.pending.delete(dvipa);
      return;
    }
    // Stale IKE SAs of an earlier ownership go first, while the address is not here (see ike.ts on the DELETE).
    if (how !== 'adopted' && this.ike) {
      await this.ikeStep(dvipa, 'forgetting', (ike) => ike.forget(dvipa), 0);
      await this.dropOrphans(dvipa);
    }
    const r = await reinstall(
      this.xfrm,
      this.store,
      this.key,
      this.node,
      dvipa,
      owner,
      this.opts.seqMargin,
      this.log,
      inKernel,
    );
    this.pending.delete(dvipa);
    for (const sa of r.installed) this.reinstalled.add(recordKey(dvipa, sa));
    this.recorder.seed(dvipa, r.installed);
    const last = this.remember(dvipa, how, r);
    if (!r.owner) this.log.warn({ dvipa }, 'lost the DVIPA while re-installing its IPsec SAs');
    else if (r.installed.length || r.refused.length || r.failed.length) {
      this.log.info(
        {
          dvipa,
          how,
          installed: r.installed.length,
          policies: r.policies,
          refused: r.refused.length,
          failed: r.failed.length,
          ms: last.tookMs,
        },
        'IPsec SAs re-installed from the coupling facility',
      );
    }
    if (r.owner) await this.ikeStep(dvipa, 'renegotiating', (ike) => this.renegotiate(ike, dvipa, owner), undefined);
  }

  /** charon's part runs apart from the kernel's: a daemon that does not answer never holds the SAs back. */
  private async ikeStep<T>(
    dvipa: string,
    what: string,
    fn: (ike: IkeContinuity) => Promise<T>,
    otherwise: T,
  ): Promise<T> {
    if (!this.ike) return otherwise;
    try {
      return await fn(this.ike);
    } catch (e) {
      this.log.error({ dvipa, err: (e as Error).message }, `IKE continuity: ${what} failed`);
      return otherwise;
    }
  }

  /**
   * The DVIPA's SAs still in the kernel once charon forgot its own: an earlier ownership's that
   * no daemon holds (its charon restarted since, or its agent was killed before it removed
   * them). The peer dropped them long ago, and while a peer's re-installed outbound SA is held
   * (see `handover`) the kernel would send on such a one instead of queueing, unless the
   * policy's template names the held SA's SPI (charon's do; not every daemon's).
   */
  private dropOrphans(dvipa: string): Promise<void> {
    return this.removeAllOf(dvipa, {
      removed: 'IPsec SAs of an earlier ownership of the DVIPA removed',
      failed: 'IPsec SA of an earlier ownership not removed',
    });
  }

  /** Every SA of the DVIPA out of the kernel (and out of `reinstalled`), each outcome logged as `said`. */
  private async removeAllOf(dvipa: string, said: { removed: string; failed: string }): Promise<void> {
    const mine = sasOf(dvipa, this.xfrm.dumpSas(), []).map((x) => x.sa);
    const errors = await this.xfrm.deleteSas(mine);
    for (const sa of mine) this.reinstalled.delete(recordKey(dvipa, sa));
    const failed = errors.filter((e) => e);
    if (mine.length) this.log.info({ dvipa, removed: mine.length - failed.length }, said.removed);
    for (const e of failed) this.log.error({ dvipa, err: e!.message }, said.failed);
  }

  /** The kernel's side of each peer's renegotiation (see PeerHandover in ike.ts). */
  private handover(dvipa: string): PeerHandover {
    const key = (peer: string) => `${dvipa}|${peer}`;
    return {
      hold: async (peer) => {
        const out = this.xfrm
          .dumpSas()
          .filter((sa) => sa.src === dvipa && sa.dst === peer && this.reinstalled.has(recordKey(dvipa, sa)));
        const errors = await this.xfrm.deleteSas(out);
        for (const e of errors) if (e) this.log.error({ dvipa, peer, err: e.message }, 'a re-installed SA not held');
        const held = out.filter((_, i) => !errors[i]);
        this.held.set(key(peer), held);
        if (held.length)
          this.log.info({ dvipa, peer, sas: held.length }, 'outbound ESP to the peer held while charon renegotiates');
      },
      resume: async (peer) => {
        const held = this.held.get(key(peer)) ?? [];
        this.held.delete(key(peer));
        // The kernel numbered on after the dump that kept them: the margin again, as at a re-install.
        const back: Sa[] = [];
        const failed: Error[] = [];
        for (const sa of held) {
          try {
            back.push(forReinstall(sa, this.opts.seqMargin));
          } catch (e) {
            failed.push(e as Error);
          }
        }
        failed.push(...((await this.xfrm.addSas(back, { replace: true })).filter((e) => e) as Error[]));
        for (const e of failed) this.log.error({ dvipa, peer, err: e.message }, 'a held SA not put back');
      },
      replaced: async (peer) => {
        // A packet during the hold made the kernel ACQUIRE: its larval state bears the held SA's SPI
        // (charon's outbound policies name the SPI in their template), and the kernel clears larval
        // states only without one when an SA comes. It goes with the re-installed SAs, by their keys.
        const held = this.held.get(key(peer)) ?? [];
        this.held.delete(key(peer));
        await this.dropReinstalled(dvipa, peer);
        for (const sa of held) this.reinstalled.delete(recordKey(dvipa, sa));
      },
    };
  }

  private async renegotiate(ike: IkeContinuity, dvipa: string, owner: OwnerRecord): Promise<void> {
    const r = await ike.takeover(dvipa, owner, this.handover(dvipa));
    if (r.peers)
      this.log.info(
        { dvipa, peers: r.peers, renegotiated: r.renegotiated, failed: r.failed.length, ms: r.tookMs },
        "IKE SAs renegotiated with the DVIPA's peers",
      );
  }

  /** A peer's CHILD SAs are negotiated again here: the copies re-installed from the store go. */
  private async dropReinstalled(dvipa: string, peer: string): Promise<void> {
    const gone = this.xfrm
      .dumpSas()
      .filter((sa) => (sa.src === peer || sa.dst === peer) && this.reinstalled.has(recordKey(dvipa, sa)));
    const errors = await this.xfrm.deleteSas(gone);
    gone.forEach((sa, i) => {
      if (errors[i])
        this.log.error(
          { dvipa, spi: sa.spi.toString(16), err: errors[i].message },
          'a re-installed SA replaced by a renegotiated one not removed',
        );
      else this.reinstalled.delete(recordKey(dvipa, sa));
    });
  }

  /** This node no longer owns the DVIPA; `released` resolves once its address is gone from here. */
  lost(dvipa: string, released: Promise<unknown> = Promise.resolve()): Promise<void> {
    this.owned.delete(dvipa);
    this.pending.delete(dvipa);
    this.recorder.forget(dvipa);
    return this.enqueue(dvipa, async () => {
      if (this.owned.has(dvipa)) return;
      await this.removeAllOf(dvipa, {
        removed: "IPsec SAs of the DVIPA removed: they are the new owner's",
        failed: 'IPsec SA of a DVIPA routed elsewhere not removed',
      });
      await this.ikeStep(dvipa, 'forgetting', (ike) => ike.forget(dvipa, released, RELEASE_WAIT_MS), 0);
    });
  }

  rows(): IpsecDvipaRow[] {
    const sas = this.owned.size ? this.xfrm.dumpSas() : [];
    return [...this.dvipas].sort().map((dvipa) => {
      const owner = this.owned.get(dvipa);
      const written = this.recorder.lastWrite(dvipa);
      const last = this.last.get(dvipa);
      const renegotiated = owner && this.ike ? this.ike.renegotiatedSpis(dvipa) : new Set<string>();
      const lastRenegotiation = this.ike?.lastRenegotiation(dvipa);
      return {
        dvipa,
        owner: !!owner,
        epoch: owner?.epoch ?? 0,
        ...(written ? { lastStoreWrite: new Date(written).toISOString() } : {}),
        ...(last ? { lastReinstall: last } : {}),
        sas: owner ? sasOf(dvipa, sas, []).map(({ sa }) => this.row(dvipa, sa, renegotiated)) : [],
        ...(this.ike ? { ike: owner ? this.ike.rows(dvipa) : [], renegotiations: this.ike.totals(dvipa) } : {}),
        ...(lastRenegotiation ? { lastRenegotiation } : {}),
      };
    });
  }

  private row(dvipa: string, sa: Sa, renegotiated: Set<string>): IpsecSaRow {
    const out = sa.src === dvipa;
    const spi = sa.spi.toString(16).padStart(8, '0');
    return {
      spi,
      proto: sa.proto,
      mode: sa.mode,
      dir: out ? 'out' : 'in',
      src: sa.src,
      dst: sa.dst,
      reqid: sa.reqid,
      source: this.reinstalled.has(recordKey(dvipa, sa))
        ? 'reinstalled'
        : renegotiated.has(spi)
          ? 'renegotiated'
          : 'negotiated',
      seq: out ? seqOf(sa.replay.oseqHi, sa.replay.oseq) : seqOf(sa.replay.seqHi, sa.replay.seq),
      packets: String(sa.current?.packets ?? 0n),
      bytes: String(sa.current?.bytes ?? 0n),
    };
  }

  private remember(
    dvipa: string,
    how: Claim | 'adopted',
    r: ReinstallResult,
  ): NonNullable<IpsecDvipaRow['lastReinstall']> {
    const { readMs, saMs, policyMs, recordMs } = r.phases;
    const last = {
      at: new Date().toISOString(),
      how,
      installed: r.installed.length,
      policies: r.policies,
      tookMs: readMs + saMs + policyMs + recordMs,
      phases: r.phases,
      refused: r.refused.map((e) => e.message),
      failed: r.failed.map((f) => ({ spi: f.spi.toString(16), error: f.error })),
    };
    this.last.set(dvipa, last);
    return last;
  }

  private scanAll(): void {
    for (const [dvipa] of this.owned) {
      if (this.scanning.has(dvipa)) continue;
      this.scanning.add(dvipa);
      void this.enqueue(dvipa, () => {
        this.scanning.delete(dvipa);
        return this.step(dvipa);
      });
    }
  }

  private enqueue(dvipa: string, work: () => Promise<void>): Promise<void> {
    const next = (this.queue.get(dvipa) ?? Promise.resolve()).then(work).catch((e: Error) => {
      this.log.error({ dvipa, err: e.message }, 'IPsec recovery step failed; retried at the next interval');
    });
    this.queue.set(dvipa, next);
    return next;
  }
}
