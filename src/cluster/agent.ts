/*
 * The agent on every node. From the configuration it knows, per DVIPA, whether it defines
 * it, backs it up or is a candidate target; it runs the routing side (router.ts) for the
 * DVIPAs it may route, the target side (target.ts) for those it serves, and the election
 * (election.ts) that decides through the coupling facility (etcd) which node owns each
 * DVIPA now. A routing node sends its VIPA list to every peer as it connects; a target
 * sends everything it has to each candidate routing node as it connects; a new owner tells
 * every node (DVIPA message), whose targets then send it everything again.
 */
import { FastPath } from '../dataplane/fastpath.js';
import { clusterAddresses, type ClusterConfig, type NodeSpec } from '../config/model.js';
import { ipFamily } from '../net/addr.js';
import { planDvipas, rolesOf, type DvipaPlan, type Role } from './roles.js';
import { ControlServer } from './control.js';
import type { ControlHandlers } from './control-protocol.js';
import { VCRT_DEFAULT_LIMIT, vcrtView, vipadynRow, type CouplingState, type VipadynRow } from './views.js';
import { AgentMetrics } from './metrics.js';
import { formatProfile } from '../config/format.js';
import { CrtWalker } from '../dataplane/crt-walk.js';
import { MapCounter } from '../dataplane/map-count.js';
import { EtcdCoupling, LocalCoupling, type CouplingFacility, type EtcdOptions } from './coupling.js';
import { Election, PRIMARY_RANK, type DvipaCandidacy } from './election.js';
import type { Claim, OwnerRecord } from '../net/ownership.js';
import { Transport } from './transport.js';
import { MemberSigner, Membership, type MemberRecord } from './members.js';
import { VERSION as FRAME_VERSION } from './frame.js';
import type { Identities } from './handshake.js';
import { DEFAULTS } from '../config/settings.js';
import { MsgType, type DvipaChange, type Message } from './messages.js';
import { Admission } from './admission.js';
import { Refusals } from './refusals.js';
import { Heartbeat } from './heartbeat.js';
import { Renewer } from './renewer.js';
import { Handoffs } from './handoff.js';
import { HANDOVER_DRAIN_MS, RoutingRole } from './router.js';
import { TargetRole, type TargetOptions } from './target.js';
import { ViaRoutes } from './via-routes.js';
import type { Logger } from '../log.js';
import { IpsecRole, type IpsecOptions } from '../ipsec/ipsec-role.js';
import * as xfrm from '../ipsec/xfrm.js';
import { XfrmEventStream } from '../ipsec/events.js';
import { ViciDaemon } from '../ipsec/ike.js';

export interface HaOptions {
  /** etcd: endpoints, TLS and auth; none: ownership local to this node. */
  etcd?: Omit<EtcdOptions, 'node' | 'xcf' | 'logger'>;
  /** No automatic takeback by the defining node. */
  nopreempt?: boolean;
  /** The defining node takes its DVIPAs back this long after its readiness gate opened. */
  takebackDelayMs?: number;
  /** On a clean stop, how long a restarted agent has to adopt this node's DVIPAs. */
  restartGraceSec?: number;
  /** With etcd: how often an owner renews its claim (ms); fence and claim delay follow (see below). */
  renewMs?: number;
}

export interface AgentOptions extends TargetOptions {
  config: ClusterConfig;
  node: string;
  key: Buffer;
  /** Per-node keys (CLUSTER IDENTITIES); without them any holder of the cluster key may claim any name. */
  identities?: Identities;
  pinRoot?: string;
  port?: number;
  ha?: HaOptions;
  /** Targets connected and synced before this node takes a DVIPA back or by a move (default 1). */
  readyTargets?: number;
  /** The new-flow rate guard: new flows per second per CPU that get a CRT entry (default DEFAULTS.newFlowRate; 0: none). */
  newFlowRate?: number;
  /** The CRT's size if its maps are made now (default: the pinned maps' size, else 1,048,576). */
  crtEntries?: number;
  /** The control socket for `dvipa netstat` (none: no socket). */
  controlSocket?: string;
  /** host:port for Prometheus metrics at /metrics (none: not served). */
  metricsAddress?: string;
  /** IPsec recovery for the DVIPAs this node may route (needs ha.etcd). */
  ipsec?: IpsecOptions;
  logger: Logger;
}

