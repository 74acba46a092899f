/*
 * An agent's routing side, for every DVIPA this node defines or backs up: the distributor
 * on the external interface, the DPT of each distributed service kept equal to the targets
 * that listen (pushed as Maglev tables), and the CRT kept equal to the connections targets
 * report. Targets report to every candidate routing node, so a backup's tables are warm
 * and a takeover is only the address changing hands (own/disown); the epoch under which
 * this node owns a DVIPA is kept in the pinned maps for its next agent.
 */
import * as fs from 'node:fs';
import type { FastPath } from '../dataplane/fastpath.js';
import { NexthopFollower } from '../dataplane/nexthops.js';
import { CrtOrigin, FENCE_EXPIRED } from '../dataplane/structs.js';
import { IPPROTO, type Flow } from '../net/flow.js';
import { serviceName, type Service } from '../net/service.js';
import type { VdptRow } from './views.js';
import { clusterAddressFor, type ClusterConfig, type NodeSpec, type VipaDistribute } from '../config/model.js';
import type { DvipaPlan } from './roles.js';
import { MsgType, type ConnRef, type Conns, type Message, type SrvStat } from './messages.js';
import { connKey, servicesOf } from './services.js';
import { AddressHolder } from './address.js';
import { Dpt } from '../tables/dpt.js';
import type { Logger } from '../log.js';

/**
 * A report larger than this is applied in slices of this many connections, the event loop
 * turning between them: a full report holds up to 8,192, and applying it at once held the
 * loop for a hundred milliseconds and more (the first report after a start moves each
 * connection out of the unconfirmed flows, one syscall each), which on a busy node is a lease or a fence.
 */
const SLICE = 256;
/** Active counts change with every connection: tables are rebuilt at most this often. */
const PUSH_MS = 100;
/** Tables adopted from a previous agent wait for the targets' reports at most this long. */
const ADOPT_MS = 3000;
/**
 * After a DVIPA changes hands, the new owner distributes new connections as the previous
 * owner did for this long: connections the previous owner routed in its last moments, not
 * yet reported by their targets, then still find their target by the hash (their first
 * packets here miss the CRT). By then their targets have reported them.
 */
const INHERIT_MS = 3000;
/**
 * Handed over while this node still answered for it (a takeback, a move: its fence had not run
 * out), a DVIPA's fence drains (bpf/dvipa.h DVIPA_FENCE_DRAIN, written by the agent's renewal
 * thread): ARP for it is dropped at once, and what clients still send here is forwarded this
 * long, with this node's own distribution. They learn the new owner from its gratuitous ARP,
 * which waits for this node's release (handoff.ts); a client that misses it and its repeats
 * re-resolves the address within a few seconds. Without the drain the fence ran out before
 * that ARP and dropped tens of packets in most takebacks (docs/ha.md). A node whose fence has
 * run out (frozen, cut off) drains nothing.
 */
export const HANDOVER_DRAIN_MS = 5000;
/**
 * For this long after start the readiness gate waits for every candidate target, connected
 * or not (it has not had time to connect); after it, only for those that are connected.
 */
const GATE_WAIT_MS = 5000;

export interface RoutingOptions {
  /** Whether the node with this cluster address is connected now (this node itself: yes). */
  isConnected(xcf: string): boolean;
  /** The readiness gate opens with at least this many connected, synced targets (default 1). */
  readyTargets?: number;
  /** Whether the data plane answers for a DVIPA only until a deadline (a coupling facility decides ownership). */
  fencing: boolean;
}

interface Routed {
  distribute: VipaDistribute[];
  /** Epoch under which this node owns the DVIPA; 0 while it only keeps its tables warm. */
  epoch: number;
}

