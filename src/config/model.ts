/*
 * The cluster configuration, as both the VIPADynamic language (profile.ts) and its YAML form
 * (yaml.ts) describe it, normalised: IPv4 addresses as dotted quads, IPv6 addresses in
 * RFC 5952 form, keywords as lower-case names, defaults filled in. `validate` checks what no single statement can: references
 * between statements and nodes.
 */
import { DvipaError, EXIT } from '../errors.js';
import { ipFamily, parseIpv4 } from '../net/addr.js';

export type Moveable = 'immediate' | 'whenidle' | 'disruptive';

/*
 * `mask`: an IPv4 DVIPA's address mask (255.255.255.0), or an IPv6 DVIPA's prefix length
 * (64). `interface`: an IPv6 DVIPA's interface name, as z/OS names each one (VIPADEFINE
 * MOVEABLE IMMEDIATE DVIPA6A 2001:db8::10); z/OS's VIPADISTRIBUTE and VIPADELETE name it.
 */
export interface VipaDefine {
  address: string;
  mask: string;
  moveable: Moveable;
  interface?: string;
}
export interface VipaBackup {
  address: string;
  rank: number;
  moveable?: 'immediate' | 'whenidle';
  mask?: string;
  interface?: string;
}
export interface VipaRange {
  address: string;
  mask: string;
  moveable: 'nondisruptive' | 'disruptive';
  interface?: string;
}

// The distribution methods and destinations are the DPT's vocabulary (tables/dpt.ts); the config speaks it.
import type { Destination, DistMethod } from '../tables/dpt.js';

export type { Destination, DistMethod };

export interface PortRange {
  from: number;
  to: number;
}

export interface VipaDistribute {
  address: string;
  /** 'all': every port of the DVIPA (PORT omitted). */
  ports: PortRange[] | 'all';
  /** 'all': every node of the cluster, including nodes that join later. */
  destinations: Destination[] | 'all';
  method: DistMethod;
  /** TIMEDAFFinity: seconds a client keeps its target after its last connection (0 = off). */
  timedAffinity: number;
}

/** VIPAROUTE: packets for the target `xcf` are encapsulated to its address `via` instead. */
export interface ViaRoute {
  xcf: string;
  via: string;
}

export interface VipaDynamic {
  define: VipaDefine[];
  backup: VipaBackup[];
  distribute: VipaDistribute[];
  range: VipaRange[];
  /** Present only when the node has VIPAROUTE statements. */
  route?: ViaRoute[];
}

export interface NodeSpec {
  name: string;
  /** The node's cluster (XCF) address: where tunnelled packets for its targets go. IPv4, or IPv6 alone. */
  xcf: string;
  /** Its IPv6 cluster address beside an IPv4 `xcf` (z/OS: IPCONFIG6 DYNAMICXCF). */
  xcf6?: string;
  external?: string;
  internal: string[];
  vipaDynamic: VipaDynamic;
}

/**
 * The coupling facility: where DVIPA ownership is decided. Without it each node owns what
 * it defines or backs up, alone. TLS and auth are given to the agent (--etcd-ca ...).
 */
export interface CouplingConfig {
  etcd: string[];
  /** Seconds a dead node keeps its DVIPAs (default 1). */
  leaseTtl?: number;
  /** No automatic takeback by the defining node. */
  nopreempt?: boolean;
  /** Seconds the defining node waits, ready, before taking its DVIPA back (default 0). */
  takebackDelay?: number;
}

/**
 * IPsec recovery (CLUSTER IPSEC): the owner of a DVIPA keeps its IPsec SAs in the coupling
 * facility, and the next owner re-installs them. Needs the coupling facility (etcd).
 */
export interface IpsecConfig {
  /** Outbound ESP sequence numbers of a re-installed SA jump this far (default 1,000,000). */
  seqMargin?: number;
  /** Milliseconds: at most one store write per SA this often (default 1000). */
  interval?: number;
}

