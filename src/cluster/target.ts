/*
 * An agent's target side. It binds the DVIPAs it serves to lo (not advertised), attaches
 * the decap program to its cluster interfaces, and tells each routing node, through
 * `deliver`, what it has: SRVSTAT when an application starts or stops listening on
 * DVIPA:port (with the node's load), NEWCONN/TERMCONN for connections on the DVIPA, and
 * everything in full when asked (a routing node that (re)connected, or took a DVIPA over).
 * It reports to every candidate routing node of a DVIPA, owner and backups alike, so that a
 * backup's DPT and CRT are complete when it takes over. Kernel socket events of its own
 * namespace are applied as they come (socktable.ts); a periodic scan of /proc, and one
 * whenever the kernel lost events, is what it trusts.
 */
import * as fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import type { FastPath } from '../dataplane/fastpath.js';
import { serviceName, type Service } from '../net/service.js';
import { hostAddress } from '../net/iproute.js';
import { clusterAddresses, type NodeSpec } from '../config/model.js';
import { isTarget, type DvipaPlan } from './roles.js';
import { MsgType, type ConnRef, type DvipaChange, type Message, type ServiceRef, type VipaList } from './messages.js';
import { connectionsOn, listensOn } from './sockets.js';
import { SockEvents, type SockEvent } from './sockevents.js';
import { SocketTable } from './socktable.js';
import { EpochFence } from './fence.js';
import { connKey, servicesOf } from './services.js';
import type { Logger } from '../log.js';

/** A load report moves the weights only when it changed by this much. */
const LOAD_STEP = 0.05;

const refKey = (r: ServiceRef) => `${r.dvipa}:${r.port}/${r.protocol}`;
/** refKey's inverse, for the TCP listeners this side tracks. */
const toRef = (k: string): ServiceRef => {
  // The port follows the last colon: an IPv6 DVIPA has colons of its own.
  const at = k.lastIndexOf(':');
  return { dvipa: k.slice(0, at), port: Number(k.slice(at + 1).split('/')[0]), protocol: 'tcp' };
};

export interface TargetOptions {
  /** How often to reconcile the sockets besides kernel events (default 1000 ms). */
  scanMs?: number;
  /** A file holding this node's load, 0 (idle) to 1 (saturated), for SERVERWLM. */
  loadFile?: string;
}

export class TargetRole {
  /** What was last reported, per routing node. */
  private readonly reported = new Map<string, { listeners: Set<string>; conns: Map<string, ConnRef>; load?: number }>();
  /** DVIPAs bound to lo and decapsulated here. */
  private readonly serving = new Set<string>();
  /** The services each routing node's VIPA list names this node a target of. */
  private readonly announced = new Map<string, Service[]>();
  /** Who routes each DVIPA, by the highest epoch heard of. */
  readonly fence = new EpochFence();
  private loadProblem?: string;
  private timer?: NodeJS.Timeout;
  private events?: SockEvents;
  /** This namespace's listeners and DVIPA connections, from events and scans. */
  private readonly table = new SocketTable();
  private reportSoon = false;

  constructor(
    private readonly fp: FastPath,
    private readonly node: NodeSpec,
    private readonly plans: Map<string, DvipaPlan>,
    private readonly opts: TargetOptions,
    private readonly log: Logger,
    private readonly deliver: (router: string, m: Message) => void,
    /** A peer's cluster addresses (IPv4 and/or IPv6), by name. */
    private readonly addressesOf: (node: string) => string[],
  ) {}

  start(): void {
    this.timer = setInterval(() => this.scan(), this.opts.scanMs ?? 1000);
    this.allowDecap();
    this.scan();
  }

  /** Decapsulation only from the routing nodes of what this node serves, for those services. */
  private allowDecap(): void {
    const services = this.myServices();
    const routers = [...services.keys()].flatMap(this.addressesOf);
    this.fp.allowDecap(routers, [...services.values()].flat());
  }

  stop(): void {
    clearInterval(this.timer);
    this.events?.close();
  }

  /** Kernel socket events make reports immediate; the periodic scan stays the source of truth. */
  private startEvents(): void {
    if (this.events) return;
    this.events = new SockEvents(this.fp.pinRoot, (events) => this.onEvents(events));
  }

