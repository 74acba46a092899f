/*
 * The coupling facility: the shared store that decides who routes each DVIPA. In a cluster
 * it is etcd; a single node may run without it (ownership then is local only).
 *
 * Keys under the prefix (default /dvipa/):
 *   members/<node>         member record (members.ts)  bound to the node's lease: it is alive, and where
 *   owner/<dvipa>          {node, rank, epoch}         bound to the owner's lease
 *   epoch/<dvipa>          last epoch handed out       never expires: epochs only grow
 *   move/<dvipa>           {to, whenIdle}              an operator's move (dvipa dvipa move)
 *   quiesce/<dvipa>/<node> ""                          the node gives the DVIPA up (quiesce)
 *   deleted/<dvipa>        ""                          an operator deleted it (dvipa dvipa delete): nobody routes it
 *   released/<dvipa>       {node, epoch}               `node` let the address go to the owner of `epoch` (handoff.ts)
 *
 * The epoch is the fencing token: every change of owner is one transaction that checks
 * what the claimant last saw of the owner and epoch keys, so two nodes can never both win,
 * and the epoch travels in messages and maps so that a deposed owner's words are refused.
 *
 * The owner renews its owner key every few tens of milliseconds (same value, new mod
 * revision): a takeover's transaction checks that the revision is still the one the
 * claimant last saw, which proves that no renewal happened since (see docs/ha.md).
 */
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import type * as Etcd3Module from 'etcd3';
import type { Etcd3, Lease, Watcher } from 'etcd3';
import type * as Cockatiel from 'cockatiel';
import type { Logger } from '../log.js';
import type { OwnerRecord } from '../net/ownership.js';

/** An owner's renewal: put `value` again on `key` under `lease` if it is still there. */
export interface Renewal {
  key: string;
  value: string;
  lease: string;
}
/** An owner record left by a clean stop: nobody renews it; candidates wait `graceMs` longer before claiming. */
interface StoredOwner extends OwnerRecord {
  graceMs?: number;
}
export interface MoveRequest {
  to: string;
  whenIdle: boolean;
}

/** What the store says about one DVIPA, as last seen. */
export interface DvipaView {
  owner?: OwnerRecord;
  /**
   * The owner key holds something that is not an owner record (another version's, a hand
   * edit, corruption): someone may own the DVIPA, so nobody claims it while the key is there.
   * The value, cut to 200 characters, for the log.
   */
  unreadableOwner?: string;
  /** etcd mod revisions of the owner and epoch keys (0: absent): what a claim must still find. */
  ownerRev: number;
  epochRev: number;
  /** When this node last saw the owner key change, deletion included (performance.now() ms; 0: never). */
  ownerSeenAt: number;
  /** The owner stopped cleanly: its restarted agent may adopt the DVIPA for this long (ms). */
  ownerGraceMs?: number;
  lastEpoch: number;
  move?: MoveRequest;
  quiesced: Set<string>;
  /** Deleted by the operator (VIPADELETE): its owner gives it up and nobody claims it. */
  deleted?: boolean;
}

