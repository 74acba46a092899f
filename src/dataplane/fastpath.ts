/*
 * The data plane of one node as the control plane sees it: the loaded BPF objects, their
 * pinned maps behind typed wrappers, and the operations the control plane needs (services
 * and their Maglev tables, CRT, counters, attach/detach). All state lives in the pinned
 * maps, so a new FastPath opened over the same pin root picks up where the last one was.
 */
import { DEFAULTS, LIMITS, withinLimits } from '../config/settings.js';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadObject, mapRef, type BpfObject, type MapRef } from '../kernel/object.js';
import { sys } from '../kernel/sys.js';
import { SyscallError } from '../kernel/errors.js';
import { inNetnsAt } from '../kernel/netns.js';
import { BpfMap, BPF_ANY, PerCpuArray, PerCpuHash } from './map.js';
import {
  addr,
  anyPortBit,
  addr6,
  affinity,
  affinity6,
  affinity6Key,
  affinityKey,
  CRT6_DEFAULT_ENTRIES,
  CRT_DEFAULT_ENTRIES,
  crt6Entry,
  crtEntry,
  CRT_WAYS,
  FENCE_DRAIN,
  FIB_RESULTS,
  flow,
  flow6,
  MAX_SERVICES,
  MAX_TARGETS,
  nodeConfig,
  REASONS,
  resolve,
  RESOLVE_NH,
  servedStats,
  svc,
  svc6Key,
  svcKey,
  SVC_UNFENCED,
  SVC_V6_TARGETS,
  svcStats,
  targetEntry,
  targetStats,
  u32,
  u64,
  u8,
} from './structs.js';
import type {
  Affinity,
  AffinityKey,
  CrtEntry,
  NodeConfig,
  Reason,
  ServedStats,
  Svc,
  SvcKey,
  SvcStats,
  TargetEntry,
  TargetStats,
} from './structs.js';
import { runXdp } from './testrun.js';
import type { Struct } from './codec.js';
import { FlowCache } from './flow-cache.js';
import type { CrtTable } from './crt-walk.js';
import { attachXdp, detachXdp, listLinks } from './xdp.js';
import type { Attachment, XdpMode } from './xdp.js';
import { buildMaglevIndexed, MAGLEV_SIZE } from '../tables/maglev.js';
import { buildSvcIndex, SVC_SLOTS, type IndexedService } from '../tables/svc-index.js';
import { IPPROTO, isProtocol, protocolName, type Flow } from '../net/flow.js';
import { serviceName, type Service, type Target } from '../net/service.js';
import { interfaceMac } from '../net/iproute.js';
import { formatIpv6, ipFamily, parseIpv6 } from '../net/addr.js';
import { log as rootLog, type Logger } from '../log.js';

const NO_MAC = '00:00:00:00:00:00';
const NO_ADDR = '0.0.0.0';
const BPF_MAP_TYPE_ARRAY = 2;
const BPF_MAP_TYPE_LRU_HASH = 9;
const BPF_F_NO_PREALLOC = 1;
const LOOPBACK_IFINDEX = 1;
const RESOLVER = 'xdp_resolve';

/** The programs dvipa attaches, by role. */
export const PROGRAMS = { distributor: 'xdp_distributor', decap: 'xdp_decap' } as const;
export type Role = keyof typeof PROGRAMS;

export interface FastPathOptions {
  /** bpffs directory for maps and links (default /sys/fs/bpf/dvipa). */
  pinRoot?: string;
  /** CRT capacity; defaults to the pinned CRT's size, else 1,048,576. */
  crtMaxEntries?: number;
  /** Where distributor.bpf.o and decap.bpf.o are (default: the build directory). */
  objectDir?: string;
  /**
   * The network namespace (a path, e.g. /run/netns/NAME) whose FIB gives the targets' next
   * hops; default: the calling thread's at each resolution (the agent's own).
   */
  netnsPath?: string;
  logger?: Logger;
}

/** A target's next hop as the control plane resolved it. */
export interface TargetNexthop {
  addr: string;
  svcId: number;
  index: number;
  resolved: boolean;
  ifindex: number;
  dmac: string;
  mtu: number;
}

const isV6 = (a: string) => ipFamily(a) === 6;
/** Where the data plane keeps a flow's CRT entry: crt6 for an IPv6 flow or an IPv6 target. */
const inCrt6 = (f: Flow, target: string) => isV6(f.daddr) || isV6(target);

/** One spelling per address: the maps' keys and targetIndex compare strings. */
function canonicalIp(a: string): string {
  return isV6(a) ? formatIpv6(parseIpv6(a)) : a;
}

/**
 * A map of each family (IPv4 key or value in `v4`, IPv6 in `v6`), chosen by an address:
 * the data plane keeps IPv6 in maps of its own (bpf/dvipa.h), the control plane sees one.
 */
interface ByFamily<M> {
  v4: M;
  v6: M;
}
function pick<M>(m: ByFamily<M>, a: string): M {
  return m[familyOf(a)];
}
function familyOf(a: string): keyof ByFamily<unknown> {
  return isV6(a) ? 'v6' : 'v4';
}

/** A slot of each family's service index: its key, then its struct dvipa_svc (bpf/dvipa.h). */
const SVC_SLOT_SIZE: ByFamily<number> = { v4: svcKey.size + svc.size, v6: svc6Key.size + svc.size };

function keyOf(s: Service): SvcKey {
  return { vip: s.vip, port: s.port, proto: IPPROTO[s.protocol] };
}

function serviceOf(k: SvcKey): Service {
  const protocol = protocolName(k.proto);
  if (!isProtocol(protocol)) throw new Error(`services map holds an unknown protocol ${k.proto}`);
  return { vip: k.vip, port: k.port, protocol };
}

function addStats(a: SvcStats, b: SvcStats): SvcStats {
  const out = { ...a };
  for (const k of Object.keys(out) as (keyof SvcStats)[]) out[k] += b[k];
  return out;
}

/** The indexes 0..n-1 of an array (a Maglev table, a service index), encoded once as batch keys. */
const arrayKeysOf = new Map<number, Buffer>();
function arrayKeys(n: number): Buffer {
  let keys = arrayKeysOf.get(n);
  if (!keys) {
    keys = Buffer.alloc(n * 4);
    for (let i = 0; i < n; i++) keys.writeUInt32LE(i, i * 4);
    arrayKeysOf.set(n, keys);
  }
  return keys;
}