export class RoutingRole {
  /**
   * The DPT as each candidate routing node of a DVIPA distributes it (its own VIPADISTribute
   * or the owner's), all fed by the same reports: this node's for its own tables, the others'
   * to continue a previous owner's distribution for a while after a change of owner.
   */
  private readonly dpts = new Map<string, Dpt>();
  /** Service name -> the node whose distribution its table follows for now (INHERIT_MS). */
  private readonly inheriting = new Map<string, { from: string; timer: NodeJS.Timeout }>();
  /** Inherited services whose tables are still to be built (inheritNext). */
  private readonly inheritQueue = new Set<string>();
  /** Waiters for the queue's end (inherit's promises). */
  private readonly inherited: Array<() => void> = [];
  /** Who routes each DVIPA, as the coupling facility says (follow). */
  private readonly owners = new Map<string, string>();
  /** DVIPAs this node lost to a living owner, until its drain ends: it keeps its own distribution. */
  private readonly draining = new Map<string, NodeJS.Timeout>();
  /** Service name -> data-plane service. */
  private readonly routed = new Map<string, Service>();
  /** DVIPAs this node owns or backs up. */
  private readonly dvipas = new Map<string, Routed>();
  /** TIMEDAFFINITY seconds per service. */
  private readonly affinity = new Map<string, number>();
  /** The connections each target reports, by target: for active counts (WEIGHTEDACTIVE), idleness, and what a full report ends. */
  private readonly conns = new Map<string, Map<string, { service: string; ref: ConnRef }>>();
  /** Per target, its connections per service: kept with `conns`, so that a report costs its own size, not the table's. */
  private readonly activeCounts = new Map<string, Map<string, number>>();
  /** Connections reported that did not fit the table of confirmed ones (full): retried at each report. */
  private readonly unconfirmed = new Set<string>();
  /** Confirmations the full table refused, since start (a metric). */
  confirmRefused = 0;
  private fullLogged = false;
  /**
   * Per target, its reports being applied in slices: later ones wait for them (a report
   * only makes sense after the ones before it). `generation` changes when the target goes.
   */
  private readonly applying = new Map<string, Promise<void>>();
  private readonly generation = new Map<string, number>();
  private stopped = false;
  /** Targets whose full SRVSTAT and full CONNS arrived since they connected. */
  private readonly synced = new Map<string, { srvstat: boolean; conns: boolean }>();
  /** Services whose pinned tables a previous agent left: kept until the targets have reported. */
  private readonly deferred = new Set<string>();
  /** Per service, the weights and affinity of the table last written. */
  private readonly pushed = new Map<string, string>();
  /** Services whose table must be rebuilt; active counts change often, tables are rebuilt at most every PUSH_MS. */
  private readonly dirty = new Set<string>();
  private readonly address?: AddressHolder;
  /** Keeps the targets' next hops in the data plane equal to the kernel's routes and neighbours. */
  private readonly nexthops: NexthopFollower;
  private pushTimer?: NodeJS.Timeout;
  private adoptTimer?: NodeJS.Timeout;
  private readonly startedAt = Date.now();

  constructor(
    private readonly fp: FastPath,
    private readonly node: NodeSpec,
    private readonly config: ClusterConfig,
    private readonly opts: RoutingOptions,
    private readonly log: Logger,
  ) {
    if (node.external) this.address = new AddressHolder(node.external, log, (a) => this.answering(a));
    this.nexthops = new NexthopFollower(fp, log);
  }

  /** What following the kernel's routes and neighbours for the targets' next hops has done. */
  get nexthopStats(): Readonly<NexthopFollower['stats']> {
    return this.nexthops.stats;
  }

  /** Whether this node routes or backs up any DVIPA: it has a VIPA list to send. */
  get announces(): boolean {
    return this.dvipas.size > 0;
  }

  stop(): void {
    this.stopped = true;
    for (const i of this.inheriting.values()) clearTimeout(i.timer);
    for (const t of this.draining.values()) clearTimeout(t);
    clearTimeout(this.pushTimer);
    clearTimeout(this.adoptTimer);
    this.address?.stop();
    this.nexthops.stop();
  }