export interface CouplingFacility extends EventEmitter {
  /** Shared (etcd) or local to this node. */
  readonly shared: boolean;
  /** Whether the store answers now; without it nobody's ownership changes. */
  readonly healthy: boolean;
  /** While not healthy, why (what the operator reads in `netstat vipadyn`): the last failure seen. */
  readonly unhealthyWhy?: string;
  /** Times this node's lease expired under it (its owner and member keys went with it): never, on a healthy node. */
  readonly leasesLost: number;
  start(): Promise<void>;
  /** Nodes holding a lease now. */
  members(): Set<string>;
  view(dvipa: string): DvipaView;
  /**
   * Become the owner if the store still shows `seen`; keeps the epoch if this node already owns
   * it. `exact` (default): the owner key must be at the very revision seen (a takeover: no renewal since);
   * else its value (a living owner's renewals do not get in the way).
   */
  claim(dvipa: string, rank: number, seen: DvipaView, exact?: boolean): Promise<OwnerRecord | undefined>;
  /**
   * The owner key's mod revision now (0: none), read through the store within `timeoutMs`;
   * undefined if the store did not answer in time. A read: harmless however late it arrives.
   */
  probe(dvipa: string, timeoutMs: number): Promise<number | undefined>;
  setMove(dvipa: string, move: MoveRequest | undefined): Promise<void>;
  setQuiesced(dvipa: string, node: string, quiesced: boolean): Promise<void>;
  /** Gives up a DVIPA this node owns, if `owner` is still the record (false: it is not). */
  release(dvipa: string, owner: OwnerRecord): Promise<boolean>;
  /**
   * Leaves: owner keys move to a lease of `graceSec` that nobody renews, so a restarted agent
   * can adopt them before the backups take over; 0 gives everything up at once. The keys of
   * `handed` DVIPAs were moved already (by the renewal worker).
   */
  stop(graceSec: number, handed?: Set<string>): Promise<void>;
  // Events: 'change' (dvipa | undefined for membership), 'health' (healthy: boolean),
  // 'lease' (a new lease: keys bound to an earlier one are no longer this agent's).
}

export interface EtcdOptions {
  endpoints: string[];
  node: string;
  xcf: string;
  /** False: only look and make requests (the CLI): no lease, no membership, no claims. */
  member?: boolean;
  /** Lease TTL in whole seconds: how long a dead node keeps its DVIPAs. */
  ttlSec: number;
  prefix?: string;
  /** A call's deadline (default 2000 ms): calls fail fast and are retried by the caller. */
  callTimeoutMs?: number;
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  user?: string;
  password?: string;
  logger: Logger;
  /** This node's member record for a lease (members.ts); default {node, xcf}. */
  memberRecord?: (lease: string) => string;
  /**
   * Which member keys count as live nodes (a checked record, members.ts); default all. Said
   * before each 'change', as each member record is passed to the 'member' listeners.
   */
  isMember?: (node: string) => boolean;
}

/** How often at most this agent writes its member record again after someone else changed it. */
const REWRITE_MS = 1000;

const keyOf = (prefix: string, ...parts: string[]) => prefix + parts.join('/');

function parseOwner(v: string): StoredOwner | undefined {
  try {
    const o = JSON.parse(v) as StoredOwner;
    const grace = Number.isSafeInteger(o.graceMs) && o.graceMs! > 0 ? { graceMs: o.graceMs } : {};
    if (typeof o.node === 'string' && Number.isInteger(o.rank) && Number.isSafeInteger(o.epoch) && o.epoch > 0)
      return { node: o.node, rank: o.rank, epoch: o.epoch, ...grace };
  } catch {
    // fall through: not a record of ours (the view says so; nobody claims over it)
  }
  return undefined;
}

function parseMove(v: string): MoveRequest | undefined {
  try {
    const o = JSON.parse(v) as MoveRequest;
    if (typeof o.to === 'string') return { to: o.to, whenIdle: o.whenIdle === true };
  } catch {
    // ignored like an unknown owner record
  }
  return undefined;
}

/**
 * A claim's transaction, as data: built by the coupling facility, committed by the renewal
 * thread (renewal-worker.ts), which then renews at once, whatever the main thread is doing.
 */
export interface ClaimTxn {
  ownerKey: string;
  epochKey: string;
  /** The owner key as the claimant saw it: at this mod revision (0: absent; a takeover: no renewal since), or holding this value. */
  ownerWas: { mod: number } | { value: string };
  epochRev: number;
  /** The owner record put, under `lease`. */
  record: string;
  lease: string;
  /** The new epoch, put beside it (none when a node adopts its own record). */
  epoch?: string;
  /** A takeover (the owner dead): the address may be taken and announced the moment etcd says yes. */
  announce?: boolean;
  /**
   * A living owner replaced (takeback, move): the address may be taken once this key names
   * the claim's epoch (the old owner's RELEASED, markReleased), or a fence after the answer.
   */
  releasedKey?: string;
}