export class FastPath {
  readonly config: BpfMap<number, NodeConfig>;
  readonly services: BpfMap<SvcKey, Svc>;
  /** IPv6 services (as `services`; ids, Maglev tables and `targets` are shared with IPv4). */
  readonly services6: BpfMap<SvcKey, Svc>;
  /** DVIPA -> epoch under which this node owns it (0: a backup's warm tables). */
  readonly routed: BpfMap<string, bigint>;
  readonly routed6: BpfMap<string, bigint>;
  /** DVIPA -> CLOCK_MONOTONIC ns after which this node no longer answers for it (no entry: never). */
  readonly fence: BpfMap<string, bigint>;
  /** IPv6 DVIPA -> fencing deadline: its traffic and Neighbour Solicitations for it are dropped after it. */
  readonly fence6: BpfMap<string, bigint>;
  readonly served: BpfMap<string, number>;
  readonly served6: BpfMap<string, number>;
  /** VIPAROUTE: target cluster address -> the address its packets are encapsulated to. */
  readonly viaRoutes: BpfMap<string, string>;
  /** Target side: outer destinations decap accepts besides the cluster address (VIPAROUTE). */
  readonly decapAddrs: BpfMap<string, number>;
  readonly decapAddrs6: BpfMap<string, number>;
  readonly decapRouters: BpfMap<string, number>;
  /** Routing nodes' IPv6 cluster addresses: outer sources of IPv6 tunnels (either inner family). */
  readonly decapRouters6: BpfMap<string, number>;
  readonly decapServices: BpfMap<SvcKey, number>;
  /** Flows the data plane inserted, not confirmed by their target (a cache: a flood takes the least used slots). */
  readonly crt: FlowCache;
  /** Connections their target confirmed (NEWCONN): written and removed by the agent only, never evicted. */
  readonly crtEst: BpfMap<Flow, CrtEntry>;
  readonly decapServices6: BpfMap<SvcKey, number>;
  /** IPv6 flows not confirmed yet (LRU), and IPv4 ones to IPv6 targets; an entry's target is of either family. */
  readonly crt6: BpfMap<Flow, CrtEntry>;
  /** IPv6 connections confirmed by their target (and IPv4 ones to IPv6 targets): as crtEst. */
  readonly crt6Est: BpfMap<Flow, CrtEntry>;
  readonly txPorts: BpfMap<number, number>;
  /** Target index -> address and resolved next hop (the Maglev slots and CRT entries carry indexes). */
  readonly targets: BpfMap<number, TargetEntry>;
  readonly affinity: BpfMap<AffinityKey, Affinity>;
  readonly affinity6: BpfMap<AffinityKey, Affinity>;
  readonly svcStats: PerCpuArray<SvcStats>;
  private readonly servedStats: ByFamily<PerCpuHash<SvcKey, ServedStats>>;
  private readonly targetStats: PerCpuArray<TargetStats>;
  /** `${svcId}|${addr}` -> its index in `targets`, as the pinned map holds it. */
  private readonly targetIndex = new Map<string, number>();
  /** Per service id, the target indexes its last Maglev table held (what affinities may point to). */
  private readonly liveTargets = new Map<number, Set<number>>();
  private readonly netnsPath?: string;
  private readonly reasons: PerCpuArray<{ v: bigint }>;
  private readonly maglev: MapRef;
  /** The distributor's index of each family's services, built from `services`/`services6` (reindex). */
  private readonly svcIndex: { v4: MapRef; v6: MapRef };
  private readonly objects: Map<Role, BpfObject>;
  private readonly log: Logger;

  private constructor(
    readonly pinRoot: string,
    objects: Map<Role, BpfObject>,
    logger: Logger,
    netnsPath?: string,
  ) {
    this.objects = objects;
    this.log = logger;
    this.netnsPath = netnsPath;
    // The router's maps come from the distributor object, a target's from decap (bpf/maps_*.h).
    const router = objects.get('distributor')!;
    const target = objects.get('decap')!;
    const fd = (name: string) => router.mapFd(name);
    this.config = new BpfMap('node_config', fd('node_config'), u32, nodeConfig);
    this.services = new BpfMap('services', fd('services'), svcKey, svc);
    this.services6 = new BpfMap('services6', fd('services6'), svc6Key, svc);
    this.routed = new BpfMap('routed', fd('routed'), addr, u64);
    this.routed6 = new BpfMap('routed6', fd('routed6'), addr6, u64);
    this.fence = new BpfMap('fence', fd('fence'), addr, u64);
    this.fence6 = new BpfMap('fence6', fd('fence6'), addr6, u64);
    this.served = new BpfMap('served', target.mapFd('served'), addr, u8);
    this.served6 = new BpfMap('served6', target.mapFd('served6'), addr6, u8);
    this.viaRoutes = new BpfMap('via_routes', fd('via_routes'), addr, addr);
    this.decapAddrs = new BpfMap('decap_addrs', target.mapFd('decap_addrs'), addr, u8);
    this.decapAddrs6 = new BpfMap('decap_addrs6', target.mapFd('decap_addrs6'), addr6, u8);
    this.decapRouters = new BpfMap('decap_routers', target.mapFd('decap_routers'), addr, u8);
    this.decapRouters6 = new BpfMap('decap_routers6', target.mapFd('decap_routers6'), addr6, u8);
    this.decapServices = new BpfMap('decap_services', target.mapFd('decap_services'), svcKey, u8);
    this.decapServices6 = new BpfMap('decap_services6', target.mapFd('decap_services6'), svc6Key, u8);
    this.crt = new FlowCache('crt', fd('crt'), 'crt_key', fd('crt_key'));
    this.crtEst = new BpfMap('crt_est', fd('crt_est'), flow, crtEntry);
    this.crt6 = new BpfMap('crt6', fd('crt6'), flow6, crt6Entry);
    this.crt6Est = new BpfMap('crt6_est', fd('crt6_est'), flow6, crt6Entry);
    this.txPorts = new BpfMap('tx_ports', fd('tx_ports'), u32, u32);
    this.targets = new BpfMap('targets', fd('targets'), u32, targetEntry);
    this.targetStats = new PerCpuArray('target_stats', fd('target_stats'), targetStats, (a, b) => ({
      conns: a.conns + b.conns,
      packets: a.packets + b.packets,
      bytes: a.bytes + b.bytes,
    }));
    this.affinity = new BpfMap('affinity', fd('affinity'), affinityKey, affinity);
    this.affinity6 = new BpfMap('affinity6', fd('affinity6'), affinity6Key, affinity6);
    this.svcStats = new PerCpuArray('svc_stats', fd('svc_stats'), svcStats, addStats);
    const sumServed = (a: ServedStats, b: ServedStats) => ({
      packets: a.packets + b.packets,
      bytes: a.bytes + b.bytes,
    });
    this.servedStats = {
      v4: new PerCpuHash('served_stats', target.mapFd('served_stats'), svcKey, servedStats, sumServed),
      v6: new PerCpuHash('served_stats6', target.mapFd('served_stats6'), svc6Key, servedStats, sumServed),
    };
    this.reasons = new PerCpuArray(
      'reasons',
      fd('reasons'),
      { size: 8, decode: (b, o) => ({ v: u64.decode(b, o) }) },
      (a, b) => ({ v: a.v + b.v }),
    );
    this.maglev = mapRef('maglev', fd('maglev'));
    this.svcIndex = { v4: mapRef('svc_index', fd('svc_index')), v6: mapRef('svc_index6', fd('svc_index6')) };
    for (const [i, t] of this.targets.entries())
      if (t.addr !== NO_ADDR) this.targetIndex.set(`${t.svcId}|${t.addr}`, i);
    // Pins an older version wrote have services but no index of them; a new index map is empty.
    this.reindex('v4');
    this.reindex('v6');
    // Pins an older version wrote have every-port services but no filter bits for them.
    const cfg = this.config.get(0)!;
    const bits = cfg.anyPort | this.anyPortBits();
    if (bits !== cfg.anyPort) this.config.set(0, { ...cfg, anyPort: bits });
  }