  /** Programs the DVIPA's services (this node's own VIPADISTribute if it has one, else the owner's). */
  route(plan: DvipaPlan): void {
    for (const ifname of this.node.internal) {
      this.fp.enableEgress(ifname);
      // Targets' replies may come back through this node, sourced from the DVIPA, which is
      // a local address here while this node owns it: without accept_local the kernel
      // drops them as martians.
      fs.writeFileSync(`/proc/sys/net/ipv4/conf/${ifname}/accept_local`, '1');
    }
    if (this.node.external) this.fp.attach('distributor', this.node.external);
    // After the attach: next hops are resolved from the external interface.
    this.nexthops.start();
    const distribute = distributionOf(plan, this.node.name);
    this.dvipas.set(plan.address, { distribute, epoch: 0 });
    // With fencing, the data plane answers only within a confirmed right: a previous agent's
    // deadline stays until it runs out; a node that never owned the DVIPA has none.
    if (!this.opts.fencing) this.fp.setFence(plan.address, undefined);
    else if (this.fp.fenceOf(plan.address) === undefined) this.fp.setFence(plan.address, FENCE_EXPIRED);
    const everyNode = this.config.nodes.map((n) => ({ xcf: clusterAddressFor(n, plan.address) }));
    for (const node of candidatesOf(plan)) {
      if (!this.dpts.has(node)) this.dpts.set(node, new Dpt());
      for (const d of distributionOf(plan, node)) {
        for (const s of servicesOf(d))
          this.dpts.get(node)!.define(serviceName(s), {
            method: d.method,
            destinations: d.destinations === 'all' ? everyNode : d.destinations,
          });
      }
    }
    for (const d of distribute) {
      for (const s of servicesOf(d)) {
        const name = serviceName(s);
        this.routed.set(name, s);
        this.affinity.set(name, d.timedAffinity);
        // Pinned tables of a previous agent keep forwarding new connections until the
        // targets have told this one who listens: an empty DPT now would refuse them.
        if (this.fp.serviceId(s) !== undefined) this.deferred.add(name);
        else this.push(name);
      }
    }
    if (this.deferred.size) {
      clearTimeout(this.adoptTimer);
      this.adoptTimer = setTimeout(() => this.pushDeferred(true), ADOPT_MS);
    }
  }

  /**
   * `owner` routes the DVIPA now (the coupling facility says so). A backup's tables follow the
   * owner's distribution: a takeover or takeback then finds them built (inherit has nothing
   * to do on its path), and a connection the owner opened in its last moments, not yet
   * reported, hashes to the same target here. A node that lost the DVIPA to a living owner
   * keeps its own until its drain ends, as it still forwards what reaches it.
   */
  follow(dvipa: string, owner: string | undefined): void {
    if (!this.dvipas.has(dvipa) || owner === undefined || owner === this.owners.get(dvipa)) return;
    this.owners.set(dvipa, owner);
    if (owner !== this.node.name && !this.draining.has(dvipa)) this.rebuild(dvipa);
  }

  private rebuild(dvipa: string): void {
    for (const [name, s] of this.routed) if (s.vip === dvipa) this.pushSoon(name);
  }

  /**
   * Whether the DVIPA's tables are those its source's DPT makes now (a backup's: the owner's);
   * those that are not are built soon (pushSoon), and a takeback claims once they are (Election).
   */
  prepared(dvipa: string): boolean {
    // Draining, the tables are this node's own on purpose (it still forwards what reaches it):
    // a claim now would announce the address before they follow the owner.
    if (this.draining.has(dvipa)) return false;
    let current = true;
    for (const [name, s] of this.routed) {
      if (s.vip !== dvipa || this.deferred.has(name)) continue;
      if (this.pushed.get(name) === this.tableOf(name).key) continue;
      current = false;
      this.pushSoon(name);
    }
    return current;
  }

  /** Whose DPT a service's table is built from: a previous owner's while inherited, the owner's while this node backs it up. */
  private sourceOf(name: string): string {
    const inherited = this.inheriting.get(name)?.from;
    if (inherited !== undefined) return inherited;
    const vip = this.routed.get(name)?.vip;
    if (vip === undefined || this.epochOf(vip) > 0 || this.draining.has(vip)) return this.node.name;
    const owner = this.owners.get(vip);
    return owner !== undefined && this.dpts.has(owner) ? owner : this.node.name;
  }

  /** The epoch the pinned data plane last owned the DVIPA under, if any. */
  pinnedEpoch(dvipa: string): number {
    return this.fp.epochOf(dvipa) ?? 0;
  }