/** How often to retry reaching the coupling facility at start. */
const CF_RETRY_MS = 1000;
/**
 * Confirmed connections a previous agent wrote are dropped this long after start, unless a
 * target has reported them again since (targets send a full report when they connect): the
 * table of confirmed connections evicts nothing, so what ended while no agent listened would
 * stay for ever.
 */
const SWEEP_AFTER_MS = 30_000;
/** A new owner takes the address at the latest this long after the ownership, IPsec SAs re-installed or not. */
const IPSEC_WAIT_MS = 5000;
/**
 * An owner's data plane answers for a DVIPA until FENCE_RENEWALS intervals after it sent the
 * last renewal etcd confirmed; a candidate claims after CLAIM_RENEWALS intervals without
 * hearing of the owner. The fence always ends first (docs/ha.md: why never two owners). 140 ms
 * of fence at the default interval: with 60 ms, round trips to etcd on the shared 2-core VM at
 * load averages of 30-45 (packets between namespaces wait for softirq time) let the fence lapse
 * often enough to drop about 6% of a healthy owner's packets.
 */
export const FENCE_RENEWALS = 7;
export const CLAIM_RENEWALS = 8;
export class Agent {
  private readonly node: NodeSpec;
  private readonly plans: Map<string, DvipaPlan>;
  private readonly fp: FastPath;
  private readonly crtWalker: CrtWalker;
  /** The CRT's size as the kernel counts it (Linux 6.6 and later); else the walker counts. */
  private readonly crtCounter?: MapCounter;
  private readonly transport: Transport;
  private readonly router: RoutingRole;
  private readonly target: TargetRole;
  private readonly via: ViaRoutes;
  private readonly log: Logger;
  private readonly candidacies = new Map<string, DvipaCandidacy>();
  private cf?: CouplingFacility;
  private election?: Election;
  private cfRetry?: NodeJS.Timeout;
  private heartbeat?: Heartbeat;
  private renewer?: Renewer;
  private beatTimer?: NodeJS.Timeout;
  /** Voluntary handovers waiting for the previous owner to let the address go. */
  private readonly handoffs = new Handoffs();
  private stopped = false;
  private sweepTimer?: NodeJS.Timeout;
  private control?: ControlServer;
  private metrics?: AgentMetrics;
  /** When this node last became the owner of each DVIPA, or stopped being it. */
  private readonly since = new Map<string, number>();
  private roles = new Map<string, Role[]>();
  private ipsec?: IpsecRole;
  private readonly admission: Admission;
  /** What peers said and this node refused (not a routing node of the DVIPA, outside the ranges...). */
  private readonly refusals: Refusals;
  /** DVIPA messages waiting for etcd to name the same owner, by address. */
  private readonly unconfirmed = new Map<string, { peer: string; change: DvipaChange }>();
  /** With etcd: the nodes found through their member records. */
  private readonly membership?: Membership;
  private readonly signer: MemberSigner;
  /** Configured nodes and PEERs (not this one), by name: their cluster addresses (one per family). */
  private readonly configured: Map<string, string[]>;
  /** The last addresses of every member that joined: a peer that left still has them for its 'peerDown'. */
  private readonly formerly = new Map<string, string[]>();