  /**
   * Loads the programs and creates or adopts the pinned maps under the pin root. Opening
   * again over existing pins keeps every entry: that is how a restarted agent resumes.
   */
  static open(opts: FastPathOptions = {}): FastPath {
    const pinRoot = opts.pinRoot ?? DEFAULTS.pinRoot;
    const logger = (opts.logger ?? rootLog).child({ pinRoot });
    assertBpffs(pinRoot);
    fs.mkdirSync(pinRoot, { recursive: true });
    const crtMaxEntries = resolveCrtSize(pinRoot, opts.crtMaxEntries, logger);
    const carried = takeUnpreallocated(pinRoot, 'crt_est', flow, crtEntry, logger);
    const carried6 = takeUnpreallocated(pinRoot, 'crt6_est', flow6, crt6Entry, logger);

    const objects = new Map<Role, BpfObject>();
    try {
      for (const role of Object.keys(PROGRAMS) as Role[]) {
        // Only the distributor has the CRT (bpf/maps_router.h): the size goes to it alone, to its tables.
        const maxEntries: Record<string, number> =
          role === 'distributor'
            ? (() => {
                const crt6 = crt6Entries(pinRoot, crtMaxEntries);
                return { crt: crtSets(crtMaxEntries), crt_est: crtMaxEntries, crt6, crt6_est: crt6 };
              })()
            : {};
        objects.set(role, loadObject(role, { pinRoot, maxEntries, dir: opts.objectDir }));
      }
    } catch (e) {
      for (const o of objects.values()) o.close();
      throw e;
    }
    const fp = new FastPath(pinRoot, objects, logger, opts.netnsPath);
    if (carried.length) fp.crtEst.setBatch(carried);
    if (carried6.length) fp.crt6Est.setBatch(carried6);
    return fp;
  }

  progFd(role: Role | typeof RESOLVER): number {
    const program = role === RESOLVER ? RESOLVER : PROGRAMS[role];
    return this.objects.get(role === RESOLVER ? 'distributor' : role)!.progFd(program);
  }

  /**
   * Node-wide settings: the cluster addresses are the outer sources of encapsulated
   * packets, `clusterAddr` towards IPv4 targets ('0.0.0.0': none), `clusterAddr6` towards
   * IPv6 ones (default: as configured before, else none); `maxNewFlows` the new-flow rate
   * guard (new flows per second per CPU that get a CRT entry; 0: no guard; not given: as it was).
   */
  configure(c: { clusterAddr: string; clusterAddr6?: string; enabled?: boolean; maxNewFlows?: number }): void {
    const old = this.config.get(0);
    if (
      c.maxNewFlows !== undefined &&
      !(Number.isInteger(c.maxNewFlows) && c.maxNewFlows >= 0 && c.maxNewFlows < 2 ** 32)
    )
      throw new RangeError(`new-flow rate ${c.maxNewFlows}: expected a whole number of flows per second per CPU`);
    this.writeConfig({
      extIfindex: 0,
      extMac: NO_MAC,
      anyPort: 0,
      maxNewFlows: 0,
      crtSets: 0,
      clusterAddr6: '::',
      ...old,
      ...(c.clusterAddr6 === undefined ? {} : { clusterAddr6: c.clusterAddr6 }),
      clusterAddr: c.clusterAddr,
      enabled: c.enabled === false ? 0 : 1,
      ...(c.maxNewFlows !== undefined ? { maxNewFlows: c.maxNewFlows } : {}),
    });
  }

  /** The every-port filter's bits (dvipa_config.any_port) of the every-port services in the maps, and of `vips`. */
  private anyPortBits(vips: string[] = []): number {
    const inMaps = [...this.services.keys(), ...this.services6.keys()].filter((k) => k.port === 0).map((k) => k.vip);
    return [...inMaps, ...vips].reduce((b, v) => b | anyPortBit(v), 0);
  }

  /**
   * Every write of node_config: the every-port filter gets the bits of the every-port services
   * in the maps and of `vips` (about to be written) added, never one cleared (a stale bit costs
   * a lookup). A missing bit would pass the DVIPA's every-port traffic instead of forwarding
   * it: so a write that read the config before another process added a bit puts it back.
   */
  private writeConfig(c: NodeConfig, vips: string[] = []): void {
    this.config.set(0, { ...c, anyPort: c.anyPort | this.anyPortBits(vips), crtSets: this.crt.sets });
  }