  /**
   * This node routes the DVIPA from now on: its address, announced, and its epoch in the maps.
   * Taken from `previous`, it first distributes as that node did (INHERIT_MS). With
   * `announceAfter`, the address is taken (and so ARP answered) once that resolves.
   */
  own(dvipa: string, epoch: number, previous?: string, announceAfter?: Promise<unknown>): void {
    const d = this.dvipas.get(dvipa);
    if (!d) throw new Error(`${dvipa}: not a DVIPA this node routes or backs up`);
    d.epoch = epoch;
    if (this.routedHere(dvipa)) this.fp.setEpoch(dvipa, epoch);
    // A backup's tables follow the owner's (follow), so there is mostly nothing to build.
    // After a death the address is announced first: every client waits for it, and only a
    // connection opened in the owner's last moments and not yet reported can miss tables
    // still being built. A living owner replaced forwards meanwhile (its drain): the address
    // waits for the tables too.
    const take = (after?: Promise<unknown>) => {
      if (this.address) this.address.take(dvipa, after);
      else this.log.warn({ dvipa }, 'no EXTERNAL interface: the DVIPA is owned but not announced by this node');
    };
    if (!announceAfter) take();
    const built = previous && previous !== this.node.name ? this.inherit(dvipa, previous) : undefined;
    if (announceAfter) take(built ? Promise.all([announceAfter, built]) : announceAfter);
  }

  /**
   * Another node routes it now: the address goes, the tables stay this node's own while its
   * fence drains (HANDOVER_DRAIN_MS), then follow the new owner's. Resolves once the address
   * is off the interface: this node's stack answers ARP for it no more.
   *
   * A data plane that forwards nothing for it any more (its fence ran out: a node back from
   * the dead, told by etcd that its pinned epoch is stale) has nothing to drain: its tables
   * follow the new owner at once. They kept its own distribution for 5 s before, so a
   * takeback claimed within them (its readiness gate opens 3-5 s after a start) announced
   * the address before the tables followed the owner, and a connection the owner had opened
   * was hashed to another target here (a target of this node's list only): reset.
   */
  async disown(dvipa: string): Promise<void> {
    const d = this.dvipas.get(dvipa);
    if (!d) return;
    const drains = this.forwarding(dvipa);
    d.epoch = 0;
    if (this.routedHere(dvipa)) this.fp.setEpoch(dvipa, 0);
    clearTimeout(this.draining.get(dvipa));
    this.draining.delete(dvipa);
    if (drains) {
      const drained = setTimeout(() => {
        this.draining.delete(dvipa);
        this.rebuild(dvipa);
      }, HANDOVER_DRAIN_MS);
      this.draining.set(dvipa, drained);
    } else this.rebuild(dvipa);
    await this.address?.give(dvipa);
  }

  /** Whether the data plane answers for the DVIPA now (no fencing: always). */
  answering(dvipa: string): boolean {
    return this.fenceState(dvipa) === 'answering';
  }

  /** Whether the data plane forwards the DVIPA's traffic now: it answers for it, or drains. */
  private forwarding(dvipa: string): boolean {
    return this.fenceState(dvipa) !== 'silent';
  }

  /** What the DVIPA's fence lets the data plane do now, from one read of the map (no fencing: answer). */
  private fenceState(dvipa: string): 'answering' | 'draining' | 'silent' {
    if (!this.opts.fencing) return 'answering';
    const f = this.fp.fenceOf(dvipa);
    if (f === undefined || f.deadlineNs <= process.hrtime.bigint()) return 'silent';
    return f.draining ? 'draining' : 'answering';
  }

  /** Resolves once the DVIPA's services are built from `from`'s DPT (or dropped: a stop). */
  private inherit(dvipa: string, from: string): Promise<void> {
    const theirs = this.dpts.get(from);
    if (!theirs) return Promise.resolve();
    const idle = this.inheritQueue.size === 0;
    for (const [name, s] of this.routed) {
      if (s.vip !== dvipa || !theirs.serviceNames().includes(name)) continue;
      clearTimeout(this.inheriting.get(name)?.timer);
      const timer = setTimeout(() => {
        this.inheriting.delete(name);
        this.push(name);
      }, INHERIT_MS);
      this.inheriting.set(name, { from, timer });
      this.inheritQueue.add(name);
    }
    if (!this.inheritQueue.size) return Promise.resolve();
    const done = new Promise<void>((resolve) => this.inherited.push(resolve));
    if (idle) this.inheritNext();
    return done;
  }

