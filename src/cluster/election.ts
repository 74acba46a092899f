/*
 * Who routes each DVIPA, decided through the coupling facility. Every candidate (the node
 * that defines it, and its VIPABackup nodes) looks at the same store and claims only when
 * the rules below say it should; the store's transaction makes one claim win.
 *
 *  - No owner (the last one's lease expired): the highest-ranked live candidate that is
 *    not quiesced takes over at once; its tables are warm, so no readiness wait.
 *  - The defining node (the primary) sees a backup own its DVIPA: it takes it back once
 *    its readiness gate is open (program attached, every connected target's full report
 *    in), and has been for the takeback delay; never with nopreempt.
 *  - An operator's move names a node: that node claims it (WHENIDLE: once no connection
 *    uses the DVIPA); a quiesced owner is replaced by the best other candidate.
 *  - Without the store nothing changes hands: an owner keeps forwarding, and nobody takes
 *    over a DVIPA whose owner it cannot prove dead.
 *  - An operator's delete (VIPADELETE, `dvipa dvipa delete`): the owner gives the DVIPA up
 *    and nobody claims it until the delete is withdrawn (`dvipa dvipa reactivate`).
 *  - An owner renews its claim every few tens of ms (renewer.ts); a candidate that has seen no
 *    renewal for `claimAfterMs` treats it as dead (unless it promised the owner otherwise: a
 *    HOLD over the cluster network), and its claim checks that the owner key is still at the
 *    revision it last saw. Each confirmed renewal lets the owner's data plane answer for the
 *    DVIPA a little longer (its fence, shorter than claimAfterMs): see docs/ha.md.
 */
import type { CouplingFacility, DvipaView } from './coupling.js';
import type { Claim, OwnerRecord } from '../net/ownership.js';
import type { Logger } from '../log.js';

/** The defining node outranks every VIPABackup (ranks 1..254). */
export const PRIMARY_RANK = 256;

/** How often the rules are evaluated besides store changes (delays, readiness). */
const TICK_MS = 200;
/**
 * Before taking over from an owner that has gone quiet, a candidate reads its key through
 * etcd and claims only if the read came back within this long with the revision it saw: an
 * owner quiet because etcd (or this node's view of it) stalled is not dead, and a claim sent
 * into a stalled etcd would be applied whenever it wakes, against renewals queued beside it.
 */
const PROBE_MS = 250;

export interface Candidate {
  node: string;
  rank: number;
}

export interface Situation {
  me: string;
  candidates: Candidate[];
  live: Set<string>;
  view: DvipaView;
  primary?: string;
  nopreempt: boolean;
  /** The readiness gate has been open for the takeback delay. */
  takebackDue: boolean;
  /** No connection uses the DVIPA (WHENIDLE moves). */
  idle: boolean;
  /** The owner key has been missing so long that a higher-ranked live node is presumed stuck. */
  ownerlessTooLong: boolean;
}

/** What this node should claim now, if anything. Pure: the rules above, nothing else. */
export function decide(s: Situation): Claim | undefined {
  const { view } = s;
  if (view.deleted) return undefined;
  const eligible = (n: string) => s.live.has(n) && !view.quiesced.has(n) && s.candidates.some((c) => c.node === n);
  if (!eligible(s.me) || view.owner?.node === s.me) return undefined;
  const byRank = s.candidates
    .filter((c) => eligible(c.node))
    .sort((a, b) => b.rank - a.rank || a.node.localeCompare(b.node));
  const moveTo = view.move && eligible(view.move.to) ? view.move.to : undefined;
  const best = moveTo ?? byRank[0]?.node;
  // An owner key nobody can read may be a live owner's: claiming over it could take its address.
  if (view.unreadableOwner !== undefined) return undefined;
  if (!view.owner) return best === s.me || s.ownerlessTooLong ? 'takeover' : undefined;
  if (moveTo === s.me) return !view.move!.whenIdle || s.idle ? 'move' : undefined;
  if (view.quiesced.has(view.owner.node) && best === s.me) return 'move';
  if (!view.move && s.me === s.primary && !s.nopreempt && s.takebackDue) return 'takeback';
  return undefined;
}

export interface DvipaCandidacy {
  address: string;
  primary?: string;
  candidates: Candidate[];
}