  nodeConfig(): NodeConfig {
    return this.config.get(0)!;
  }

  /** The services map of the DVIPA's family. */
  private servicesOf(vip: string): BpfMap<SvcKey, Svc> {
    return pick({ v4: this.services, v6: this.services6 }, vip);
  }

  /** The family's services from its record as the index holds them, and `extra` (not written yet). */
  private indexEntries(family: keyof ByFamily<unknown>, extra: Array<[SvcKey, Svc]> = []): IndexedService[] {
    const keyCodec = family === 'v4' ? svcKey : svc6Key;
    const record = family === 'v4' ? this.services : this.services6;
    return [...record.entries(), ...extra].map(([k, v]) => ({
      key: keyCodec.encode(k),
      value: svc.encode(v),
      name: serviceName(serviceOf(k)),
    }));
  }

  /**
   * Rebuilds the family's service index (svc_index or svc_index6, src/tables/svc-index.ts)
   * from its record (`services` or `services6`) and swaps it in whole: after every write of
   * the record. Another process writing the record meanwhile (an agent and `dvipa fastpath
   * apply` on the same pins) may have swapped in an index built before this write, or this
   * one may hide its write: the record is read again after the swap and indexed again while
   * it changed, at most three times.
   */
  private reindex(family: keyof ByFamily<unknown>): void {
    const name = family === 'v4' ? 'svc_index' : 'svc_index6';
    const slotSize = SVC_SLOT_SIZE[family];
    let indexed: string | undefined;
    for (let pass = 0; pass < 3; pass++) {
      const entries = this.indexEntries(family);
      const read = entries
        .map((e) => e.key.toString('hex') + e.value.toString('hex'))
        .sort()
        .join();
      if (read === indexed) return;
      const slots = buildSvcIndex(entries, slotSize);
      const inner = sys.mapCreate(`${name}(inner)`, BPF_MAP_TYPE_ARRAY, name, 4, slotSize, SVC_SLOTS, 0);
      try {
        sys.mapUpdateBatch(`${name}(inner)`, inner, arrayKeys(SVC_SLOTS), slots, SVC_SLOTS, BPF_ANY);
        sys.mapUpdate(name, this.svcIndex[family], u32.encode(0), u32.encode(inner), BPF_ANY);
      } finally {
        sys.closeFd(`${name}(inner)`, inner);
      }
      indexed = read;
    }
  }

  private routedOf(vip: string): BpfMap<string, bigint> {
    return pick({ v4: this.routed, v6: this.routed6 }, vip);
  }

  private affinityOf(vip: string): BpfMap<AffinityKey, Affinity> {
    return pick({ v4: this.affinity, v6: this.affinity6 }, vip);
  }

  /** Services of both families, IPv4 first. */
  listServices(): Array<Service & { id: number }> {
    return [...this.services.entries(), ...this.services6.entries()].map(([k, v]) => ({ ...serviceOf(k), id: v.id }));
  }

  serviceId(s: Service): number | undefined {
    return this.servicesOf(s.vip).get(keyOf(s))?.id;
  }

  /**
   * Makes `s` a distributed service with these targets. The new Maglev table is built
   * completely in a fresh inner map and swapped in with one update of the outer map.
   * Connections already in the CRT stay on their targets whatever the weights become.
   * `affinitySec` (TIMEDAFFINITY): a client's new connections follow its last target for
   * that long; affinities to targets that no longer take connections are forgotten.
   */
  setTargets(s: Service, targets: readonly Target[], opts: { affinitySec?: number } = {}): number {
    const affinityS = opts.affinitySec ?? 0;
    if (!Number.isInteger(affinityS) || affinityS < 0 || affinityS > 99999)
      throw new RangeError(`affinity ${affinityS}: expected whole seconds from 0 to 99999`);
    const { slots, addrs } = buildMaglevIndexed(targets.map((t) => ({ ...t, addr: canonicalIp(t.addr) })));
    let id = this.serviceId(s);
    const isNew = id === undefined;
    if (isNew) {
      id = this.freeServiceId();
      // A service the index has no room for is refused before anything is written.
      const family = familyOf(s.vip);
      buildSvcIndex(this.indexEntries(family, [[keyOf(s), { id, affinityS, flags: 0 }]]), SVC_SLOT_SIZE[family]);
    }
    const svcId = id!;

    // Every listed target has an index with its next hop resolved before a slot points to it.
    const wanted = new Set(targets.map((t) => canonicalIp(t.addr)));
    const indexOf = new Map([...wanted].map((a) => [a, this.targetSlot(svcId, a)]));
    const bySlot = [0, ...addrs.map((a) => indexOf.get(a)!)];
    const values = Buffer.alloc(MAGLEV_SIZE * 4);
    for (let i = 0; i < MAGLEV_SIZE; i++) values.writeUInt32LE(bySlot[slots[i]], i * 4);
    const inner = sys.mapCreate('maglev(inner)', BPF_MAP_TYPE_ARRAY, 'maglev_table', 4, 4, MAGLEV_SIZE, 0);
    try {
      sys.mapUpdateBatch('maglev(inner)', inner, arrayKeys(MAGLEV_SIZE), values, MAGLEV_SIZE, BPF_ANY);
      sys.mapUpdate('maglev', this.maglev, u32.encode(svcId), u32.encode(inner), BPF_ANY);
    } finally {
      sys.closeFd('maglev(inner)', inner);
    }
    // Indexes of targets that left: their connections' CRT entries fall back to the FIB.
    for (const [key, i] of this.targetIndex) {
      if (key.startsWith(`${svcId}|`) && !wanted.has(key.slice(key.indexOf('|') + 1))) this.freeTargetSlot(key, i);
    }
    if (isNew) {
      this.svcStats.reset(id!);
      const routed = this.routedOf(s.vip);
      if (routed.get(s.vip) === undefined) routed.set(s.vip, 0n);
      this.log.info({ service: serviceName(s), id }, 'service added');
    }
    // Once set, kept: IPv4 connections to an IPv6 target that left stay findable in crt6.
    const before = this.servicesOf(s.vip).get(keyOf(s));
    const flags =
      ((before?.flags ?? 0) & SVC_V6_TARGETS) |
      ([...wanted].some(isV6) ? SVC_V6_TARGETS : 0) |
      (this.fenceOf(s.vip) === undefined ? SVC_UNFENCED : 0);
    // Every push of the service's table comes here: the maps are scanned only if its bit is missing.
    const cfg = s.port === 0 ? this.config.get(0)! : undefined;
    if (cfg && !(cfg.anyPort & anyPortBit(s.vip))) this.writeConfig(cfg, [s.vip]);
    this.servicesOf(s.vip).set(keyOf(s), { id: id!, affinityS, flags });
    this.reindex(familyOf(s.vip));
    // By index: an IPv4 client's affinity to an IPv6 target has no IPv4 address to compare.
    const live = new Set(addrs.map((a) => indexOf.get(a)!));
    const wasLive = this.liveTargets.get(svcId);
    this.liveTargets.set(svcId, live);
    // The affinity map is walked only when an affinity may have gone stale: a flood of
    // sources fills it, and a walk per table push would hold the event loop each time.
    // Without affinity before, the data plane made none for this service.
    const mayBeStale =
      !wasLive || (before?.affinityS !== 0 && (affinityS === 0 || [...wasLive].some((i) => !live.has(i))));
    if (mayBeStale) {
      const affinities = this.affinityOf(s.vip);
      const stale = [...affinities.entries()]
        .filter(([k, v]) => k.svcId === id && (affinityS === 0 || !live.has(v.targetIdx)))
        .map(([k]) => k);
      if (stale.length) affinities.deleteBatch(stale);
    }
    this.log.debug({ service: serviceName(s), targets }, 'targets set');
    return id!;
  }