  /**
   * One table built a turn of the event loop (those the same as in place cost nothing): each
   * table swap waits for an RCU grace period (about 15 ms on an idle 2-core VM), and the
   * takeover's other work (the next DVIPA's claim, the old owner's RELEASED) must not queue
   * behind all of them.
   */
  private inheritNext(): void {
    for (const name of this.inheritQueue) {
      if (this.stopped) return;
      this.inheritQueue.delete(name);
      // A table the same as the one in place (a backup's, which followed the owner) costs nothing.
      if (this.inheriting.has(name) && this.push(name) && this.inheritQueue.size)
        return void setImmediate(() => this.inheritNext());
    }
    for (const resolve of this.inherited.splice(0)) resolve();
  }

  epochOf(dvipa: string): number {
    return this.dvipas.get(dvipa)?.epoch ?? 0;
  }

  private routedHere(dvipa: string): boolean {
    return this.fp.epochOf(dvipa) !== undefined;
  }

  private candidateTargets(dvipa: string): string[] {
    const ds = this.dvipas.get(dvipa)?.distribute ?? [];
    if (ds.some((d) => d.destinations === 'all')) return this.config.nodes.map((n) => clusterAddressFor(n, dvipa));
    return [...new Set(ds.flatMap((d) => (d.destinations === 'all' ? [] : d.destinations.map((x) => x.xcf))))];
  }

  /**
   * The readiness gate: the distributor is attached and every candidate target has sent its
   * full SRVSTAT and CONNS, so the DPT and the CRT are complete. Targets that are not
   * connected count only while they may still be connecting (GATE_WAIT_MS after start).
   * And at least `readyTargets` of them (or all, if fewer) are connected and synced: a node
   * cut off from its targets (a wrong key, a partition) never takes a DVIPA back to route it nowhere.
   */
  ready(dvipa: string): boolean {
    return this.notReady(dvipa) === undefined;
  }

  /** What the readiness gate waits for, in words (undefined: open). */
  notReady(dvipa: string): string | undefined {
    if (!this.dvipas.has(dvipa)) return 'not a DVIPA this node routes';
    const connecting = Date.now() - this.startedAt < GATE_WAIT_MS;
    const candidates = this.candidateTargets(dvipa);
    const synced = (x: string) => this.synced.get(x)?.srvstat === true && this.synced.get(x)?.conns === true;
    const up = candidates.filter((x) => this.opts.isConnected(x));
    const unsynced = up.filter((x) => !synced(x));
    if (unsynced.length) return `no full report yet from ${unsynced.join(', ')}`;
    const absent = candidates.filter((x) => !up.includes(x));
    if (connecting && absent.length) return `targets may still connect (${absent.join(', ')})`;
    const quorum = Math.min(this.opts.readyTargets ?? 1, candidates.length);
    if (up.length < quorum) return `${up.length} of the ${quorum} targets it needs connected and reporting`;
    return undefined;
  }

  /** No connection through the DVIPA is known (for WHENIDLE moves). */
  idle(dvipa: string): boolean {
    const prefix = `${dvipa}:`;
    return ![...this.conns.values()].some((mine) => [...mine.values()].some((c) => c.service.startsWith(prefix)));
  }

  private pushDeferred(force: boolean): void {
    for (const name of [...this.deferred]) {
      if (!force && !this.ready(this.routed.get(name)!.vip)) continue;
      this.deferred.delete(name);
      this.push(name);
    }
  }

  /**
   * What this node distributes and to whom, as every peer is told when it connects: a backup
   * too (epoch 0 until it owns the DVIPA), so that targets whose own file does not name it
   * (per-node files, members found through etcd) report to it before it takes over.
   */
  vipaList(): Message {
    const dvipas = [...this.dvipas].map(([address, d]) => ({
      address,
      epoch: d.epoch,
      services: d.distribute.flatMap((dist) =>
        servicesOf(dist).map((s) => ({
          port: s.port,
          protocol: s.protocol,
          targets: dist.destinations === 'all' ? ('all' as const) : dist.destinations.map((x) => x.xcf),
        })),
      ),
    }));
    return { type: MsgType.VipaList, body: { dvipas } };
  }