/** A `released/<dvipa>` record (markReleased) as the old owner wrote it; undefined for any other shape. */
export function parseReleased(value: string): { node: string; epoch: number } | undefined {
  let r: unknown;
  try {
    r = JSON.parse(value);
  } catch {
    return undefined;
  }
  const { node, epoch } = (r ?? {}) as { node?: unknown; epoch?: unknown };
  return typeof node === 'string' && typeof epoch === 'number' && Number.isSafeInteger(epoch)
    ? { node, epoch }
    : undefined;
}

/** Commits a claim: etcd's revision after it, or undefined if what the claimant saw had changed. */
export async function commitClaim(client: Etcd3, c: ClaimTxn, deadlineMs?: number): Promise<number | undefined> {
  const owner =
    'mod' in c.ownerWas
      ? client.if(c.ownerKey, 'Mod', '==', c.ownerWas.mod)
      : client.if(c.ownerKey, 'Value', '==', c.ownerWas.value);
  const txn = owner.and(c.epochKey, 'Mod', '==', c.epochRev);
  if (deadlineMs !== undefined) txn.options({ deadline: Date.now() + deadlineMs });
  const put = client.put(c.ownerKey).value(c.record).lease(c.lease);
  const res = await (
    c.epoch === undefined ? txn.then(put) : txn.then(put, client.put(c.epochKey).value(c.epoch))
  ).commit();
  return res.succeeded ? Number(res.header.revision) : undefined;
}

/** What reaching etcd takes: shared by the coupling facility and the renewal worker. */
export type EtcdConnection = Pick<
  EtcdOptions,
  'endpoints' | 'callTimeoutMs' | 'caFile' | 'certFile' | 'keyFile' | 'user' | 'password'
>;

/*
 * etcd3 (with gRPC) takes about half a second to load: it is loaded on the first client, so
 * that commands which never reach etcd (netstat, fastpath, config, --help) start without it.
 */
const load = createRequire(import.meta.url);

export function etcdClient(opts: EtcdConnection): Etcd3 {
  const { Etcd3: Client } = load('etcd3') as typeof Etcd3Module;
  const { ConstantBackoff, noop } = load('cockatiel') as typeof Cockatiel;
  const read = (f?: string) => (f ? fs.readFileSync(f) : undefined);
  const rootCertificate = read(opts.caFile);
  return new Client({
    hosts: opts.endpoints,
    dialTimeout: 2000,
    // A takeover reads every SA record of a DVIPA at once: thousands, over gRPC's 4 MiB default.
    // A lost connection (a link that was down) comes back within a second, not after gRPC's
    // backoff of up to two minutes: renewals must not wait for it.
    grpcOptions: {
      'grpc.max_receive_message_length': 256 * 1024 * 1024,
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
    },
    ...(rootCertificate
      ? { credentials: { rootCertificate, privateKey: read(opts.keyFile), certChain: read(opts.certFile) } }
      : {}),
    ...(opts.user ? { auth: { username: opts.user, password: opts.password ?? '' } } : {}),
    // Calls fail fast (the caller retries at its next evaluation); a lost watch comes back
    // within half a second, not after the library's exponential backoff of up to 30 s.
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + (opts.callTimeoutMs ?? 2000) }),
    faultHandling: { host: () => noop, global: noop, watchBackoff: new ConstantBackoff(500).next() },
  });
}