  removeService(s: Service): boolean {
    const id = this.serviceId(s);
    if (id === undefined) return false;
    this.servicesOf(s.vip).delete(keyOf(s));
    this.reindex(familyOf(s.vip));
    const affinities = this.affinityOf(s.vip);
    const stale = [...affinities.keys()].filter((k) => k.svcId === id);
    if (stale.length) affinities.deleteBatch(stale);
    this.liveTargets.delete(id);
    sys.mapDelete('maglev', this.maglev, u32.encode(id));
    for (const [key, i] of this.targetIndex) if (key.startsWith(`${id}|`)) this.freeTargetSlot(key, i);
    const vip = canonicalIp(s.vip);
    if (!this.listServices().some((o) => o.vip === vip)) this.routedOf(vip).delete(vip);
    this.log.info({ service: serviceName(s), id }, 'service removed');
    return true;
  }

  private freeServiceId(): number {
    const used = new Set(this.listServices().map((o) => o.id));
    for (let id = 0; id < MAX_SERVICES; id++) if (!used.has(id)) return id;
    throw new RangeError(`no free service id: at most ${MAX_SERVICES} distributed services per node`);
  }

  /** The index of the service's target in `targets` (for CRT entries the control plane writes), or 0. */
  targetIndexOf(svcId: number, target: string): number {
    return this.targetIndex.get(`${svcId}|${canonicalIp(target)}`) ?? 0;
  }

  /** What the data plane counted for the service's target: new connections, packets, bytes. */
  targetCounts(svcId: number, target: string): TargetStats {
    const i = this.targetIndexOf(svcId, target);
    return i ? this.targetStats.get(i) : { conns: 0n, packets: 0n, bytes: 0n };
  }

  /**
   * Connections their targets confirmed (NEWCONN) go into the table packets cannot evict, and
   * out of the one of unconfirmed flows, which packets can (IPv4's cache, IPv6's LRU hash):
   * `crt_est` and `crt`, or `crt6_est` and `crt6` for an IPv6 connection or an IPv4 one to an
   * IPv6 target (where the data plane puts those). Returns the flows that did not fit (the
   * table is full): they stay among the unconfirmed and nothing is evicted for them. UDP flows are left where they are: the data
   * plane never looks for one among the confirmed (no handshake: every datagram may be a first).
   */
  confirm(entries: ReadonlyArray<readonly [Flow, CrtEntry]>): Flow[] {
    const tcp = entries.filter(([k]) => k.proto === IPPROTO.tcp);
    const v6 = tcp.filter(([k, v]) => inCrt6(k, v.target));
    const v4 = tcp.filter(([k, v]) => !inCrt6(k, v.target));
    return [...this.confirmIn(this.crtEst, this.crt, v4), ...this.confirmIn(this.crt6Est, this.crt6, v6)];
  }

  private confirmIn(
    est: BpfMap<Flow, CrtEntry>,
    lru: Pick<BpfMap<Flow, CrtEntry>, 'deleteBatch'>,
    entries: ReadonlyArray<readonly [Flow, CrtEntry]>,
  ): Flow[] {
    if (!entries.length) return [];
    let refused: Flow[] = [];
    try {
      est.setBatch(entries);
    } catch (e) {
      // A batch stops at the first entry that does not fit: the rest one by one.
      if (!isFull(e)) throw e;
      refused = entries.filter(([k, v]) => !this.setUnlessFull(est, k, v)).map(([k]) => k);
    }
    const kept = new Set(refused);
    lru.deleteBatch(entries.filter(([k]) => !kept.has(k)).map(([k]) => k));
    return refused;
  }

  /**
   * A connection ended (TERMCONN): out of whichever table holds it. An IPv4 one may be in
   * crt6 (its target was IPv6), which its flow alone does not tell.
   */
  forget(k: Flow): void {
    if (!isV6(k.daddr) && (this.crtEst.delete(k) || this.crt.delete(k))) return;
    if (!this.crt6Est.delete(k)) this.crt6.delete(k);
  }

  /** The CRT's tables, for a CrtWalker: confirmed connections first, then the unconfirmed (the IPv4 cache, the IPv6 LRU). */
  crtTables(): CrtTable[] {
    return [
      { fd: this.crtEst.fd, confirmed: true },
      { fd: this.crt6Est.fd, v6: true, confirmed: true },
      { fd: this.crt.fd, keyFd: this.crt.keyFd },
      { fd: this.crt6.fd, v6: true },
    ];
  }