  /** Builds the service's table from its DPT; whether it had to (it differed from the one in place). */
  private push(name: string): boolean {
    if (this.deferred.has(name)) return false;
    const s = this.routed.get(name)!;
    // A table the same as the one in place is not built again: 65,537 slots in a new map, each
    // time active counts change (every slice of a report), whatever the method makes of them.
    const { weights, affinitySec, key } = this.tableOf(name);
    if (this.pushed.get(name) === key && this.fp.serviceId(s) !== undefined) return false;
    this.fp.setTargets(s, weights, { affinitySec });
    this.pushed.set(name, key);
    return true;
  }

  /** What the service's table is built from now (its source's weights, its affinity), and that as a key. */
  private tableOf(name: string) {
    const weights = this.dpts.get(this.sourceOf(name))!.weights(name);
    const affinitySec = this.affinity.get(name);
    return { weights, affinitySec, key: JSON.stringify([weights, affinitySec]) };
  }

  private pushSoon(name: string): void {
    this.dirty.add(name);
    this.pushTimer ??= setTimeout(() => {
      this.pushTimer = undefined;
      for (const n of this.dirty) this.push(n);
      this.dirty.clear();
    }, PUSH_MS);
  }

  private serviceOfConn(c: ConnRef): string | undefined {
    for (const port of [c.dport, 0]) {
      const name = serviceName({ vip: c.daddr, port, protocol: c.protocol });
      if (this.routed.has(name)) return name;
    }
    return undefined;
  }

  /** The DPT as `dvipa netstat vdpt` shows it: per service and target. */
  vdpt(): VdptRow[] {
    const rows: VdptRow[] = [];
    for (const [name, s] of this.routed) {
      // This node's own distribution, or the previous owner's while inherited: a backup's
      // tables follow the owner (follow), its display shows what it will distribute.
      const source = this.inheriting.get(name)?.from ?? this.node.name;
      const dpt = this.dpts.get(source)!;
      const weights = new Map(dpt.weights(name).map((t) => [t.addr, t.weight]));
      const id = this.fp.serviceId(s);
      const stats = id === undefined ? undefined : this.fp.serviceStats(id);
      for (const t of dpt.targets(name)) {
        // The data plane's per-target counts: a connection where it creates its CRT entry (short
        // connections too), and every packet it sends there.
        const counts = id === undefined ? { conns: 0n, packets: 0n, bytes: 0n } : this.fp.targetCounts(id, t.xcf);
        rows.push({
          dvipa: s.vip,
          port: s.port,
          protocol: s.protocol,
          target: t.xcf,
          ready: t.ready,
          weight: weights.get(t.xcf) ?? 0,
          load: t.load,
          activeConn: t.active,
          totalConn: Number(counts.conns),
          sent: { packets: counts.packets, bytes: counts.bytes },
          method: dpt.method(name),
          owner: this.epochOf(s.vip) > 0,
          following: source === this.node.name ? undefined : source,
          ...(stats
            ? {
                service: {
                  packets: stats.packets,
                  bytes: stats.bytes,
                  crtHit: stats.crtHit,
                  crtNew: stats.crtNew,
                  recovered: stats.recovered,
                  crtGuarded: stats.crtGuarded,
                  forwarded: stats.forwarded,
                  dropped: stats.dropped,
                },
              }
            : {}),
        });
      }
    }
    return rows;
  }

  /** A report into every candidate's DPT; whether the one this service's table follows now changed. */
  private update(name: string, xcf: string, change: Parameters<Dpt['update']>[2]): boolean {
    const source = this.sourceOf(name);
    let changed = false;
    for (const [node, dpt] of this.dpts) if (dpt.update(name, xcf, change) && node === source) changed = true;
    return changed;
  }

  /** A target's SRVSTAT: which services it listens on, and its load. */
  onSrvStat(peer: string, xcf: string, body: SrvStat): void {
    if (body.full) this.synced.set(xcf, { srvstat: true, conns: this.synced.get(xcf)?.conns ?? false });
    const up = new Set(body.up.map((r) => `${r.dvipa}:${r.port === 0 ? '*' : r.port}/${r.protocol}`));
    const down = new Set(body.down.map((r) => `${r.dvipa}:${r.port === 0 ? '*' : r.port}/${r.protocol}`));
    for (const name of this.routed.keys()) {
      const ready = up.has(name) ? true : down.has(name) || body.full ? false : undefined;
      if (this.update(name, xcf, { ready, load: body.load })) {
        this.push(name);
        this.log.info({ service: name, target: peer, ready, load: body.load }, 'DPT changed');
      }
    }
  }