export class EtcdCoupling extends EventEmitter implements CouplingFacility {
  readonly shared = true;
  private readonly client: Etcd3;
  private readonly prefix: string;
  private lease?: Lease;
  private leaseId?: string;
  private watcher?: Watcher;
  /** key -> value, mod revision and when this node saw that revision, for everything under the prefix. */
  private readonly kv = new Map<string, { value: string; rev: number; seenAt: number }>();
  /** Owner keys deleted (a lease that expired, an owner that left): when this node saw it. */
  private readonly gone = new Map<string, number>();
  /**
   * Healthy is both: this node's lease renewed (a member) and the watch connected. Each is
   * told by its own events, and one's good news must not hide the other's failure: a lease
   * renewed beside a dead watch is a stale view of the store, on which nobody may claim.
   */
  private leaseOk: boolean;
  private watchOk = false;
  private ok = false;
  private why?: string;
  /** Grants tried since the lease was lost (0: not rejoining). */
  private rejoinAttempts = 0;
  private stopping = false;
  leasesLost = 0;
  /** The member record this agent wrote last, and when it last wrote it again. */
  private memberValue?: string;
  private rewroteAt = 0;
  private rewriteTimer?: NodeJS.Timeout;
  /** The last lease granted, with its id. */
  private granted?: { lease: Lease; id: string };
  /** This node's member record as etcd last showed it, and the lease it is bound to. */
  private ownRecord?: { value?: string; lease: string };

  /**
   * Who commits claims: this client, unless the agent hands them to its renewal thread, which
   * renews from the moment etcd says yes (a main thread that stalls after a claim must not
   * leave it unrenewed for a claim delay: a backup would take it over).
   */
  committer: (dvipa: string, c: ClaimTxn) => Promise<number | undefined>;

  constructor(private readonly opts: EtcdOptions) {
    super();
    this.prefix = opts.prefix ?? '/dvipa/';
    this.client = etcdClient(opts);
    this.committer = (_dvipa, c) => commitClaim(this.client, c);
    this.leaseOk = opts.member === false;
  }

  get healthy(): boolean {
    return this.ok;
  }

  get unhealthyWhy(): string | undefined {
    return this.ok ? undefined : (this.why ?? 'etcd not reached yet');
  }

  /** One of the two sources of health changed; logged and told when their conjunction does. */
  private setHealth(part: 'lease' | 'watch', ok: boolean, why?: string): void {
    if (part === 'lease') this.leaseOk = ok;
    else this.watchOk = ok;
    if (!ok) this.why = `${part}: ${why ?? 'failed'}`;
    const now = this.leaseOk && this.watchOk;
    if (now === this.ok) return;
    this.ok = now;
    if (now) this.opts.logger.info('coupling facility (etcd) reachable');
    else
      this.opts.logger.error(
        { why },
        'coupling facility (etcd) unreachable: the data plane keeps forwarding, no DVIPA changes owner',
      );
    this.emit('health', ok);
  }

  async start(): Promise<void> {
    if (this.opts.member !== false) await this.grantLease();
    const all = await this.client.getAll().prefix(this.prefix).exec();
    const seenAt = performance.now();
    for (const kv of all.kvs) {
      this.kv.set(kv.key.toString(), { value: kv.value.toString(), rev: Number(kv.mod_revision), seenAt });
      this.memberEvent(kv.key.toString(), kv.value.toString(), kv.lease);
    }
    this.watcher = await this.client
      .watch()
      .prefix(this.prefix)
      .startRevision(String(Number(all.header.revision) + 1))
      .create();
    this.watcher.on('put', (kv) =>
      this.onEvent(kv.key.toString(), { value: kv.value.toString(), rev: Number(kv.mod_revision) }, 0, kv.lease),
    );
    this.watcher.on('delete', (kv) => this.onEvent(kv.key.toString(), undefined, Number(kv.mod_revision)));
    this.watcher.on('disconnected', (e) => this.setHealth('watch', false, e.message));
    this.watcher.on('connected', () => this.setHealth('watch', true));
    this.setHealth('watch', true);
    this.emit('change', undefined);
  }