  /** The tables of confirmed connections' size (each family's). */
  confirmedCapacity(): number {
    return this.crtEst.maxEntries + this.crt6Est.maxEntries;
  }

  private setUnlessFull(m: BpfMap<Flow, CrtEntry>, k: Flow, v: CrtEntry): boolean {
    try {
      m.set(k, v);
      return true;
    } catch (e) {
      if (!isFull(e)) throw e;
      return false;
    }
  }

  /** Every target's next hop as resolved now. */
  nexthops(): TargetNexthop[] {
    return [...this.targetIndex.values()].map((index) => {
      const t = this.targets.get(index)!;
      return {
        addr: t.addr,
        svcId: t.svcId,
        index,
        resolved: t.ifindex !== 0,
        ifindex: t.ifindex,
        dmac: t.dmac,
        mtu: t.mtu,
      };
    });
  }

  /**
   * Asks the FIB again for every target's next hop and writes those that changed (`changed`).
   * The question is asked once per address (`asked`): services that share a target, every
   * port a VIPADISTRIBUTE names say, share its next hop. For route, neighbour, link and
   * forwarding changes (see nexthops.ts).
   */
  resolveTargets(): { changed: number; asked: number } {
    let changed = 0;
    const answers = new Map<string, Nexthop>();
    this.inNamespace(() => {
      for (const index of this.targetIndex.values()) if (this.resolveTarget(index, answers)) changed++;
    });
    return { changed, asked: answers.size };
  }

  /** A free index for the service's target, or the one it has; resolved before it is returned. */
  private targetSlot(svcId: number, target: string): number {
    const key = `${svcId}|${target}`;
    const known = this.targetIndex.get(key);
    if (known !== undefined) return known;
    const used = new Set(this.targetIndex.values());
    let index = 1;
    while (used.has(index)) index++;
    if (index >= MAX_TARGETS)
      throw new RangeError(`no free target index: at most ${MAX_TARGETS - 1} targets over all services of a node`);
    // VIPAROUTE applies to IPv4 targets only (via_routes is keyed by IPv4 cluster addresses).
    const via = isV6(target) ? NO_ADDR : (this.viaRoutes.get(target) ?? NO_ADDR);
    this.targets.set(index, { addr: target, svcId, ifindex: 0, mtu: 0, smac: NO_MAC, dmac: NO_MAC, via });
    this.targetStats.reset(index);
    this.targetIndex.set(key, index);
    this.inNamespace(() => this.resolveTarget(index));
    return index;
  }

  private freeTargetSlot(key: string, index: number): void {
    this.targets.set(index, { addr: NO_ADDR, svcId: 0, ifindex: 0, mtu: 0, smac: NO_MAC, dmac: NO_MAC, via: NO_ADDR });
    this.targetIndex.delete(key);
  }

  /**
   * One target's next hop, asked again (or taken from `answers`, the FIB's answers so far by
   * address, which this adds to); whether it changed.
   */
  private resolveTarget(index: number, answers = new Map<string, Nexthop>()): boolean {
    const t = this.targets.get(index);
    if (!t || t.addr === NO_ADDR) return false;
    const toward = towards(t);
    let nh = answers.get(toward);
    if (!nh) answers.set(toward, (nh = this.askFib(t)));
    return this.applyNexthop(index, t, nh);
  }

  /** The next hop towards the target by xdp_resolve (the distributor's own FIB lookup). */
  private askFib(t: TargetEntry): Nexthop {
    const ingress = this.config.get(0)?.extIfindex || LOOPBACK_IFINDEX;
    const frame = Buffer.alloc(Math.max(resolve.size, 64));
    // The next hop towards the address packets are encapsulated to: the VIPAROUTE one if any.
    resolve.encode({ rc: 0 }, frame);
    targetEntry.encode({ ...t, addr: towards(t) }, frame, RESOLVE_NH);
    let out: Buffer;
    try {
      out = runXdp(this.progFd(RESOLVER), RESOLVER, frame, { ingressIfindex: ingress }).frame;
    } catch (e) {
      // The external interface gone (ENODEV), say: a next hop that cannot be checked is not kept.
      if (!(e instanceof SyscallError)) throw e;
      this.log.warn({ target: t.addr, err: e.message }, "cannot resolve the target's next hop");
      out = resolve.encode({ rc: FIB_RESULTS.indexOf('not_fwded') }, frame);
    }
    const { rc } = resolve.decode(out);
    const nh = targetEntry.decode(out, RESOLVE_NH);
    return rc === 0
      ? { rc, ifindex: nh.ifindex, mtu: nh.mtu, smac: nh.smac, dmac: nh.dmac }
      : { rc, ifindex: 0, mtu: 0, smac: NO_MAC, dmac: NO_MAC };
  }

  /** Writes the target's next hop if it changed; whether it did. */
  private applyNexthop(index: number, t: TargetEntry, nh: Nexthop): boolean {
    const { rc, ...hop } = nh;
    if (hop.ifindex === t.ifindex && hop.mtu === t.mtu && hop.smac === t.smac && hop.dmac === t.dmac) return false;
    this.targets.set(index, { ...t, ...hop });
    const why = rc ? { unresolved: FIB_RESULTS[rc] ?? rc } : {};
    this.log.info(
      { target: t.addr, svcId: t.svcId, ifindex: hop.ifindex, dmac: hop.dmac, mtu: hop.mtu, ...why },
      rc ? 'target next hop not resolved: the data plane asks the FIB per packet' : 'target next hop resolved',
    );
    return true;
  }

  /** Runs `fn` in the namespace whose FIB gives the next hops. */
  inNamespace<T>(fn: () => T): T {
    return this.netnsPath ? inNetnsAt(this.netnsPath, this.netnsPath, fn) : fn();
  }

  /** Lets the distributor redirect to `ifname` (an interface towards the targets). */
  enableEgress(ifname: string): void {
    const ifindex = sys.ifNameToIndex(ifname, ifname);
    this.txPorts.set(ifindex, ifindex);
  }

  /** Records that this node owns the DVIPA under `epoch` (0: no longer); its services must exist. */
  setEpoch(vip: string, epoch: number): void {
    const routed = this.routedOf(vip);
    if (routed.get(vip) === undefined) throw new RangeError(`${vip}: no service of this DVIPA is programmed here`);
    routed.set(vip, BigInt(epoch));
  }