  /**
   * A target's NEWCONN/TERMCONN. `named`: the target has other cluster addresses too, and
   * `xcf` takes only the connections of services whose targets name it.
   */
  onConns(xcf: string, body: Conns, named = false): void {
    const mine = (cs: ConnRef[]) =>
      named ? cs.filter((c) => this.fp.targetIndexOf(this.svcIdOf(c) ?? -1, xcf) !== 0) : cs;
    const [added, removed] = [mine(body.added), mine(body.removed)];
    const queued = this.applying.get(xcf);
    if (!queued && added.length + removed.length <= SLICE) {
      this.applyConns(xcf, body.full, added, removed);
      return this.reported(xcf, body.full);
    }
    const generation = this.generation.get(xcf) ?? 0;
    const done: Promise<void> = (queued ?? Promise.resolve())
      .then(() => this.applySliced(xcf, body.full, added, removed))
      .then(() => this.reported(xcf, body.full && this.generation.get(xcf) === generation))
      .catch((e: Error) =>
        this.log.warn({ target: xcf, err: e.message }, 'a report of connections could not be applied'),
      )
      .finally(() => {
        if (this.applying.get(xcf) === done) this.applying.delete(xcf);
      });
    this.applying.set(xcf, done);
  }

  /** A full report of the target is in (and, for the readiness gate, it is synced). */
  private reported(xcf: string, full: boolean): void {
    if (!full || this.stopped) return;
    this.synced.set(xcf, { srvstat: this.synced.get(xcf)?.srvstat ?? false, conns: true });
    if (this.deferred.size) this.pushDeferred(false);
  }

  /**
   * A big report, SLICE connections per turn of the event loop. A full one also ends what the
   * target reported before and no longer does: what its slices did not mark, found once they
   * are in (a set of a full report's 8,192 keys built at the start held the loop for tens of
   * milliseconds, every resync, on a loaded machine).
   */
  private async applySliced(xcf: string, full: boolean, added: ConnRef[], removed: ConnRef[]): Promise<void> {
    const marked = full ? new Set<string>() : undefined;
    if (!(await this.inSlices(added, (slice) => this.applyConns(xcf, false, slice, [], marked)))) return;
    const gone = [...removed];
    if (marked) for (const [k, v] of this.conns.get(xcf) ?? []) if (!marked.has(k)) gone.push(v.ref);
    await this.inSlices(gone, (slice) => this.applyConns(xcf, false, [], slice));
  }

  /** `apply` on SLICE connections per turn of the event loop; false if the role stopped in between. */
  private async inSlices(list: ConnRef[], apply: (slice: ConnRef[]) => void): Promise<boolean> {
    for (let i = 0; i < list.length; i += SLICE) {
      if (this.stopped) return false;
      apply(list.slice(i, i + SLICE));
      await new Promise((r) => setImmediate(r));
    }
    return true;
  }

  private flowOf(c: ConnRef): Flow {
    return { saddr: c.saddr, daddr: c.daddr, sport: c.sport, dport: c.dport, proto: IPPROTO[c.protocol] };
  }

  private svcIdOf(c: ConnRef): number | undefined {
    return (
      this.fp.serviceId({ vip: c.daddr, port: c.dport, protocol: c.protocol }) ??
      this.fp.serviceId({ vip: c.daddr, port: 0, protocol: c.protocol })
    );
  }