export interface ElectionHooks {
  /**
   * The readiness gate: may this node start routing the DVIPA without losing a connection?
   * Undefined if so, else what it waits for (as `dvipa netstat vipadyn` shows it).
   */
  notReady(dvipa: string): string | undefined;
  /**
   * Before replacing a living owner (takeback, move): whether this node's tables are already
   * the ones it will first distribute with (the owner's, which it follows); if not, it builds
   * them and the claim waits for a later evaluation. The replaced owner forwards meanwhile;
   * a table built after the claim would hold the address back from every client.
   */
  prepared?(dvipa: string): boolean;
  /** Whether this node could renew a claim now (else it claims nothing). */
  canRenew(): boolean;
  idle(dvipa: string): boolean;
  /**
   * This node routes the DVIPA from now on, under this epoch; `previous`: who routed it last;
   * `tookMs`: for a takeover how long it had no owner (as this node saw it), else the claim.
   */
  acquired(
    dvipa: string,
    owner: OwnerRecord,
    how: Claim | 'adopted',
    previous: string | undefined,
    tookMs: number,
  ): void;
  /** Another node routes it now (or nobody, as far as the store says). */
  lost(dvipa: string, owner: OwnerRecord | undefined): void;
}

export interface ElectionOptions {
  me: string;
  nopreempt: boolean;
  takebackDelayMs: number;
  /** After this long without an owner, any live candidate may claim (a better one seems stuck). */
  stuckMs: number;
  /**
   * After the store (re)connects, claims of DVIPAs this node did not hold wait this long, so
   * that every live node has re-registered first (a lease TTL and a little more): when etcd
   * comes back, leases that ran out meanwhile go, and the holder must win its DVIPA back.
   */
  settleMs: number;
  /** A candidate claims a DVIPA whose owner it has not heard of for this long (0: only once its key is gone). */
  claimAfterMs: number;
}

export class Election {
  /** DVIPA -> the epoch under which this node routes it. */
  readonly owned = new Map<string, OwnerRecord>();
  private readonly busy = new Set<string>();
  /** DVIPAs whose owner key this agent's lease holds (not one its previous agent left). */
  private readonly bound = new Set<string>();
  private readonly readySince = new Map<string, number>();
  /** Why this node does not claim a DVIPA that its rank (or a move) gives it, while it does not. */
  private readonly held = new Map<string, string>();
  /** The last claim's failure (no answer from etcd), until a claim is answered. */
  private readonly failed = new Map<string, string>();
  private readonly ownerlessSince = new Map<string, number>();
  /** DVIPAs whose owner key is unreadable, said once each time it becomes so. */
  private readonly unreadable = new Set<string>();
  /** The last owner seen of each DVIPA (a dead owner's key is gone when its successor claims). */
  private readonly lastOwner = new Map<string, string>();
  private healthySince?: number;
  private timer?: NodeJS.Timeout;
  /** Until when (performance.now()) this node promised an owner not to take each DVIPA over. */
  private readonly promised = new Map<string, number>();
  /** Re-evaluation when a silent owner's time is up. */
  private readonly staleTimers = new Map<string, NodeJS.Timeout>();
  /** DVIPAs whose owner key is being read before a takeover. */
  private readonly probing = new Set<string>();
  /** When (performance.now()) a read of etcd last went unanswered: quiet owners count from then. */
  private stalledAt = 0;
  /**
   * Takeover claims that failed without an answer (etcd may still apply them), with the
   * revisions they compared: until the store has moved past those, no HOLD is acknowledged.
   */
  private readonly unanswered = new Map<string, { ownerRev: number; epochRev: number }>();

  constructor(
    private readonly cf: CouplingFacility,
    private readonly dvipas: Map<string, DvipaCandidacy>,
    private readonly opts: ElectionOptions,
    private readonly hooks: ElectionHooks,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.cf.on('lease', () => this.bound.clear());
    this.cf.on('change', (dvipa?: string) =>
      dvipa ? this.dvipas.has(dvipa) && this.evaluate(dvipa) : this.evaluateAll(),
    );
    this.healthySince = this.cf.healthy ? Date.now() : undefined;
    this.cf.on('health', (ok: boolean) => {
      this.healthySince = ok ? Date.now() : undefined;
      this.evaluateAll();
    });
    this.timer = setInterval(() => this.evaluateAll(), TICK_MS);
    this.evaluateAll();
  }