/** An etcd endpoint as the config and the CLI accept it. */
export function isEtcdUrl(s: string): boolean {
  try {
    const u = new URL(s);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.host !== '';
  } catch {
    return false;
  }
}

export interface ClusterConfig {
  keyFile?: string;
  /** A directory of per-node Ed25519 keys: every node's `name`.pub, and this node's `name`.key. */
  identities?: string;
  coupling?: CouplingConfig;
  ipsec?: IpsecConfig;
  /** Routing nodes: new flows per second per CPU that get a CRT entry (CLUSTER NEWFLOWRATE; 0: no guard). */
  newFlowRate?: number;
  nodes: NodeSpec[];
  /** Peers named in a per-node file (PEER statements); a cluster file lists its nodes instead. */
  peers: Array<{ name: string; xcf: string; xcf6?: string }>;
}

/** A node's or peer's cluster addresses: its `xcf`, and its IPv6 one beside it. */
export function clusterAddresses(n: { xcf: string; xcf6?: string }): string[] {
  return n.xcf6 === undefined ? [n.xcf] : [n.xcf, n.xcf6];
}

/** DESTIP ALL's address of a node for `dvipa`: of the DVIPA's family where the node has one (no change of family in the tunnel). */
export function clusterAddressFor(n: { xcf: string; xcf6?: string }, dvipa: string): string {
  return ipFamily(dvipa) === 6 && n.xcf6 !== undefined ? n.xcf6 : n.xcf;
}