  /**
   * Each event is one change to the table: no rescan of /proc (whose cost grows with every
   * connection of the namespace) unless the table cannot be trusted, namely before its first
   * scan, after a listener went, or when the kernel dropped events on a full ring buffer.
   */
  private onEvents(events: SockEvent[]): void {
    const lost = this.events?.lost() ?? 0;
    try {
      const missed = this.table.update(events, lost);
      if (missed) this.log.warn({ lost: missed, total: lost }, 'socket events lost (ring buffer full): rescanned');
    } catch (e) {
      this.log.error({ err: (e as Error).message }, 'cannot read /proc/net/tcp');
      return;
    }
    // Events come in batches, often several in one turn of the loop: one report for them all.
    if (this.reportSoon) return;
    this.reportSoon = true;
    setImmediate(() => {
      this.reportSoon = false;
      this.reportChanges();
    });
  }

  serve(dvipa: string): void {
    if (this.serving.has(dvipa)) return;
    this.serving.add(dvipa);
    this.startEvents();
    // Bound on lo, never answered for by ARP: the routing node owns the address on the wire.
    // IPv6 needs no setting: Linux answers a Neighbour Solicitation only for an address of
    // the interface it came in on, never for one on lo.
    for (const [key, value] of [
      ['arp_ignore', '1'],
      ['arp_announce', '2'],
    ])
      fs.writeFileSync(`/proc/sys/net/ipv4/conf/all/${key}`, value);
    execFileSync('ip', ['addr', 'replace', ...hostAddress(dvipa), 'dev', 'lo']);
    this.fp.serve(dvipa);
    for (const ifname of this.node.internal) this.fp.attach('decap', ifname);
  }

  /** Services of each routing node for which this node is a candidate target: by its own configuration or the routing node's VIPA list. */
  private myServices(): Map<string, Service[]> {
    const out = new Map<string, Map<string, Service>>();
    const add = (router: string, s: Service) => {
      if (!out.has(router)) out.set(router, new Map());
      out.get(router)!.set(serviceName(s), s);
    };
    for (const p of this.plans.values()) {
      // Every candidate routing node hears of every connection of the DVIPA, also one whose
      // own list leaves this node out: after a takeover it must still route those here.
      const lists = [p.distribute, ...p.backupDistribute.values()];
      const mine = lists.flatMap((ds) => ds.filter((d) => isTarget(d, this.node)).flatMap(servicesOf));
      for (const router of [...(p.routingNode ? [p.routingNode] : []), ...p.backups.map((b) => b.node)])
        for (const s of mine) add(router, s);
    }
    for (const [router, services] of this.announced) for (const s of services) add(router, s);
    return new Map([...out].map(([r, m]) => [r, [...m.values()]]));
  }

  /** Reconciliation: the table rebuilt from /proc, the differences reported. */
  private scan(): void {
    const mine = this.myServices();
    // /proc/net/tcp lists every socket of the namespace: a node serving nothing never reads
    // it, so junk connections to a routing node's agent port cost it nothing here.
    if (!mine.size) return;
    try {
      this.table.resync(new Set([...mine.values()].flat().map((s) => s.vip)));
    } catch (e) {
      this.log.error({ err: (e as Error).message }, 'cannot read /proc/net/tcp');
      return;
    }
    this.reportChanges(mine);
  }