  /** The epoch the pinned data plane last owned the DVIPA under (0 or undefined: not owned). */
  epochOf(vip: string): number | undefined {
    const e = this.routedOf(vip).get(vip);
    return e === undefined ? undefined : Number(e);
  }

  /**
   * VIPAROUTE: exactly these targets are encapsulated to another of their addresses. The
   * map serves targets not resolved yet; each resolved target's entry carries its own, with
   * the next hop towards it.
   */
  setViaRoutes(routes: Map<string, string>): void {
    for (const k of [...this.viaRoutes.keys()]) if (!routes.has(k)) this.viaRoutes.delete(k);
    for (const [xcf, via] of routes) this.viaRoutes.set(xcf, via);
    for (const index of this.targetIndex.values()) {
      const t = this.targets.get(index)!;
      const via = routes.get(t.addr) ?? NO_ADDR;
      if (t.via === via) continue;
      // Unresolved meanwhile (the data plane asks the FIB and via_routes), then resolved towards it.
      this.targets.set(index, { ...t, via, ifindex: 0 });
      this.inNamespace(() => this.resolveTarget(index));
    }
  }

  /** Target side: exactly these addresses (either family), besides the cluster addresses, take tunnelled packets. */
  setDecapAddrs(addrs: string[]): void {
    replaceSet({ v4: this.decapAddrs, v6: this.decapAddrs6 }, addrs.map(canonicalIp));
  }

  /** The DVIPA's fence, if it has one: its deadline (CLOCK_MONOTONIC ns) and whether it drains. */
  fenceOf(vip: string): { deadlineNs: bigint; draining: boolean } | undefined {
    const v = pick({ v4: this.fence, v6: this.fence6 }, vip).get(vip);
    return v === undefined ? undefined : { deadlineNs: v & ~FENCE_DRAIN, draining: (v & FENCE_DRAIN) !== 0n };
  }

  /**
   * This node may answer for the DVIPA until `deadlineNs` (CLOCK_MONOTONIC, as
   * process.hrtime.bigint()); FENCE_EXPIRED: no longer; undefined: always (no fencing). With
   * FENCE_DRAIN set: ARP no more, traffic until the deadline (a handover; the renewal thread
   * writes it).
   */
  setFence(vip: string, deadlineNs: bigint | undefined): void {
    const fence = pick({ v4: this.fence, v6: this.fence6 }, vip);
    // The DVIPA's services skip the fence lookup (SVC_UNFENCED) only while it has no entry:
    // they look before a deadline appears, and stop looking once it is gone. Entries appear
    // only here; the renewal thread moves the deadlines of DVIPAs the router gave one.
    if (deadlineNs === undefined) {
      fence.delete(vip);
      this.markUnfenced(vip, true);
    } else {
      this.markUnfenced(vip, false);
      fence.set(vip, deadlineNs);
    }
  }

  private markUnfenced(vip: string, unfenced: boolean): void {
    const services = this.servicesOf(vip);
    const dvipa = canonicalIp(vip);
    let changed = false;
    for (const [k, v] of [...services.entries()]) {
      const flags = unfenced ? v.flags | SVC_UNFENCED : v.flags & ~SVC_UNFENCED;
      if (k.vip === dvipa && flags !== v.flags) {
        services.set(k, { ...v, flags });
        changed = true;
      }
    }
    if (changed) this.reindex(familyOf(vip));
  }

  /** Target side: decapsulate packets for this DVIPA (either family). */
  serve(vip: string): void {
    pick({ v4: this.served, v6: this.served6 }, vip).set(vip, 1);
  }

  unserve(vip: string): boolean {
    return pick({ v4: this.served, v6: this.served6 }, vip).delete(vip);
  }

  /**
   * Target side: decapsulate only from these routing nodes (cluster addresses) and only for
   * these services (port 0: every port of the DVIPA). Replaces the sets; entries that stay
   * are not touched, so no packet meanwhile meets a half-written set.
   */
  allowDecap(routers: Iterable<string>, services: Iterable<Service>): void {
    replaceSet({ v4: this.decapRouters, v6: this.decapRouters6 }, [...routers].map(canonicalIp));
    const all = [...services].map((s) => ({ ...s, vip: canonicalIp(s.vip) }));
    for (const [map, fam] of [
      [this.decapServices, 4],
      [this.decapServices6, 6],
    ] as const) {
      const want = new Map(all.filter((s) => ipFamily(s.vip) === fam).map((s) => [serviceName(s), keyOf(s)]));
      for (const k of want.values()) map.set(k, 1);
      for (const k of [...map.keys()]) if (!want.has(serviceName(serviceOf(k)))) map.delete(k);
    }
  }

  /** Target side: what arrived through routing nodes, per DVIPA:port (port 0: fragments and portless protocols). */
  receivedStats(): Array<{ vip: string; port: number; protocol: string; packets: bigint; bytes: bigint }> {
    return [...this.servedStats.v4.entries(), ...this.servedStats.v6.entries()].map(([k, v]) => ({
      vip: k.vip,
      port: k.port,
      protocol: protocolName(k.proto),
      ...v,
    }));
  }

  serviceStats(id: number): SvcStats {
    return this.svcStats.get(id);
  }

  reasonCounts(): Record<Reason, bigint> {
    const out = {} as Record<Reason, bigint>;
    REASONS.forEach((r, i) => (out[r] = this.reasons.get(i).v));
    return out;
  }

  attach(role: Role, ifname: string, mode: XdpMode = 'auto'): Attachment {
    const a = attachXdp(this.pinRoot, PROGRAMS[role], this.progFd(role), ifname, mode, this.log);
    this.log.info({ ...a }, a.replaced ? 'XDP program replaced' : 'XDP program attached');
    const cfg = this.config.get(0);
    // The distributor takes only frames addressed to its interface (see dvipa_config).
    if (role === 'distributor' && cfg)
      this.writeConfig({ ...cfg, extIfindex: a.ifindex, extMac: interfaceMac(ifname) });
    return a;
  }

  detach(role: Role, ifname: string): boolean {
    return detachXdp(this.pinRoot, PROGRAMS[role], ifname);
  }

  links(): ReturnType<typeof listLinks> {
    return listLinks(this.pinRoot);
  }