  private async grantLease(): Promise<void> {
    const lease = this.client.lease(this.opts.ttlSec);
    this.lease = lease;
    // A lease given up (a rejoin that failed half-way) says nothing of the store any more.
    const current = () => lease === this.lease && !this.stopping;
    lease.on('keepaliveSucceeded', () => current() && !this.rejoinAttempts && this.setHealth('lease', true));
    lease.on(
      'keepaliveFailed',
      (e: unknown) => current() && this.setHealth('lease', false, String((e as Error)?.message ?? e)),
    );
    let granted = false;
    lease.on('lost', (e) => {
      // A grant that failed is the caller's error to handle, not a lease to win back.
      if (!granted || !current()) return;
      // Expired (we were cut off longer than the TTL): our keys are gone, and so is our
      // ownership; come back with a new lease as soon as the store answers.
      this.leasesLost++;
      this.opts.logger.error({ err: e.message }, 'etcd lease lost: rejoining');
      this.setHealth('lease', false, `lost (${e.message}): rejoining`);
      void this.rejoin();
    });
    try {
      this.leaseId = await lease.grant();
      granted = true;
      this.granted = { lease, id: this.leaseId };
      this.emit('lease');
      await this.putMember();
      this.setHealth('lease', true);
    } catch (e) {
      // Not ours to keep alive: a later attempt grants another.
      if (lease === this.lease) this.lease = undefined;
      lease.release();
      throw e;
    }
  }

  private async putMember(): Promise<void> {
    // The lease and the id the record names, together: while a new lease is being granted
    // (rejoining), a record naming the old id must not be bound to the new lease.
    const g = this.granted;
    if (!g) return;
    const lease = g.lease;
    const value = this.opts.memberRecord?.(g.id) ?? JSON.stringify({ node: this.opts.node, xcf: this.opts.xcf });
    this.memberValue = value;
    await lease
      .put(keyOf(this.prefix, 'members', this.opts.node))
      .value(value)
      .exec();
  }

  /**
   * Passes a member record to the 'member' listeners; this node's own record, changed,
   * deleted or bound to another lease by someone else while its lease lives, is written again
   * (at most once a second).
   */
  private memberEvent(key: string, value: string | undefined, lease = '0'): void {
    const p = keyOf(this.prefix, 'members', '');
    if (!key.startsWith(p)) return;
    const name = key.slice(p.length);
    if (name !== this.opts.node) return void this.emit('member', name, value, lease);
    this.ownRecord = { value, lease };
    this.keepOwnRecord();
  }

  private keepOwnRecord(): void {
    const seen = this.ownRecord;
    if (this.stopping || this.memberValue === undefined || !seen) return;
    // The same value under another lease (replayed by someone else) is not ours either: it would outlive us.
    if (seen.value === this.memberValue && seen.lease === this.granted?.id) return;
    const now = Date.now();
    if (now - this.rewroteAt < REWRITE_MS) {
      // Written again at the end of the interval, if it still is not ours then.
      this.rewriteTimer ??= setTimeout(() => {
        this.rewriteTimer = undefined;
        this.keepOwnRecord();
      }, REWRITE_MS);
      return;
    }
    this.rewroteAt = now;
    this.opts.logger.error(
      { changed: seen.value === undefined ? 'deleted' : seen.value.slice(0, 200), lease: seen.lease },
      "this node's member record was changed by another writer of etcd: written again",
    );
    this.putMember().catch((e: Error) => this.opts.logger.warn({ err: e.message }, 'member record not written'));
  }