  stop(): void {
    clearInterval(this.timer);
    for (const t of this.staleTimers.values()) clearTimeout(t);
  }

  /**
   * The owner's HOLD, straight from it: whether this node promises not to take the DVIPA
   * over for a claim delay from now (then the owner may answer for it a fence longer).
   * Refused by a node that is claiming or owns it, or that knows a newer owner.
   */
  promise(dvipa: string, from: string, epoch: number): boolean {
    if (!this.dvipas.has(dvipa) || from === this.opts.me || this.busy.has(dvipa) || this.owned.has(dvipa)) return false;
    const view = this.cf.view(dvipa);
    const owner = view.owner;
    if (owner && (owner.epoch > epoch || (owner.epoch === epoch && owner.node !== from))) return false;
    const pending = this.unanswered.get(dvipa);
    if (pending) {
      if (pending.ownerRev === view.ownerRev && pending.epochRev === view.epochRev) return false;
      this.unanswered.delete(dvipa);
    }
    // HOLDs bridge an etcd that nobody reaches, not one that has settled without the sender:
    // a node that has seen etcd healthy for a settling time, and the sender not a member in
    // it, leaves the sender to its fence (an owner cut off from etcd alone is taken over).
    const settled = this.healthySince !== undefined && Date.now() - this.healthySince >= this.opts.settleMs;
    if (this.cf.healthy && settled && !this.cf.members().has(from)) return false;
    this.promised.set(dvipa, performance.now() + this.opts.claimAfterMs);
    return true;
  }

  /**
   * How long (ms) until the owner of `view` has been quiet for a claim delay (its grace
   * included): no renewal seen, nor its key's deletion; <= 0: quiet now. A takeover waits for
   * it even when the key is gone: the owner's fence runs from its last renewal, and a lease
   * may expire right after one.
   */
  private quietIn(view: DvipaView): number {
    if (this.opts.claimAfterMs <= 0 || view.ownerSeenAt === 0) return 0;
    const since = Math.max(view.ownerSeenAt, this.stalledAt);
    return since + this.opts.claimAfterMs + (view.ownerGraceMs ?? 0) - performance.now();
  }

  /**
   * Reads the owner key before a takeover (PROBE_MS): the same revision in time, and the
   * takeover goes ahead; no answer, and quiet owners count from now (etcd was stalled).
   */
  private probe(dvipa: string, ownerRev: number): void {
    if (this.probing.has(dvipa)) return;
    this.probing.add(dvipa);
    void this.cf
      .probe(dvipa, PROBE_MS)
      .then((rev) => {
        if (rev === undefined) {
          this.stalledAt = performance.now();
          this.log.info({ dvipa }, 'etcd did not answer a read in time: no takeover while it stalls');
          this.evaluateLater(dvipa, this.opts.claimAfterMs);
        } else if (rev === ownerRev) this.evaluate(dvipa, ownerRev);
      })
      .finally(() => this.probing.delete(dvipa));
  }

  /**
   * Evaluates again in `ms`, after whatever arrived meanwhile: timers run before I/O in
   * Node's loop, and after a stall of this process a renewal waiting in the socket must be
   * seen before the owner is judged quiet.
   */
  private evaluateLater(dvipa: string, ms: number): void {
    clearTimeout(this.staleTimers.get(dvipa));
    this.staleTimers.set(
      dvipa,
      setTimeout(() => setImmediate(() => this.evaluate(dvipa)), Math.ceil(ms)),
    );
  }

  /** A deposed owner's word from a peer (a DVIPA message with a higher epoch) ends ours at once. */
  deposed(dvipa: string, owner: OwnerRecord): void {
    const mine = this.owned.get(dvipa);
    if (!mine || owner.epoch <= mine.epoch || owner.node === this.opts.me) return;
    this.owned.delete(dvipa);
    this.hooks.lost(dvipa, owner);
  }

  /** Why this node does not claim the DVIPA although it would route it now (undefined: it does not wait). */
  heldBack(dvipa: string): string | undefined {
    const why = this.owned.has(dvipa) ? undefined : this.held.get(dvipa);
    const failed = this.failed.get(dvipa);
    return why && failed ? `${why} (the last claim failed: ${failed})` : why;
  }

  evaluateAll(): void {
    for (const d of this.dvipas.keys()) this.evaluate(d);
  }