  constructor(private readonly opts: AgentOptions) {
    const node = opts.config.nodes.find((n) => n.name === opts.node);
    if (!node) throw new Error(`node ${opts.node} is not in the configuration`);
    this.node = node;
    this.log = opts.logger.child({ node: node.name });
    if (opts.ipsec && !opts.ha?.etcd)
      throw new Error('IPsec recovery (CLUSTER IPSEC) keeps SAs in the coupling facility: give CLUSTER ETCD or --etcd');
    this.plans = planDvipas(opts.config);
    this.configured = new Map(
      [...opts.config.nodes, ...opts.config.peers]
        .filter((n) => n.name !== node.name)
        .map((n) => [n.name, clusterAddresses(n)]),
    );
    this.signer = new MemberSigner(opts.key, opts.identities);
    if (opts.ha?.etcd)
      this.membership = new Membership({
        me: node.name,
        // This node's own address is taken too: nobody's record claims it.
        configured: new Map([...this.configured, [node.name, clusterAddresses(node)]]),
        signer: this.signer,
        max: DEFAULTS.maxMembers,
        logger: this.log,
      });
    this.admission = new Admission(opts.config, this.plans, (peer) => this.membership?.get(peer)?.dvipas);
    this.refusals = new Refusals(this.log, 'peer message refused');
    this.fp = FastPath.open({ pinRoot: opts.pinRoot, crtMaxEntries: opts.crtEntries, logger: this.log });
    const crtTables = this.fp.crtTables();
    this.crtWalker = new CrtWalker(crtTables);
    // The kernel counts hash maps; the IPv4 cache of unconfirmed flows counts its own slots.
    this.crtCounter = MapCounter.open(crtTables.filter((t) => t.v6 || t.confirmed).map((t) => t.fd));
    if (!this.crtCounter)
      this.log.info('this kernel does not count map entries (6.6+): the CRT is counted by walking it');
    const port = opts.port ?? DEFAULTS.port;
    const withHost6 = (x: { xcf6?: string }) => (x.xcf6 === undefined ? {} : { host6: x.xcf6 });
    const others = [...opts.config.nodes, ...opts.config.peers].filter((n) => n.name !== node.name);
    this.transport = new Transport({
      node: node.name,
      key: opts.key,
      identities: opts.identities,
      listen: { host: node.xcf, port, ...withHost6(node) },
      peers: others.map((p) => ({ name: p.name, host: p.xcf, port, ...withHost6(p) })),
      logger: this.log,
    });
    const isConnected = (xcf: string) =>
      this.addressesOf(node.name).includes(xcf) || this.transport.connected(this.nameOf(xcf) ?? '');
    this.router = new RoutingRole(
      this.fp,
      node,
      opts.config,
      { isConnected, readyTargets: opts.readyTargets, fencing: opts.ha?.etcd !== undefined },
      this.log,
    );
    this.target = new TargetRole(
      this.fp,
      node,
      this.plans,
      opts,
      this.log,
      (router, m) => this.deliver(router, m),
      (n) => this.addressesOf(n),
    );
    this.via = new ViaRoutes(this.fp, node, opts.config);
  }

