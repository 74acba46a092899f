/*
 * An agent's routing side, for the DVIPAs this node owns: the distributor on the external
 * interface, the DPT of each distributed service kept equal to the targets that listen
 * (pushed as Maglev tables), and the CRT kept equal to the connections targets report.
 */
import { serviceName, type FastPath, type Service } from '../dataplane/fastpath.js';
import { CrtOrigin, IPPROTO, type Flow } from '../dataplane/structs.js';
import type { ClusterConfig, NodeSpec } from '../config/model.js';
import type { DvipaPlan } from './roles.js';
import { MsgType, type ConnRef, type Conns, type Message, type SrvStat } from './messages.js';
import { connKey, servicesOf } from './services.js';
import { Dpt } from '../tables/dpt.js';
import type { Logger } from '../log.js';

/** Active counts change with every connection: tables are rebuilt at most this often. */
const PUSH_MS = 100;

export class RoutingRole {
  private readonly dpt = new Dpt();
  /** Service name -> data-plane service. */
  private readonly routed = new Map<string, Service>();
  /** TIMEDAFFINITY seconds per service. */
  private readonly affinity = new Map<string, number>();
  /** The connections targets report, for active counts (WEIGHTEDACTIVE). */
  private readonly conns = new Map<string, { service: string; xcf: string }>();
  /** Services whose table must be rebuilt; active counts change often, tables are rebuilt at most every PUSH_MS. */
  private readonly dirty = new Set<string>();
  private pushTimer?: NodeJS.Timeout;

  constructor(
    private readonly fp: FastPath,
    private readonly node: NodeSpec,
    private readonly config: ClusterConfig,
    private readonly plans: Map<string, DvipaPlan>,
    private readonly log: Logger,
  ) {}

  /** Whether this node routes anything. */
  get active(): boolean {
    return this.routed.size > 0;
  }

  stop(): void {
    clearTimeout(this.pushTimer);
  }

  route(plan: DvipaPlan): void {
    for (const ifname of this.node.internal) this.fp.enableEgress(ifname);
    if (this.node.external) this.fp.attach('distributor', this.node.external);
    const everyNode = this.config.nodes.map((n) => ({ xcf: n.xcf }));
    for (const d of plan.distribute) {
      for (const s of servicesOf(d)) {
        const name = serviceName(s);
        this.routed.set(name, s);
        this.dpt.define(name, { method: d.method, destinations: d.destinations === 'all' ? everyNode : d.destinations });
        this.affinity.set(name, d.timedAffinity);
        this.push(name);
      }
    }
  }

  /** What this node distributes and to whom, as every peer is told when it connects. */
  vipaList(): Message {
    const dvipas = [...this.plans.values()].filter((p) => p.routingNode === this.node.name).map((p) => ({
      address: p.address,
      services: p.distribute.flatMap((d) => servicesOf(d).map((s) => ({
        port: s.port, protocol: s.protocol, targets: d.destinations === 'all' ? 'all' as const : d.destinations.map((x) => x.xcf),
      }))),
    }));
    return { type: MsgType.VipaList, body: { dvipas } };
  }

  private push(name: string): void {
    const s = this.routed.get(name)!;
    this.fp.setTargets(s, this.dpt.weights(name), { affinitySec: this.affinity.get(name) });
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

  /** A target's SRVSTAT: which services it listens on, and its load. */
  onSrvStat(peer: string, xcf: string, body: SrvStat): void {
    const up = new Set(body.up.map((r) => `${r.dvipa}:${r.port === 0 ? '*' : r.port}/${r.protocol}`));
    const down = new Set(body.down.map((r) => `${r.dvipa}:${r.port === 0 ? '*' : r.port}/${r.protocol}`));
    for (const name of this.routed.keys()) {
      const ready = up.has(name) ? true : down.has(name) || body.full ? false : undefined;
      if (this.dpt.update(name, xcf, { ready, load: body.load })) {
        this.push(name);
        this.log.info({ service: name, target: peer, ready, load: body.load }, 'DPT changed');
      }
    }
  }

  /** A target's NEWCONN/TERMCONN. */
  onConns(xcf: string, body: Conns): void {
    this.applyConns(xcf, body.full, body.added, body.removed);
  }

  private flowOf(c: ConnRef): Flow {
    return { saddr: c.saddr, daddr: c.daddr, sport: c.sport, dport: c.dport, proto: IPPROTO[c.protocol] };
  }

  private svcIdOf(c: ConnRef): number | undefined {
    return this.fp.serviceId({ vip: c.daddr, port: c.dport, protocol: c.protocol }) ?? this.fp.serviceId({ vip: c.daddr, port: 0, protocol: c.protocol });
  }

  private applyConns(xcf: string, full: boolean, added: ConnRef[], removed: ConnRef[]): void {
    this.countActive(xcf, full, added, removed);
    const entries = added.flatMap((c) => {
      const svcId = this.svcIdOf(c);
      return svcId === undefined ? [] : [[this.flowOf(c), { target: xcf, svcId, origin: CrtOrigin.Control, createdNs: 0n }] as const];
    });
    if (entries.length) this.fp.crt.setBatch(entries);
    let gone = removed.map((c) => this.flowOf(c));
    if (full) {
      // Entries of this target that it no longer reports are connections that ended.
      const keep = new Set(added.map(connKey));
      gone = [...this.fp.crt.entries()]
        .filter(([k, v]) => v.target === xcf && !keep.has(connKey({ saddr: k.saddr, daddr: k.daddr, sport: k.sport, dport: k.dport, protocol: k.proto === 6 ? 'tcp' : 'udp' })))
        .map(([k]) => k);
    }
    for (const f of gone) this.fp.crt.delete(f);
  }

  /** Active connections per service of this target, into the DPT (used by WEIGHTEDACTIVE). */
  private countActive(xcf: string, full: boolean, added: ConnRef[], removed: ConnRef[]): void {
    if (full) for (const [k, v] of this.conns) if (v.xcf === xcf) this.conns.delete(k);
    for (const c of removed) this.conns.delete(connKey(c));
    for (const c of added) {
      const service = this.serviceOfConn(c);
      if (service) this.conns.set(connKey(c), { service, xcf });
    }
    const counts = new Map<string, number>([...this.routed.keys()].map((n) => [n, 0]));
    for (const v of this.conns.values()) if (v.xcf === xcf) counts.set(v.service, (counts.get(v.service) ?? 0) + 1);
    for (const [name, active] of counts) if (this.dpt.update(name, xcf, { active })) this.pushSoon(name);
  }

  /** A target agent went away: no new connections for it until it reports again. */
  targetGone(xcf: string): void {
    for (const name of this.routed.keys()) if (this.dpt.update(name, xcf, { ready: false })) this.push(name);
  }
}