  /** `probed`: the owner key's revision a read just confirmed (a takeover needs one, see probe()). */
  private evaluate(dvipa: string, probed?: number): void {
    if (this.busy.has(dvipa)) return;
    const c = this.dvipas.get(dvipa)!;
    if (!this.cf.healthy) {
      // Said where a claim could be due: a wait held back already, a DVIPA without an owner,
      // or the primary's own (the node that waits to take it back asks why).
      const owner = this.cf.view(dvipa).owner?.node;
      if (
        !this.owned.has(dvipa) &&
        (this.held.has(dvipa) || !owner || (c.primary === this.opts.me && owner !== c.primary))
      )
        this.held.set(dvipa, `etcd not reached: no claim until it is (${this.cf.unhealthyWhy ?? 'unhealthy'})`);
      return;
    }
    const seen = this.cf.view(dvipa);
    const now = Date.now();
    const mine = this.owned.get(dvipa);
    // An owner quiet too long is dead to the rules; the claim proves it renewed nothing since.
    const quietIn = this.quietIn(seen);
    const silent =
      seen.owner !== undefined && seen.owner.node !== this.opts.me && this.opts.claimAfterMs > 0 && quietIn <= 0;
    const view = silent ? { ...seen, owner: undefined } : seen;
    if (silent && !this.ownerlessSince.has(dvipa))
      this.ownerlessSince.set(dvipa, now + quietIn - this.opts.claimAfterMs);

    if (view.unreadableOwner === undefined) this.unreadable.delete(dvipa);
    else if (!this.unreadable.has(dvipa)) {
      this.unreadable.add(dvipa);
      this.log.error(
        { dvipa, value: view.unreadableOwner },
        'owner record unreadable: nobody claims the DVIPA until the key goes (its lease ends, or delete it)',
      );
    }
    if (view.owner) {
      this.ownerlessSince.delete(dvipa);
      this.lastOwner.set(dvipa, view.owner.node);
    } else if (!this.ownerlessSince.has(dvipa)) this.ownerlessSince.set(dvipa, now);
    const notReady = this.hooks.notReady(dvipa);
    if (notReady === undefined) {
      if (!this.readySince.has(dvipa)) this.readySince.set(dvipa, now);
    } else this.readySince.delete(dvipa);
    this.held.delete(dvipa);

    if (mine && view.owner && view.owner.node !== this.opts.me) {
      this.owned.delete(dvipa);
      this.hooks.lost(dvipa, view.owner);
      return;
    }
    if (view.deleted) {
      if (view.owner?.node === this.opts.me) this.release(dvipa, view.owner);
      else if (mine) {
        // Our record is gone already (an expired lease): stop routing it all the same.
        this.owned.delete(dvipa);
        this.bound.delete(dvipa);
        this.hooks.lost(dvipa, undefined);
      }
      return;
    }
    if (view.owner?.node === this.opts.me) {
      // Ours in the store: held by this agent's lease, or left by its previous agent to adopt.
      if (!this.bound.has(dvipa)) this.run(dvipa, 'adopted', view);
      return;
    }
    this.bound.delete(dvipa);
    const live = this.cf.members();
    if (silent) live.delete(seen.owner!.node);
    const situation = {
      me: this.opts.me,
      candidates: c.candidates,
      live,
      view,
      primary: c.primary,
      nopreempt: this.opts.nopreempt,
      takebackDue: this.readySince.has(dvipa) && now - this.readySince.get(dvipa)! >= this.opts.takebackDelayMs,
      idle: this.hooks.idle(dvipa),
      ownerlessTooLong: now - (this.ownerlessSince.get(dvipa) ?? now) >= this.opts.stuckMs,
    };
    const claim = decide(situation);
    if (seen.owner && seen.owner.node !== this.opts.me && quietIn > 0) this.evaluateLater(dvipa, quietIn);
    if (!claim) {
      // A takeback that only its gate or delay holds back (the operator asks why r1 waits), a
      // WHENIDLE move that waits for the connections to end.
      if (!situation.idle && decide({ ...situation, idle: true }) === 'move')
        this.held.set(dvipa, 'move: WHENIDLE, connections through the DVIPA remain');
      else if (!situation.takebackDue && decide({ ...situation, takebackDue: true }) === 'takeback') {
        const since = this.readySince.get(dvipa);
        this.held.set(
          dvipa,
          since === undefined
            ? `takeback: readiness gate: ${notReady}`
            : `takeback: in ${Math.max(0, since + this.opts.takebackDelayMs - now)} ms (the takeback delay)`,
        );
      }
      return;
    }
    // The holder wins back what it held at once (its own key expired with its lease, etcd
    // having stalled); the others give the cluster time to settle, and a quiet owner its claim delay.
    const wait = mine ? 0 : Math.max(quietIn, (this.promised.get(dvipa) ?? 0) - performance.now());
    if (claim === 'takeover' && wait > 0) {
      this.held.set(dvipa, `takeover: in ${Math.ceil(wait)} ms (the owner's claim delay)`);
      return this.evaluateLater(dvipa, wait);
    }
    const settleLeft = mine !== undefined ? 0 : (this.healthySince ?? now) + this.opts.settleMs - now;
    if (settleLeft > 0) {
      this.held.set(dvipa, `${claim}: in ${settleLeft} ms (etcd just reached: every live node registers first)`);
      return;
    }
    if (claim !== 'takeover' && notReady !== undefined) {
      this.held.set(dvipa, `${claim}: readiness gate: ${notReady}`);
      return;
    }
    if (claim !== 'takeover' && this.hooks.prepared?.(dvipa) === false) {
      this.held.set(dvipa, `${claim}: tables being built from ${view.owner?.node ?? 'the owner'}'s DPT`);
      return;
    }
    if (claim === 'takeover' && silent && probed !== seen.ownerRev) return this.probe(dvipa, seen.ownerRev);
    this.run(dvipa, claim, seen);
  }