  async start(): Promise<void> {
    const startNs = process.hrtime.bigint();
    this.sweepTimer = setTimeout(() => {
      this.crtWalker
        .sweep(startNs)
        .then((n) => n && this.log.info({ entries: n }, "confirmed connections of a previous agent's time dropped"))
        .catch((e: Error) => this.log.warn({ err: e.message }, 'sweep of the confirmed connections failed'));
    }, SWEEP_AFTER_MS);
    this.sweepTimer.unref();
    const repaired = await this.fp.crt.repair();
    if (repaired) this.log.warn({ slots: repaired }, 'CRT cache slots a killed writer left claimed: emptied');
    const moved = this.fp.crt.rehome();
    if (moved) this.log.info({ flows: moved }, 'CRT cache flows placed by an older version moved to their sets');
    // An IPv6-only node has no IPv4 cluster address: 0.0.0.0 (none) in the data plane.
    const [v4 = '0.0.0.0', v6] = [this.node.xcf, this.node.xcf6 ?? this.node.xcf].map((a, i) =>
      ipFamily(a) === (i === 0 ? 4 : 6) ? a : undefined,
    );
    this.fp.configure({
      clusterAddr: v4,
      ...(v6 === undefined ? {} : { clusterAddr6: v6 }),
      maxNewFlows: this.opts.newFlowRate ?? DEFAULTS.newFlowRate,
    });
    this.via.start();
    const roles = rolesOf(this.opts.config, this.node.name);
    this.roles = roles;
    for (const [dvipa, rs] of roles) {
      if (rs.some((r) => r.kind === 'target')) this.target.serve(dvipa);
      if (!rs.some((r) => r.kind === 'routing' || r.kind === 'backup')) continue;
      const plan = this.plans.get(dvipa)!;
      this.router.route(plan);
      this.candidacies.set(dvipa, {
        address: dvipa,
        primary: plan.routingNode,
        candidates: [...(plan.routingNode ? [{ node: plan.routingNode, rank: PRIMARY_RANK }] : []), ...plan.backups],
      });
    }
    // A stopped agent's maps are closed: sockets that close after it are no concern of it.
    this.transport.on('message', (peer, m) => !this.stopped && this.onMessage(peer, m));
    this.transport.on('peerUp', (peer) => {
      this.log.info({ peer }, 'peer connected');
      if (this.router.announces) this.transport.send(peer, this.router.vipaList());
      this.target.report(peer);
    });
    this.transport.on('peerDown', (peer) => {
      if (this.stopped) return;
      this.log.warn({ peer }, 'peer disconnected');
      for (const xcf of this.addressesOf(peer)) this.router.targetGone(xcf);
    });
    this.membership?.on('join', (r) => this.memberJoined(r));
    this.membership?.on('leave', (r) => {
      if (!this.configured.has(r.node)) this.transport.removePeer(r.node);
    });
    await this.transport.start();
    this.target.start();
    // With etcd every node joins, also a pure target: its member record is how the others find it.
    if (this.candidacies.size || this.membership) this.joinCoupling();
    if (this.opts.metricsAddress) {
      this.metrics = new AgentMetrics({
        vdpt: () => this.router.vdpt(),
        crtEntries: () =>
          this.crtCounter ? Promise.resolve(this.crtCounter.count() + this.fp.crt.count()) : this.crtWalker.count(),
        crtConfirmRefused: () => this.router.confirmRefused,
        nexthops: () => this.router.nexthopStats,
        reasons: () => this.fp.reasonCounts(),
        served: () => this.fp.receivedStats(),
        messageRejects: () => ({
          ...this.transport.drops,
          ...Object.fromEntries(
            Object.entries(this.membership?.refusals.counts ?? {}).map(([k, n]) => [`member_${k}`, n]),
          ),
          ...this.refusals.counts,
          stale_epoch: this.target.fence.refused,
        }),
        couplingUp: () => (this.cf?.shared ? this.cf.healthy : undefined),
        leasesLost: () => (this.cf?.shared ? this.cf.leasesLost : undefined),
        ipsec: () => this.ipsec?.rows(),
      });
      await this.metrics.listen(this.opts.metricsAddress, this.log);
    }
    if (this.opts.controlSocket) {
      this.control = new ControlServer(this.opts.controlSocket, this.controlHandlers(), this.log);
      await this.control.start();
    }
    this.log.info(
      { roles: Object.fromEntries([...roles].map(([d, rs]) => [d, rs.map((r) => r.kind)])) },
      'agent started',
    );
  }

  /**
   * Stops the control plane only: programs and maps stay pinned and keep forwarding. Every
   * source of events (peers, sockets, XFRM, etcd) stops before the maps close, so nothing
   * writes to a closed map (EBADFD) on the way out.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.cfRetry);
    clearTimeout(this.sweepTimer);
    await this.control?.stop();
    await this.metrics?.stop();
    this.election?.stop();
    clearInterval(this.beatTimer);
    this.ipsec?.stop();
    const grace = this.opts.ha?.restartGraceSec ?? DEFAULTS.restartGrace;
    // First, within the lease: the owner keys go to the restart-grace lease, renewed ones by
    // the renewal worker (which moves their fences to match, without a gap), then the rest.
    const handed = await this.renewer?.handOver(grace);
    await this.cf?.stop(grace, handed);
    await this.renewer?.stop();
    await this.transport.stop();
    this.target.stop();
    this.router.stop();
    this.via.stop();
    await this.crtWalker.close();
    this.crtCounter?.close();
    this.fp.close();
  }

  /** The DVIPAs this node owns now, with their epochs. */
  owned(): Map<string, OwnerRecord> {
    return new Map(this.election?.owned ?? []);
  }