  /** `marked`: where the keys of `added` go (a sliced full report's, applySliced). */
  private applyConns(xcf: string, full: boolean, added: ConnRef[], removed: ConnRef[], marked?: Set<string>): void {
    const gone = [...removed];
    const known = this.conns.get(xcf);
    // Each connection's key once: a full report holds thousands.
    const keys = added.map(connKey);
    if (marked) for (const k of keys) marked.add(k);
    if (full) {
      // What this target reported before and no longer does ended. Found in its own reports,
      // never by walking the CRT on the event loop: a SYN flood can fill that with a million entries.
      const keep = new Set(keys);
      for (const [k, v] of known ?? []) if (!keep.has(k)) gone.push(v.ref);
    }
    // Only what is not confirmed yet is written: a full report repeats every connection.
    const fresh = added.filter((_, i) => !known?.has(keys[i]) || this.unconfirmed.has(keys[i]));
    this.countActive(xcf, added, keys, gone);
    // One map lookup per service, not per connection: a report holds thousands of one service.
    const ids = new Map<string, number | undefined>();
    const refOf = new Map<Flow, ConnRef>();
    const now = process.hrtime.bigint();
    const entries = fresh.flatMap((c) => {
      const k = `${c.daddr}:${c.dport}/${c.protocol}`;
      if (!ids.has(k)) ids.set(k, this.svcIdOf(c));
      const svcId = ids.get(k);
      if (svcId === undefined) return [];
      const f = this.flowOf(c);
      refOf.set(f, c);
      return [
        [
          f,
          {
            target: xcf,
            svcId,
            origin: CrtOrigin.Control,
            targetIdx: this.fp.targetIndexOf(svcId, xcf),
            // When this agent confirmed it: what a restarted agent's sweep keeps (Agent).
            createdNs: now,
          },
        ] as const,
      ];
    });
    for (const c of fresh) this.unconfirmed.delete(connKey(c));
    // The data plane's FastPath knows which of its tables each connection belongs in.
    const refused = this.fp.confirm(entries);
    this.confirmRefused += refused.length;
    if (refused.length && !this.fullLogged) {
      this.fullLogged = true;
      this.log.warn(
        { refused: refused.length, size: this.fp.confirmedCapacity() },
        'the table of confirmed connections is full: new ones stay among the unconfirmed flows (counted, retried on the next full report)',
      );
    }
    for (const f of refused) this.unconfirmed.add(connKey(refOf.get(f)!));
    for (const c of gone) {
      this.unconfirmed.delete(connKey(c));
      this.fp.forget(this.flowOf(c));
    }
  }

  /** Active connections per service of this target, into the DPT (used by WEIGHTEDACTIVE). */
  private countActive(xcf: string, added: ConnRef[], addedKeys: string[], gone: ConnRef[]): void {
    const mine = this.conns.get(xcf) ?? new Map<string, { service: string; ref: ConnRef }>();
    const counts = this.activeCounts.get(xcf) ?? new Map<string, number>();
    this.conns.set(xcf, mine);
    this.activeCounts.set(xcf, counts);
    for (const c of gone) {
      const key = connKey(c);
      const was = mine.get(key);
      if (!was) continue;
      mine.delete(key);
      counts.set(was.service, (counts.get(was.service) ?? 1) - 1);
    }
    for (const [i, c] of added.entries()) {
      const key = addedKeys[i];
      if (mine.has(key)) continue;
      const service = this.serviceOfConn(c);
      if (!service) continue;
      counts.set(service, (counts.get(service) ?? 0) + 1);
      mine.set(key, { service, ref: c });
    }
    for (const name of this.routed.keys())
      if (this.update(name, xcf, { active: counts.get(name) ?? 0 })) this.pushSoon(name);
  }

  /** A target agent went away: no new connections for it until it reports again. */
  targetGone(xcf: string): void {
    this.synced.delete(xcf);
    // A report still being applied goes on into the tables, but does not make it synced.
    this.generation.set(xcf, (this.generation.get(xcf) ?? 0) + 1);
    for (const name of this.routed.keys()) if (this.update(name, xcf, { ready: false })) this.push(name);
  }
}

/** The routing nodes that may route the DVIPA: the one that defines it and its backups. */
export function candidatesOf(plan: DvipaPlan): string[] {
  return [...(plan.routingNode ? [plan.routingNode] : []), ...plan.backups.map((b) => b.node)];
}

/** How `node` distributes the DVIPA when it routes it: its own VIPADISTribute, else the owner's. */
export function distributionOf(plan: DvipaPlan, node: string): VipaDistribute[] {
  return node === plan.routingNode ? plan.distribute : (plan.backupDistribute.get(node) ?? plan.distribute);
}