  /** Deleted by the operator: give it up (fenced on our record); the routing stops once the store agrees. */
  private release(dvipa: string, owner: OwnerRecord): void {
    this.busy.add(dvipa);
    this.cf
      .release(dvipa, owner)
      .then(
        (done) => {
          if (!done || !this.owned.has(dvipa)) return;
          this.owned.delete(dvipa);
          this.bound.delete(dvipa);
          this.log.info({ dvipa, epoch: owner.epoch }, 'DVIPA deleted by the operator: given up');
          this.hooks.lost(dvipa, undefined);
        },
        (e: Error) => this.log.warn({ dvipa, err: e.message }, 'release failed; retrying'),
      )
      .finally(() => this.busy.delete(dvipa));
  }

  private run(dvipa: string, how: Claim | 'adopted', view: DvipaView): void {
    if (!this.hooks.canRenew()) {
      this.held.set(dvipa, `${how}: the renewal thread has not reached etcd yet`);
      return;
    }
    const rank = this.dvipas.get(dvipa)!.candidates.find((x) => x.node === this.opts.me)?.rank ?? 0;
    this.held.set(dvipa, `${how}: claim sent, no answer from etcd yet`);
    this.busy.add(dvipa);
    const started = Date.now();
    const since = how === 'takeover' ? (this.ownerlessSince.get(dvipa) ?? started) : started;
    // A takeover proves the owner renewed nothing since it was last seen; the others replace
    // a living owner, whose renewals change the key's revision but not its value.
    this.cf
      .claim(dvipa, rank, view, how === 'takeover')
      .then(
        (won) => {
          this.failed.delete(dvipa);
          this.held.delete(dvipa);
          if (!won) return;
          const previous = view.owner?.node ?? this.lastOwner.get(dvipa);
          this.owned.set(dvipa, won);
          this.bound.add(dvipa);
          this.lastOwner.set(dvipa, this.opts.me);
          this.log.info(
            { dvipa, epoch: won.epoch, how, from: previous },
            how === 'adopted' ? 'DVIPA adopted' : 'DVIPA acquired',
          );
          this.hooks.acquired(dvipa, won, how, previous, Date.now() - since);
        },
        (e: Error) => {
          // No answer is no refusal: etcd may apply the claim yet (see promise()).
          this.unanswered.set(dvipa, { ownerRev: view.ownerRev, epochRev: view.epochRev });
          this.failed.set(dvipa, e.message);
          this.held.set(dvipa, `${how}: claim failed; retrying`);
          this.log.warn({ dvipa, how, err: e.message }, 'claim failed; retrying');
        },
      )
      .finally(() => this.busy.delete(dvipa));
  }
}