  /**
   * Joins the coupling facility (with etcd: its member record, and the others' as peers) and
   * runs the election of the DVIPAs this node may route. Until the store answers, nothing
   * changes: DVIPAs the pinned data plane owned stay owned and keep forwarding.
   */
  private joinCoupling(): void {
    const ha = this.opts.ha ?? {};
    const me = this.node.name;
    let cf: CouplingFacility;
    let etcd: EtcdCoupling | undefined;
    if (ha.etcd) {
      const membership = this.membership!;
      etcd = new EtcdCoupling({
        ...ha.etcd,
        node: me,
        xcf: this.node.xcf,
        logger: this.log,
        memberRecord: (lease) => JSON.stringify(this.memberRecord(lease)),
        // A node of the file is live while its key is there, as it always was; one found
        // through etcd only with a checked record.
        isMember: (n) => this.configured.has(n) || membership.has(n),
      });
      etcd.on('released', (dvipa: string, node: string, epoch: number) => {
        if (this.candidacies.has(dvipa) && node !== me) this.handoffs.onReleased(node, { address: dvipa, epoch });
      });
      etcd.on('member', (name: string, value: string | undefined, lease: string) => {
        if (value === undefined) membership.delete(name);
        else membership.put(name, value, lease);
      });
      // Renewals and IPsec recovery are for the DVIPAs this node may route: none on a pure target.
      if (this.candidacies.size)
        this.renewer = new Renewer(
          {
            etcd: ha.etcd,
            fenceFd: this.fp.fence.fd,
            fence6Fd: this.fp.fence6.fd,
            renewMs: this.renewMs(),
            fenceNs: this.ns(this.fenceMs()),
            drainNs: this.ns(HANDOVER_DRAIN_MS),
            ...(this.node.external && !this.opts.ipsec ? { announceOn: this.node.external } : {}),
          },
          this.log,
        );
      // Claims go through the renewal thread: it renews (and moves the fence) from the moment
      // etcd takes one, even if this thread then stalls for longer than a claim delay.
      const renewer = this.renewer;
      if (renewer) etcd.committer = (dvipa, c) => renewer.claim(dvipa, c);
      if (this.opts.ipsec && this.candidacies.size) {
        const vici = this.opts.ipsec.vici;
        const daemon = vici ? new ViciDaemon(vici, () => this.ipsec?.ikeChanged(), this.log) : undefined;
        this.ipsec = new IpsecRole(
          xfrm,
          etcd,
          this.opts.key,
          me,
          this.opts.ipsec,
          this.log,
          (on) => XfrmEventStream.open(['sa', 'expire', 'policy', 'aevents'], on),
          daemon,
        );
        for (const d of this.candidacies.keys()) this.ipsec.watch(d);
        this.ipsec.start();
      }
      cf = etcd;
    } else {
      const local = new LocalCoupling(me, this.log);
      for (const d of this.candidacies.keys()) local.remember(d, this.router.pinnedEpoch(d));
      cf = local;
    }
    this.cf = cf;
    cf.on('change', (d?: string) => {
      for (const x of d === undefined ? this.candidacies.keys() : this.candidacies.has(d) ? [d] : [])
        this.router.follow(x, cf.view(x).owner?.node);
      const waiting = d === undefined ? undefined : this.unconfirmed.get(d);
      if (!waiting || this.stopped) return;
      this.unconfirmed.delete(d!);
      this.onDvipa(waiting.peer, waiting.change);
    });
    // A pure target joins for its member record only: nothing to elect.
    const election = this.candidacies.size ? this.elect(cf, etcd) : undefined;
    this.election = election;
    const join = () => {
      cf.start().then(
        () => {
          if (!this.stopped) election?.start();
        },
        (e: Error) => {
          this.log.error(
            { err: e.message },
            'coupling facility unreachable at start; the data plane keeps forwarding; retrying',
          );
          if (!this.stopped) this.cfRetry = setTimeout(join, CF_RETRY_MS);
        },
      );
    };
    join();
  }