  /** Releases this process's handles; pinned maps and links stay and keep forwarding. */
  close(): void {
    for (const o of this.objects.values()) o.close();
    this.objects.clear();
  }

  /** Detaches everything and removes the pin root: the node stops distributing. */
  static purge(pinRoot: string = DEFAULTS.pinRoot): void {
    for (const l of listLinks(pinRoot)) fs.unlinkSync(l.pin);
    fs.rmSync(pinRoot, { recursive: true, force: true });
  }
}

/** A full hash map (not LRU) refuses a new key with E2BIG. */
function isFull(e: unknown): boolean {
  return e instanceof SyscallError && e.code === 'E2BIG';
}

const BPF_FS_MAGIC = 0xcafe4a11;

/**
 * Pins only outlive this process on the host's bpf filesystem. `ip netns exec` mounts a
 * fresh sysfs over /sys, hiding it: say so instead of failing obscurely.
 */
function assertBpffs(pinRoot: string): void {
  let dir = pinRoot;
  while (!fs.existsSync(dir)) dir = path.dirname(dir);
  if (fs.statfsSync(dir).type !== BPF_FS_MAGIC) {
    throw new Error(
      `${dir} is not on a bpf filesystem, so ${pinRoot} cannot hold pins: mount it (mount -t bpf bpf /sys/fs/bpf), ` +
        'and to run dvipa inside a network namespace enter only the network namespace (nsenter --net=/run/netns/NAME), not `ip netns exec`, which remounts /sys',
    );
  }
}

/**
 * Target side sets of either family (DVIPAs, routers, addresses): exactly `want` afterwards,
 * new entries written before old ones go, so no packet meanwhile meets a half-written set.
 */
function replaceSet(maps: ByFamily<BpfMap<string, number>>, want: string[]): void {
  for (const a of want) pick(maps, a).set(a, 1);
  for (const m of [maps.v4, maps.v6]) for (const k of [...m.keys()]) if (!want.includes(k)) m.delete(k);
}

/** The max_entries of a pinned map, if it is pinned. */
function pinnedEntries(pin: string): number | undefined {
  if (!fs.existsSync(pin)) return undefined;
  const fd = sys.objGet(pin, pin);
  try {
    return sys.mapInfo(pin, fd).maxEntries;
  } finally {
    sys.closeFd(pin, fd);
  }
}

/** A target's next hop as the FIB gave it (`rc` 0: resolved; else the lookup's result). */
interface Nexthop extends Pick<TargetEntry, 'ifindex' | 'mtu' | 'smac' | 'dmac'> {
  rc: number;
}

/** The address a target's packets are encapsulated to: its VIPAROUTE one, if it has one. */
const towards = (t: TargetEntry) => (t.via !== NO_ADDR ? t.via : t.addr);

/** The IPv6 CRT: its pinned size, else the IPv4 CRT's up to CRT6_DEFAULT_ENTRIES (it is preallocated). */
function crt6Entries(pinRoot: string, crtEntries: number): number {
  return pinnedEntries(path.join(pinRoot, 'crt6')) ?? Math.min(crtEntries, CRT6_DEFAULT_ENTRIES);
}

/**
 * Versions before 2026-12-03 (session 26) pinned the confirmed connections' tables (`crt_est`,
 * `crt6_est`) without preallocation. Preallocated, a lookup over 100,000 connections costs
 * about half as much (docs/benchmarks.md), and libbpf reuses a pinned map only with the same
 * flags: so the older pin goes, and its connections, returned here, move into the table the
 * load makes (the same size). The old program reads the old table until the new one is
 * attached in its place.
 */
function takeUnpreallocated(
  pinRoot: string,
  name: string,
  key: Struct<Flow>,
  value: Struct<CrtEntry>,
  logger: Logger,
): Array<[Flow, CrtEntry]> {
  const pin = path.join(pinRoot, name);
  if (!fs.existsSync(pin)) return [];
  const fd = sys.objGet(pin, pin);
  try {
    if (!(sys.mapInfo(pin, fd).flags & BPF_F_NO_PREALLOC)) return [];
    const entries = [...new BpfMap(name, fd, key, value).entries()];
    logger.warn(
      { pin, connections: entries.length },
      'the pinned table of confirmed connections is an older one, not preallocated: its connections move to a preallocated one',
    );
    fs.unlinkSync(pin);
    return entries;
  } finally {
    sys.closeFd(pin, fd);
  }
}

/** The sets of the cache of unconfirmed flows (`crt`) for a CRT of `entries`. */
function crtSets(entries: number): number {
  return Math.ceil(entries / CRT_WAYS);
}

/**
 * An explicit size must match an existing pinned CRT; no size adopts the pinned one (the
 * size of `crt_est`, which `crt`'s sets follow). Versions before the cache pinned `crt` as an
 * LRU hash: that pin goes (unconfirmed flows only, which packets re-derive by hash) and the
 * load pins the cache in its place.
 */
function resolveCrtSize(pinRoot: string, wanted: number | undefined, logger: Logger): number {
  const cache = path.join(pinRoot, 'crt');
  if (fs.existsSync(cache)) {
    const fd = sys.objGet(cache, cache);
    try {
      if (sys.mapInfo(cache, fd).type === BPF_MAP_TYPE_LRU_HASH) {
        logger.warn(
          { pin: cache },
          'the pinned CRT of unconfirmed flows is an older LRU hash: replaced by the flow cache',
        );
        fs.unlinkSync(cache);
      }
    } finally {
      sys.closeFd(cache, fd);
    }
  }
  const pin = path.join(pinRoot, 'crt_est');
  if (wanted !== undefined && !withinLimits('crtEntries', wanted)) {
    const [min, max] = LIMITS.crtEntries;
    throw new RangeError(`CRT size ${wanted}: expected an integer from ${min} to ${max}`);
  }
  const pinned = pinnedEntries(pin);
  if (pinned === undefined) return wanted ?? CRT_DEFAULT_ENTRIES;
  if (wanted !== undefined && wanted !== pinned) {
    throw new Error(
      `the pinned CRT at ${pin} holds ${pinned} entries, not ${wanted}: keep its size, or purge the pins (dvipa fastpath purge) to resize it`,
    );
  }
  return pinned;
}