  /** Compares the table with what was reported to each routing node, sends the differences. */
  private reportChanges(mine = this.myServices()): void {
    const sockets = this.table.sockets();
    // A small file, read with every report: a listener's event brings its load with it.
    const load = this.readLoad();
    for (const [router, services] of mine) {
      const dvipas = new Set(services.map((s) => s.vip));
      const listeners = new Set(
        services
          .filter((s) => s.port !== 0 && listensOn(sockets, s.vip, s.port))
          .map((s) => refKey({ dvipa: s.vip, port: s.port, protocol: 'tcp' })),
      );
      // A port-0 service (all ports) is ready when anything listens on the DVIPA.
      for (const s of services.filter((x) => x.port === 0)) {
        if (listensOn(sockets, s.vip)) listeners.add(refKey({ dvipa: s.vip, port: 0, protocol: 'tcp' }));
      }
      const conns = new Map(
        connectionsOn(sockets, dvipas).map((c) => {
          const ref: ConnRef = { ...c, protocol: 'tcp' };
          return [connKey(ref), ref];
        }),
      );
      const last = this.reported.get(router);
      // Small drifts are not news: the load reported stays until it moves by LOAD_STEP.
      const loadMoved = load !== undefined && (last?.load === undefined || Math.abs(load - last.load) >= LOAD_STEP);
      this.reported.set(router, { listeners, conns, load: loadMoved ? load : last?.load });
      if (!last) {
        this.report(router);
        continue;
      }
      const up = [...listeners].filter((k) => !last.listeners.has(k)).map(toRef);
      const down = [...last.listeners].filter((k) => !listeners.has(k)).map(toRef);
      const reportedLoad = this.reported.get(router)!.load;
      if (up.length || down.length || loadMoved) {
        this.deliver(router, {
          type: MsgType.SrvStat,
          body: { full: false, up, down, ...(reportedLoad === undefined ? {} : { load: reportedLoad }) },
        });
      }
      const added = [...conns].filter(([k]) => !last.conns.has(k)).map(([, c]) => c);
      const removed = [...last.conns].filter(([k]) => !conns.has(k)).map(([, c]) => c);
      if (added.length || removed.length)
        this.deliver(router, { type: MsgType.Conns, body: { full: false, added, removed } });
    }
  }

  private readLoad(): number | undefined {
    if (!this.opts.loadFile) return undefined;
    let problem: string | undefined;
    let load: number | undefined;
    try {
      // Number('') is 0: an empty file (a writer between truncate and write) must not read as idle.
      const text = fs.readFileSync(this.opts.loadFile, 'utf8').trim();
      const v = /^(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i.test(text) ? Number(text) : NaN;
      if (v >= 0 && v <= 1) load = v;
      else problem = `${this.opts.loadFile}: expected a number from 0 to 1`;
    } catch (e) {
      problem = `${this.opts.loadFile}: ${(e as Error).message}`;
    }
    // Said once per change of problem, not every scan.
    if (problem !== this.loadProblem) {
      if (problem) this.log.warn({ problem }, 'load not reported');
      this.loadProblem = problem;
    }
    return load;
  }

  /** Everything, to a routing node that (re)connected. */
  report(router: string): void {
    const state = this.reported.get(router);
    if (!state) return;
    this.deliver(router, {
      type: MsgType.SrvStat,
      body: {
        full: true,
        up: [...state.listeners].map(toRef),
        down: [],
        ...(state.load === undefined ? {} : { load: state.load }),
      },
    });
    this.deliver(router, { type: MsgType.Conns, body: { full: true, added: [...state.conns.values()], removed: [] } });
  }

  /** A routing node's VIPA list: serve what it names this node a target of (DESTIP ALL included). */
  learnVipaList(router: string, list: VipaList): void {
    const mine: Service[] = [];
    for (const d of list.dvipas) {
      if (d.epoch > 0 && !this.heard(router, d.address, d.epoch, 'VIPA list')) continue;
      for (const s of d.services) {
        if (s.targets === 'all' || clusterAddresses(this.node).some((a) => s.targets.includes(a)))
          mine.push({ vip: d.address, port: s.port, protocol: s.protocol });
      }
    }
    this.announced.set(router, mine);
    for (const s of mine) this.serve(s.vip);
    this.allowDecap();
    this.log.info({ router, services: mine.map(serviceName) }, 'VIPA list received');
    this.scan();
  }

  /** A DVIPA changed hands: everything this node has goes to the new owner at once. */
  onDvipa(from: string, change: DvipaChange): void {
    if (!this.heard(from, change.address, change.epoch, 'DVIPA', change.owner)) return;
    this.log.info(
      { dvipa: change.address, owner: change.owner, epoch: change.epoch, event: change.event },
      'DVIPA owner changed',
    );
    this.scan();
    this.report(change.owner);
  }

  private heard(from: string, dvipa: string, epoch: number, what: string, owner = from): boolean {
    if (this.fence.admit(dvipa, owner, epoch)) return true;
    this.log.warn(
      { from, dvipa, epoch, current: this.fence.current(dvipa), refused: this.fence.refused },
      `${what} from a deposed owner refused`,
    );
    return false;
  }
}