  /**
   * The election of the DVIPAs this node may route, over the coupling facility; with etcd, the
   * owner's HOLD heartbeats to the other candidates (its renewals: the renewal thread's).
   */
  private elect(cf: CouplingFacility, etcd: EtcdCoupling | undefined): Election {
    const ha = this.opts.ha ?? {};
    const me = this.node.name;
    const election = new Election(
      cf,
      this.candidacies,
      {
        me,
        nopreempt: ha.nopreempt ?? false,
        takebackDelayMs: ha.takebackDelayMs ?? 0,
        stuckMs: 3000 * (ha.etcd?.ttlSec ?? 1),
        settleMs: ha.etcd ? 1000 * ha.etcd.ttlSec + 500 : 0,
        claimAfterMs: ha.etcd ? CLAIM_RENEWALS * this.renewMs() : 0,
      },
      {
        notReady: (d) => this.router.notReady(d),
        prepared: (d) => this.router.prepared(d),
        canRenew: () => this.renewer?.connected ?? true,
        idle: (d) => this.router.idle(d),
        acquired: (d, rec, how, previous, tookMs) => {
          this.metrics?.ownershipChanges.inc({ dvipa: d, how });
          if (how !== 'adopted') this.metrics?.ownershipSeconds.observe({ how }, tookMs / 1000);
          this.acquired(d, rec, how, previous);
        },
        lost: (d, owner) => {
          this.since.set(d, Date.now());
          // Another node owns it now (not a deletion): it waits for this node's release.
          const successor = owner?.node !== me ? owner : undefined;
          const handedOver = successor !== undefined && this.router.answering(d);
          this.renewer?.drop(d, handedOver ? process.hrtime.bigint() + this.ns(HANDOVER_DRAIN_MS) : undefined);
          // The new owner takes the address once this node's stack answers ARP for it no more.
          const released = this.router.disown(d);
          void released.then(() => {
            if (!successor || this.stopped) return;
            this.transport.send(successor.node, {
              type: MsgType.Released,
              body: { address: d, epoch: successor.epoch },
            });
            etcd
              ?.markReleased(d, successor.epoch)
              .catch((e: Error) => this.log.warn({ dvipa: d, err: e.message }, 'RELEASED not written to etcd'));
          });
          void this.ipsec?.lost(d, released);
          const why = owner ? 'DVIPA now routed by another node' : 'DVIPA routed by no node now (deleted?)';
          this.log.warn({ dvipa: d, owner: owner?.node, epoch: owner?.epoch }, `${why}: address released`);
        },
      },
      this.log,
    );
    // What the pinned data plane owned is ours until the store says otherwise.
    for (const [d, c] of this.candidacies) {
      const epoch = this.router.pinnedEpoch(d);
      if (epoch > 0)
        election.owned.set(d, { node: me, rank: c.candidates.find((x) => x.node === me)?.rank ?? 0, epoch });
    }
    if (ha.etcd) {
      const others = (d: string) =>
        (this.candidacies.get(d)?.candidates ?? []).map((c) => c.node).filter((n) => n !== me);
      const heartbeat = new Heartbeat(
        others,
        (peer, m) => this.transport.send(peer, m),
        (d, epoch, sentNs) => {
          if (election.owned.get(d)?.epoch === epoch) this.renewer?.extend(d, sentNs + this.ns(this.fenceMs()));
        },
      );
      this.heartbeat = heartbeat;
      this.beatTimer = setInterval(() => heartbeat.beat(election.owned), this.renewMs());
    }
    return election;
  }

  private renewMs(): number {
    return this.opts.ha?.renewMs ?? DEFAULTS.renewMs;
  }

  private fenceMs(): number {
    return FENCE_RENEWALS * this.renewMs();
  }

  private ns(ms: number): bigint {
    return BigInt(ms) * 1_000_000n;
  }