  /**
   * A new lease and member record, tried every half second until the store grants one. A
   * failure is said at the first attempt and every tenth (the operator sees why this node
   * claims nothing, also in `netstat vipadyn`), not twice a second.
   */
  private async rejoin(): Promise<void> {
    if (this.rejoinAttempts) return;
    while (!this.stopping) {
      this.rejoinAttempts++;
      try {
        await this.grantLease();
        this.rejoinAttempts = 0;
        this.emit('change', undefined);
        return;
      } catch (e) {
        const err = (e as Error).message;
        this.setHealth('lease', false, `lost: rejoining, attempt ${this.rejoinAttempts} failed (${err})`);
        if (this.rejoinAttempts % 10 === 1)
          this.opts.logger.warn({ err, attempts: this.rejoinAttempts }, 'etcd lease not granted again yet: retrying');
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  private onEvent(key: string, v: { value: string; rev: number } | undefined, deletedAt = 0, lease?: string): void {
    // A claim of ours may already have recorded a newer state than this event's.
    const known = this.kv.get(key)?.rev ?? 0;
    if ((v ? v.rev : deletedAt) < known) return;
    const rest = key.slice(this.prefix.length).split('/');
    const member = rest[0] === 'members' ? rest.slice(1).join('/') : undefined;
    const wasLive = member !== undefined && this.live(member);
    if (v) this.kv.set(key, { ...v, seenAt: performance.now() });
    else if (this.kv.delete(key)) this.gone.set(key, performance.now());
    this.memberEvent(key, v?.value, lease);
    if (v && rest[0] === 'released') this.releasedEvent(rest[1], v.value);
    // A member record that changes nobody's liveness (a refused one, a member's new record)
    // is no news to the election: 10,000 junk records must not cost 10,000 evaluations.
    if (member !== undefined && this.opts.isMember && wasLive === this.live(member)) return;
    this.emit('change', member === undefined ? rest[1] : undefined);
  }

  /** A RELEASED through etcd ('released', dvipa, node, epoch); a record of another shape is ignored, as a bad message is. */
  private releasedEvent(dvipa: string, value: string): void {
    const r = parseReleased(value);
    if (r) this.emit('released', dvipa, r.node, r.epoch);
  }

  /**
   * This node let the address go to the owner of `epoch`: said through etcd too, beside the
   * RELEASED message, which is lost when this node's connection to the new owner is one the
   * new owner's restart left dead (the takeback after a node comes back).
   */
  async markReleased(dvipa: string, epoch: number): Promise<void> {
    await this.client
      .put(keyOf(this.prefix, 'released', dvipa))
      .value(JSON.stringify({ node: this.opts.node, epoch }))
      .exec();
  }

  /** Every DVIPA the store knows anything about. */
  dvipas(): string[] {
    const out = new Set<string>();
    for (const k of this.kv.keys()) {
      const [kind, dvipa] = k.slice(this.prefix.length).split('/');
      if (kind !== 'members' && dvipa) out.add(dvipa);
    }
    return [...out].sort();
  }

  /** Whether `node` holds a lease now (and its record is a member's, with isMember). */
  private live(node: string): boolean {
    if (!this.kv.has(keyOf(this.prefix, 'members', node))) return false;
    return node === this.opts.node || (this.opts.isMember?.(node) ?? true);
  }

  members(): Set<string> {
    const p = keyOf(this.prefix, 'members', '');
    const names = [...this.kv.keys()].filter((k) => k.startsWith(p)).map((k) => k.slice(p.length));
    return new Set(names.filter((n) => this.live(n)));
  }

  view(dvipa: string): DvipaView {
    const owner = this.kv.get(keyOf(this.prefix, 'owner', dvipa));
    const epoch = this.kv.get(keyOf(this.prefix, 'epoch', dvipa));
    const move = this.kv.get(keyOf(this.prefix, 'move', dvipa));
    const q = keyOf(this.prefix, 'quiesce', dvipa, '');
    const stored = owner ? parseOwner(owner.value) : undefined;
    return {
      owner: stored ? { node: stored.node, rank: stored.rank, epoch: stored.epoch } : undefined,
      ...(stored?.graceMs ? { ownerGraceMs: stored.graceMs } : {}),
      unreadableOwner: owner && !stored ? owner.value.slice(0, 200) : undefined,
      ownerRev: owner?.rev ?? 0,
      epochRev: epoch?.rev ?? 0,
      ownerSeenAt: owner?.seenAt ?? this.gone.get(keyOf(this.prefix, 'owner', dvipa)) ?? 0,
      lastEpoch: Number(epoch?.value ?? 0) || 0,
      move: move ? parseMove(move.value) : undefined,
      quiesced: new Set([...this.kv.keys()].filter((k) => k.startsWith(q)).map((k) => k.slice(q.length))),
      ...(this.kv.has(keyOf(this.prefix, 'deleted', dvipa)) ? { deleted: true } : {}),
    };
  }

  async claim(dvipa: string, rank: number, seen: DvipaView, exact = true): Promise<OwnerRecord | undefined> {
    if (!this.leaseId) return undefined;
    const ownerKey = keyOf(this.prefix, 'owner', dvipa);
    const epochKey = keyOf(this.prefix, 'epoch', dvipa);
    const adopting = seen.owner?.node === this.opts.node;
    const record: OwnerRecord = {
      node: this.opts.node,
      rank,
      epoch: adopting ? seen.owner!.epoch : Math.max(seen.lastEpoch, seen.owner?.epoch ?? 0) + 1,
    };
    const seenValue = this.kv.get(ownerKey);
    const value = JSON.stringify(record);
    const rev = await this.committer(dvipa, {
      ownerKey,
      epochKey,
      ownerWas: exact || !seen.owner || !seenValue ? { mod: seen.ownerRev } : { value: seenValue.value },
      epochRev: seen.epochRev,
      record: value,
      lease: this.leaseId,
      ...(adopting ? {} : { epoch: String(record.epoch) }),
      ...(adopting ? {} : exact ? { announce: true } : { releasedKey: keyOf(this.prefix, 'released', dvipa) }),
    });
    if (rev === undefined) return undefined;
    // Known now, before the watch says so: a stop right after a claim must see it.
    const seenAt = performance.now();
    this.kv.set(ownerKey, { value, rev, seenAt });
    if (!adopting) this.kv.set(epochKey, { value: String(record.epoch), rev, seenAt });
    return record;
  }

  async probe(dvipa: string, timeoutMs: number): Promise<number | undefined> {
    try {
      const res = await this.client
        .get(keyOf(this.prefix, 'owner', dvipa))
        .options({ deadline: Date.now() + timeoutMs })
        .exec();
      return Number(res.kvs[0]?.mod_revision ?? 0);
    } catch {
      return undefined;
    }
  }

  /**
   * Opaque records under the cluster's prefix (the IPsec SA store's sealed records), written
   * only while `owner` still owns the DVIPA (its owner key unchanged): a deposed owner's writes fail.
   */
  async putBlobsFenced(entries: Array<[string, Buffer]>, dvipa: string, owner: OwnerRecord): Promise<boolean> {
    const ownerKey = keyOf(this.prefix, 'owner', dvipa);
    const res = await this.client
      .if(ownerKey, 'Value', '==', JSON.stringify(owner))
      .then(...entries.map(([key, value]) => this.client.put(this.prefix + key).value(value)))
      .commit();
    return res.succeeded;
  }

  async getBlobs(keyPrefix: string): Promise<Map<string, Buffer>> {
    const res = await this.client
      .getAll()
      .prefix(this.prefix + keyPrefix)
      .exec();
    return new Map(res.kvs.map((kv) => [kv.key.toString().slice(this.prefix.length), Buffer.from(kv.value)]));
  }

  /** Deletes the records under `keyPrefix`, fenced as putBlobsFenced; false: not deleted, `owner` is deposed. */
  async deleteBlobsFenced(keyPrefix: string, dvipa: string, owner: OwnerRecord): Promise<boolean> {
    const ownerKey = keyOf(this.prefix, 'owner', dvipa);
    const res = await this.client
      .if(ownerKey, 'Value', '==', JSON.stringify(owner))
      .then(this.client.delete().prefix(this.prefix + keyPrefix))
      .commit();
    return res.succeeded;
  }

  async setMove(dvipa: string, move: MoveRequest | undefined): Promise<void> {
    const key = keyOf(this.prefix, 'move', dvipa);
    if (move) await this.client.put(key).value(JSON.stringify(move)).exec();
    else await this.client.delete().key(key).exec();
  }

  async setQuiesced(dvipa: string, node: string, quiesced: boolean): Promise<void> {
    const key = keyOf(this.prefix, 'quiesce', dvipa, node);
    if (quiesced) await this.client.put(key).value('').exec();
    else await this.client.delete().key(key).exec();
  }

  async setDeleted(dvipa: string, deleted: boolean): Promise<void> {
    const key = keyOf(this.prefix, 'deleted', dvipa);
    if (deleted) await this.client.put(key).value('').exec();
    else await this.client.delete().key(key).exec();
  }

  async release(dvipa: string, owner: OwnerRecord): Promise<boolean> {
    const ownerKey = keyOf(this.prefix, 'owner', dvipa);
    const mine = this.client.if(ownerKey, 'Value', '==', JSON.stringify(owner));
    return (await mine.then(this.client.delete().key(ownerKey)).commit()).succeeded;
  }

  async stop(graceSec: number, handed = new Set<string>()): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    clearTimeout(this.rewriteTimer);
    const ownerKeys = keyOf(this.prefix, 'owner', '');
    try {
      const mine = [...this.kv].filter(
        ([k, v]) =>
          k.startsWith(ownerKeys) &&
          !handed.has(k.slice(ownerKeys.length)) &&
          parseOwner(v.value)?.node === this.opts.node,
      );
      if (graceSec > 0 && mine.length) {
        const grace = this.client.lease(graceSec, { autoKeepAlive: false });
        const id = await grace.grant();
        // The value (not a revision) says it is still ours.
        for (const [k, v] of mine) {
          const o = parseOwner(v.value)!;
          const graced = JSON.stringify({ ...o, graceMs: graceSec * 1000 });
          await this.client.if(k, 'Value', '==', v.value).then(this.client.put(k).value(graced).lease(id)).commit();
        }
        grace.release();
      }
      await this.lease?.revoke();
    } catch (e) {
      this.opts.logger.warn({ err: (e as Error).message }, 'etcd: leaving uncleanly; the lease expires by itself');
    } finally {
      this.lease?.release();
      await this.watcher?.cancel().catch(() => undefined);
      this.client.close();
    }
  }
}

/**
 * No shared store: this node owns what it defines or backs up, with epochs that only grow
 * (the caller keeps the last one in the pinned maps). Said loudly, as a cluster of more
 * than one node needs etcd to know who is alive.
 */
export class LocalCoupling extends EventEmitter implements CouplingFacility {
  readonly shared = false;
  readonly healthy = true;
  readonly leasesLost = 0;
  private readonly owners = new Map<string, OwnerRecord>();
  private readonly epochs = new Map<string, number>();

  constructor(
    private readonly node: string,
    private readonly logger: Logger,
  ) {
    super();
  }

  async start(): Promise<void> {
    this.logger.warn(
      'no coupling facility (--etcd): DVIPA ownership is local to this node; no takeover by or from other nodes',
    );
    this.emit('change', undefined);
  }

  members(): Set<string> {
    return new Set([this.node]);
  }

  /** The epoch this node's maps remember, so that a restarted agent keeps counting up. */
  remember(dvipa: string, epoch: number): void {
    this.epochs.set(dvipa, Math.max(epoch, this.epochs.get(dvipa) ?? 0));
  }

  view(dvipa: string): DvipaView {
    const owner = this.owners.get(dvipa);
    return {
      owner,
      ownerRev: owner?.epoch ?? 0,
      epochRev: 0,
      ownerSeenAt: 0,
      lastEpoch: this.epochs.get(dvipa) ?? 0,
      quiesced: new Set(),
    };
  }

  async claim(dvipa: string, rank: number, seen: DvipaView): Promise<OwnerRecord | undefined> {
    const record = { node: this.node, rank, epoch: (seen.owner?.epoch ?? seen.lastEpoch) + (seen.owner ? 0 : 1) };
    this.owners.set(dvipa, record);
    this.epochs.set(dvipa, record.epoch);
    return record;
  }

  async setMove(): Promise<void> {
    throw new Error('moving a DVIPA needs the coupling facility (--etcd)');
  }

  async setQuiesced(): Promise<void> {
    throw new Error('quiescing a DVIPA needs the coupling facility (--etcd)');
  }

  async release(dvipa: string): Promise<boolean> {
    return this.owners.delete(dvipa);
  }

  async probe(dvipa: string): Promise<number> {
    return this.view(dvipa).ownerRev;
  }

  async stop(): Promise<void> {
    this.owners.clear();
  }
}