/** IPv6 interface names as z/OS takes them: a letter first, at most 16 characters. */
export const INTERFACE_NAME = /^[A-Za-z@#$][\w@#$]{0,15}$/;

export function emptyVipaDynamic(): VipaDynamic {
  return { define: [], backup: [], distribute: [], range: [] };
}

/** An error with a place: `file:line:column: message` (`file`: when not the error's own, in an import of several). */
export interface ConfigProblem {
  line: number;
  column: number;
  message: string;
  file?: string;
}

export class ConfigError extends DvipaError {
  constructor(
    readonly file: string,
    readonly problems: ConfigProblem[],
  ) {
    super(problems.map((p) => `${p.file ?? file}:${p.line}:${p.column}: ${p.message}`).join('\n'), EXIT.usage);
  }
}

/** The prefix length of an IPv4 mask or an IPv6 prefix length (see VipaDefine); undefined if it is neither. */
export function maskBits(mask: string): number | undefined {
  if (/^\d{1,3}$/.test(mask)) return Number(mask) <= 128 ? Number(mask) : undefined;
  if (ipFamily(mask) !== 4) return undefined;
  const m = parseIpv4(mask);
  const bits = 32 - Math.log2((~m >>> 0) + 1);
  return Number.isInteger(bits) ? bits : undefined;
}

/** Whether `mask` fits `address`'s family: an IPv4 address mask, or an IPv6 prefix length. */
function maskProblem(address: string, mask: string): string | undefined {
  const bits = maskBits(mask);
  if (ipFamily(address) === 6)
    return bits !== undefined && /^\d+$/.test(mask) ? undefined : `${mask} is not an IPv6 prefix length (0 to 128)`;
  return bits !== undefined && !/^\d+$/.test(mask) ? undefined : `${mask} is not a contiguous address mask`;
}

/**
 * Whether the nodes of this configuration learn each other from their etcd member records
 * (CLUSTER ETCD), as z/OS stacks do through XCF: a per-node file then needs no PEER for the
 * cluster addresses it names. Without etcd, every one must be a NODE or a PEER.
 */
export function membersFromEtcd(cfg: Pick<ClusterConfig, 'coupling'>): boolean {
  return cfg.coupling !== undefined;
}

const UNDECLARED = '(list it as a PEER, or give CLUSTER ETCD so that nodes find each other)';

/** Cluster addresses the file names (DESTIP, VIPAROUTE) that no NODE or PEER declares: with etcd, members. */
export function undeclaredAddresses(cfg: ClusterConfig): string[] {
  const known = new Set([...cfg.nodes.map((n) => n.xcf), ...cfg.peers.map((p) => p.xcf)]);
  const named = cfg.nodes.flatMap((n) => [
    ...n.vipaDynamic.distribute.flatMap((d) => (d.destinations === 'all' ? [] : d.destinations.map((t) => t.xcf))),
    ...(n.vipaDynamic.route ?? []).map((r) => r.xcf),
  ]);
  return [...new Set(named.filter((x) => !known.has(x)))];
}

/**
 * What holds across statements and nodes. `at` gives each statement's position; problems
 * without one (the file as a whole) are reported at 1:1.
 */
export function validate(
  cfg: ClusterConfig,
  at: (node: number, what: string) => { line: number; column: number } = () => ({ line: 1, column: 1 }),
): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const add = (node: number, what: string, message: string) => problems.push({ ...at(node, what), message });
  const names = new Set<string>();
  const xcfs = new Set<string>();
  const known = new Set([...cfg.nodes, ...cfg.peers].flatMap(clusterAddresses));
  const holder = new Map([...cfg.nodes, ...cfg.peers].flatMap((x) => clusterAddresses(x).map((a) => [a, x.name])));
  const owner = new Map<string, string>();
  // z/OS: an IPv6 DVIPA's backups name the interface its VIPADEFINE names.
  const interfaces = new Map<string, { name: string; node: string }>();
  cfg.nodes.forEach((n, i) => {
    const v = n.vipaDynamic;
    for (const [what, d] of [
      ...v.define.map((d) => ['define', d] as const),
      ...v.backup.map((b) => ['backup', b] as const),
    ]) {
      if (d.interface === undefined) continue;
      const other = interfaces.get(d.address);
      if (other && other.name !== d.interface)
        add(
          i,
          `${what} ${d.address}`,
          `${d.address} is interface ${d.interface} on ${n.name} but ${other.name} on ${other.node}: ` +
            'every VIPADEFine and VIPABackup of an IPv6 DVIPA names the same interface',
        );
      else interfaces.set(d.address, { name: d.interface, node: n.name });
    }
  });
  cfg.nodes.forEach((n, i) => {
    for (const d of n.vipaDynamic.define) {
      const other = owner.get(d.address);
      if (other !== undefined && other !== n.name)
        add(
          i,
          `define ${d.address}`,
          `${d.address} is defined (VIPADEFine) on ${other} and ${n.name}: one node owns a DVIPA, the others back it up (VIPABackup)`,
        );
      owner.set(d.address, n.name);
    }
    for (const d of n.vipaDynamic.distribute) {
      if (d.destinations === 'all') continue;
      const named = new Map<string, string>();
      // With etcd the nodes find each other through their member records (membersFromEtcd).
      const fromEtcd = membersFromEtcd(cfg);
      for (const t of d.destinations) {
        if (!known.has(t.xcf) && !fromEtcd)
          add(
            i,
            `distribute ${d.address}`,
            `DESTIP ${t.xcf} is not the cluster address of any node or peer ${UNDECLARED}`,
          );
        const whose = holder.get(t.xcf);
        const other = whose && named.get(whose);
        if (other !== undefined && other !== t.xcf)
          add(i, `distribute ${d.address}`, `DESTIP ${other} and ${t.xcf} are both ${whose}'s: name a target once`);
        if (whose) named.set(whose, t.xcf);
      }
    }
    // Agents connect over a family both ends have.
    const families = (x: { xcf: string; xcf6?: string }) => new Set(clusterAddresses(x).map(ipFamily));
    for (const other of [...cfg.nodes.slice(i + 1), ...cfg.peers]) {
      if (!n.xcf || !other.xcf || [...families(n)].some((f) => families(other).has(f))) continue;
      add(i, 'node', `${n.name} (${n.xcf}) and ${other.name} (${other.xcf}) have no cluster address of one family`);
    }
  });
  cfg.nodes.forEach((n, i) => {
    if (names.has(n.name)) add(i, 'node', `node ${n.name} is defined twice`);
    for (const x of clusterAddresses(n)) {
      if (xcfs.has(x)) add(i, 'node', `cluster address ${x} is used by two nodes`);
      xcfs.add(x);
    }
    names.add(n.name);

    const v = n.vipaDynamic;
    const defined = new Set(v.define.map((d) => d.address));
    const backedUp = new Set(v.backup.map((b) => b.address));
    const seen = new Set<string>();
    const named = new Map<string, string>();
    for (const [what, d] of [
      ...v.define.map((d) => ['define', d] as const),
      ...v.backup.map((b) => ['backup', b] as const),
    ]) {
      if (d.interface === undefined) continue;
      const other = named.get(d.interface.toUpperCase());
      if (other !== undefined && other !== d.address)
        add(i, `${what} ${d.address}`, `interface ${d.interface} names both ${other} and ${d.address} on ${n.name}`);
      named.set(d.interface.toUpperCase(), d.address);
    }
    for (const d of v.define) {
      if (seen.has(d.address)) add(i, `define ${d.address}`, `${d.address} is defined twice on ${n.name}`);
      seen.add(d.address);
      const problem = maskProblem(d.address, d.mask);
      if (problem) add(i, `define ${d.address}`, problem);
    }
    for (const b of v.backup) {
      if (defined.has(b.address))
        add(
          i,
          `backup ${b.address}`,
          `${b.address} is both defined (VIPADEFine) and backed up (VIPABackup) on ${n.name}`,
        );
      if (seen.has(`backup ${b.address}`))
        add(i, `backup ${b.address}`, `${b.address} is backed up twice on ${n.name}`);
      seen.add(`backup ${b.address}`);
    }
    for (const r of v.range) {
      const problem = maskProblem(r.address, r.mask);
      if (problem) add(i, `range ${r.address}`, problem);
    }
    const routed = new Set<string>();
    for (const r of v.route ?? []) {
      const where = `route ${r.xcf}`;
      if (!known.has(r.xcf) && !membersFromEtcd(cfg))
        add(i, where, `VIPAROUTE ${r.xcf} is not the cluster address of any node or peer ${UNDECLARED}`);
      if (routed.has(r.xcf)) add(i, where, `VIPAROUTE ${r.xcf} is given twice on ${n.name}`);
      routed.add(r.xcf);
    }
    const distributed = new Set<string>();
    for (const d of v.distribute) {
      const where = `distribute ${d.address}`;
      if (!defined.has(d.address) && !backedUp.has(d.address)) {
        add(
          i,
          where,
          `VIPADISTribute ${d.address}: the DVIPA must be defined on ${n.name} by VIPADEFine or VIPABackup`,
        );
      }
      const ports = d.ports === 'all' ? ['all'] : d.ports.map((p) => `${p.from}-${p.to}`);
      for (const p of ports) {
        const key = `${d.address}:${p}`;
        if (distributed.has(key)) add(i, where, `${d.address} port ${p} is distributed twice on ${n.name}`);
        distributed.add(key);
      }
      if (d.method.name === 'hotstandby' && d.destinations !== 'all') {
        const preferred = d.destinations.filter((x) => x.role === 'preferred').length;
        if (preferred !== 1)
          add(i, where, `DISTMethod HOTSTANDBY needs exactly one PREFerred target, found ${preferred}`);
        if (d.destinations.some((x) => x.role === undefined))
          add(i, where, 'DISTMethod HOTSTANDBY: every DESTIP target needs PREFerred or BACKup rank');
      }
      if (d.method.name === 'hotstandby' && d.destinations === 'all')
        add(i, where, 'DISTMethod HOTSTANDBY needs an explicit DESTIP list');
    }
  });
  return problems;
}