  /** What the control socket answers (control-protocol.ts). */
  private controlHandlers(): ControlHandlers {
    return {
      vdpt: () => this.router.vdpt(),
      vcrt: async (filter) => {
        // Read off the event loop (a full CRT is a million entries).
        const found = await this.crtWalker.select(filter, filter.limit ?? VCRT_DEFAULT_LIMIT);
        // The data plane stamps entries with CLOCK_MONOTONIC (coarse), which hrtime reads too.
        const view = vcrtView(found.entries, {}, process.hrtime.bigint());
        return { ...view, total: found.total, truncated: found.total > view.entries.length };
      },
      vipadyn: () => ({ coupling: this.couplingState(), dvipas: this.vipadyn() }),
      vipadcfg: () => ({
        node: this.node.name,
        profile: formatProfile({ ...this.opts.config, nodes: [this.node], peers: [] }),
        coupling: this.opts.config.coupling,
      }),
      ipsec: () => {
        if (!this.ipsec) throw new Error('IPsec recovery is not on for this node (CLUSTER IPSEC)');
        return this.ipsec.rows();
      },
      members: () => {
        if (!this.membership) throw new Error('no members from etcd on this node (CLUSTER ETCD)');
        return {
          members: this.membership.rows((n) => this.transport.connected(n)),
          refused: { ...this.membership.refusals.counts },
        };
      },
    };
  }

  private couplingState(): CouplingState | undefined {
    return this.cf && { shared: this.cf.shared, healthy: this.cf.healthy, members: [...this.cf.members()].sort() };
  }

  private vipadyn(): VipadynRow[] {
    return [...this.roles].map(([dvipa, roles]) =>
      vipadynRow({
        me: this.node.name,
        dvipa,
        roles,
        owned: this.election?.owned.get(dvipa),
        view: this.cf?.view(dvipa),
        since: this.since.get(dvipa),
        heldBack: this.election?.heldBack(dvipa),
      }),
    );
  }

  private acquired(dvipa: string, rec: OwnerRecord, how: Claim | 'adopted', previous?: string): void {
    if (how !== 'adopted' || !this.since.has(dvipa)) this.since.set(dvipa, Date.now());
    const sas = this.ipsec?.acquired(dvipa, rec, how);
    if (!sas) return this.route(dvipa, rec, how, previous);
    // ESP that reaches the address before its SAs are in is dropped (no state): the address
    // moves once the predecessor's SAs are re-installed, or after IPSEC_WAIT_MS regardless.
    let wait: NodeJS.Timeout | undefined;
    void Promise.race([sas, new Promise((r) => (wait = setTimeout(r, IPSEC_WAIT_MS)))]).then(() => {
      clearTimeout(wait);
      if (!this.stopped && this.election?.owned.get(dvipa)?.epoch === rec.epoch) this.route(dvipa, rec, how, previous);
    });
  }

  private route(dvipa: string, rec: OwnerRecord, how: Claim | 'adopted', previous?: string): void {
    // A living owner replaced answers ARP until it has let the address go (handoff.ts).
    const living = (how === 'takeback' || how === 'move') && previous !== undefined && previous !== this.node.name;
    const started = Date.now();
    const announce = living
      ? this.handoffs
          .wait(dvipa, previous, rec.epoch, this.fenceMs())
          .then((end) =>
            this.log.info(
              { dvipa, from: previous, end, waitedMs: Date.now() - started },
              'address taken over from its previous owner',
            ),
          )
      : undefined;
    this.router.own(dvipa, rec.epoch, previous, announce);
    const change: Message = {
      type: MsgType.Dvipa,
      body: { address: dvipa, owner: this.node.name, epoch: rec.epoch, event: how },
    };
    this.transport.broadcast(change);
    this.target.onDvipa(this.node.name, change.body);
    this.transport.broadcast(this.router.vipaList());
  }

  /** A target's report to a routing node, which may be this node itself. */
  private deliver(router: string, m: Message): void {
    if (router === this.node.name) this.onMessage(router, m);
    else this.transport.send(router, m);
  }

  /**
   * A node's cluster addresses, this one's included (it may be its own target): a DESTIP may
   * name either of a dual-stack node's.
   */
  private addressesOf(peer: string): string[] {
    if (peer === this.node.name) return clusterAddresses(this.node);
    return this.configured.get(peer) ?? this.membership?.get(peer)?.xcf ?? this.formerly.get(peer) ?? [];
  }

  private nameOf(xcf: string): string | undefined {
    for (const [name, x] of this.configured) if (x.includes(xcf)) return name;
    return this.membership?.records().find((r) => r.xcf.includes(xcf))?.node;
  }

  /** This node's member record, signed, for the etcd lease it is bound to. */
  private memberRecord(lease: string): MemberRecord {
    const v = this.node.vipaDynamic;
    return this.signer.record({
      node: this.node.name,
      xcf: clusterAddresses(this.node),
      port: this.opts.port ?? DEFAULTS.port,
      version: FRAME_VERSION,
      dvipas: [...new Set([...v.define, ...v.backup].map((d) => d.address))],
      lease,
      at: Date.now(),
    });
  }

  /** A member's checked record: a peer of the transport (a configured one stays as configured). */
  private memberJoined(r: MemberRecord): void {
    this.formerly.set(r.node, r.xcf);
    if (this.configured.has(r.node)) return;
    const [host, host6] = [r.xcf.find((a) => ipFamily(a) === 4) ?? r.xcf[0], r.xcf.find((a) => ipFamily(a) === 6)];
    this.transport.addPeer({ name: r.node, host, port: r.port, ...(host6 && host6 !== host ? { host6 } : {}) });
  }

  private onMessage(peer: string, m: Message): void {
    const addresses = this.addressesOf(peer);
    if (!addresses.length) return;
    // Each report is the target's under each of its addresses; with two, each address takes
    // the connections of the services that name it.
    switch (m.type) {
      case MsgType.SrvStat:
        for (const xcf of addresses) this.router.onSrvStat(peer, xcf, m.body);
        return;
      case MsgType.Conns:
        for (const xcf of addresses) this.router.onConns(xcf, m.body, addresses.length > 1);
        return;
      case MsgType.VipaList: {
        const refused = this.admission.vipaList(peer, m.body);
        if (refused) return this.refusals.add(peer, refused.reason, refused.detail);
        return this.target.learnVipaList(peer, m.body);
      }
      case MsgType.Dvipa:
        return this.onDvipa(peer, m.body);
      case MsgType.Hold:
        if (this.election?.promise(m.body.address, peer, m.body.epoch))
          this.transport.send(peer, { type: MsgType.HoldAck, body: m.body });
        return;
      case MsgType.HoldAck:
        return this.heartbeat?.acked(peer, m.body);
      case MsgType.Released:
        if (this.candidacies.has(m.body.address)) this.handoffs.onReleased(peer, m.body);
        return;
    }
  }

  /** A peer says it routes a DVIPA now: believed once etcd (if shared) names it too. */
  private onDvipa(peer: string, change: DvipaChange): void {
    const cf = this.cf;
    const verdict = this.admission.dvipa(peer, change, cf?.shared ? () => cf.view(change.address).owner : undefined);
    if (verdict === 'wait') {
      this.unconfirmed.set(change.address, { peer, change });
      // Cut off from etcd with its fence run out, this node answers for the DVIPA no more:
      // giving the address up costs nothing then (etcd names the owner again once reached).
      if (cf?.healthy === false && this.election?.owned.has(change.address) && !this.router.answering(change.address))
        this.election.deposed(change.address, { node: change.owner, rank: 0, epoch: change.epoch });
      return;
    }
    this.unconfirmed.delete(change.address);
    if (verdict !== 'accept') return this.refusals.add(peer, verdict.reason, verdict.detail);
    this.election?.deposed(change.address, { node: change.owner, rank: 0, epoch: change.epoch });
    this.target.onDvipa(peer, change);
  }
}
