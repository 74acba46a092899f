/*
 * The YAML form of the cluster configuration: the model of model.ts written out, with a
 * few conveniences (a port as 80 or "8000-8010", a destination as its bare address, a
 * method as its bare name, PORT/DESTIP ALL as the word all or left out). Problems carry
 * the line and column of the offending YAML node.
 */
import { DEFAULTS, LIMITS } from './settings.js';
import { isMap, isSeq, LineCounter, parseDocument, stringify, type Node as YamlNode } from 'yaml';
import { canonicalIpv6, ipFamily, ipv4MappedProblem } from '../net/addr.js';
import {
  ConfigError,
  emptyVipaDynamic,
  isEtcdUrl,
  validate,
  type ClusterConfig,
  type ConfigProblem,
  type CouplingConfig,
  type IpsecConfig,
  type Destination,
  type DistMethod,
  type NodeSpec,
  type PortRange,
  type VipaDistribute,
  INTERFACE_NAME,
} from './model.js';
import { zosIpv4 } from './zos.js';

type Json = unknown;

class Reader {
  readonly problems: ConfigProblem[] = [];
  readonly places = new Map<string, { line: number; column: number }>();

  constructor(
    private readonly lines: LineCounter,
    private readonly root: YamlNode | null,
  ) {}

  /** Position of the YAML node at `path` (or of its nearest existing parent). */
  pos(path: Array<string | number>): { line: number; column: number } {
    let node: YamlNode | null | undefined = this.root;
    let best = node;
    for (const key of path) {
      node = isMap(node) || isSeq(node) ? node.get(key, true) : undefined;
      if (!node) break;
      best = node;
    }
    const offset = best?.range?.[0] ?? 0;
    const p = this.lines.linePos(offset);
    return { line: p.line, column: p.col };
  }

  bad(path: Array<string | number>, message: string, at = this.pos(path)): undefined {
    this.problems.push({ ...at, message: `${path.join('.') || '(top)'}: ${message}` });
    return undefined;
  }

  /** Where a mapping's key (not its value) stands. */
  private keyPos(path: Array<string | number>, key: string): { line: number; column: number } {
    let node: YamlNode | null | undefined = this.root;
    for (const k of path) node = isMap(node) || isSeq(node) ? node.get(k, true) : undefined;
    const pair = isMap(node) ? node.items.find((i) => (i.key as { value?: unknown } | null)?.value === key) : undefined;
    const offset = (pair?.key as YamlNode | undefined)?.range?.[0];
    if (offset === undefined) return this.pos([...path, key]);
    const p = this.lines.linePos(offset);
    return { line: p.line, column: p.col };
  }

  keys(v: Json, path: Array<string | number>, allowed: string[]): v is Record<string, Json> {
    if (typeof v !== 'object' || v === null || Array.isArray(v))
      return !!this.bad(path, `expected a mapping with ${allowed.join(', ')}`);
    for (const k of Object.keys(v)) {
      if (!allowed.includes(k))
        this.bad([...path, k], `unknown key (expected ${allowed.join(', ')})`, this.keyPos(path, k));
    }
    return true;
  }

  /** An IPv4 address (strict), or an IPv6 address where `ipv6`, written in RFC 5952 form. */
  address(v: Json, path: Array<string | number>, ipv6 = true): string | undefined {
    const family = typeof v === 'string' ? ipFamily(v) : undefined;
    const mapped = family === 6 ? ipv4MappedProblem(v as string) : undefined;
    if (mapped) return this.bad(path, mapped);
    if (family === 4 || (family === 6 && ipv6)) return family === 4 ? (v as string) : canonicalIpv6(v as string);
    const plain = typeof v === 'string' ? zosIpv4(v) : undefined;
    // The z/OS language reads leading zeros as decimal; YAML takes the plain form only.
    if (plain)
      return this.bad(path, `expected an IPv4 address without leading zeros: ${plain}, found ${JSON.stringify(v)}`);
    return this.bad(path, `expected an IPv4${ipv6 ? ' or IPv6' : ''} address, found ${JSON.stringify(v)}`);
  }

  /**
   * A DVIPA's address, mask and interface: an IPv4 address with an address mask, or an IPv6
   * address with its interface name and a prefix length (`prefix`: the default, or required).
   */
  dvipa(
    d: Record<string, Json>,
    p: Array<string | number>,
    prefix: '128' | 'required',
  ): { address: string; mask?: string; interface?: string } | undefined {
    const address = this.address(d.address, [...p, 'address']);
    if (!address) return undefined;
    if (ipFamily(address) === 4) {
      if (d.interface !== undefined) this.bad([...p, 'interface'], 'only for an IPv6 DVIPA (z/OS names its interface)');
      return { address, ...(d.mask === undefined ? {} : { mask: this.address(d.mask, [...p, 'mask'], false) }) };
    }
    const name =
      typeof d.interface === 'string' && INTERFACE_NAME.test(d.interface)
        ? d.interface
        : this.bad(
            [...p, 'interface'],
            "expected the IPv6 DVIPA's interface name (a letter first, at most 16 characters)",
          );
    let mask: string | undefined = prefix === 'required' ? undefined : prefix;
    if (d.mask === undefined && prefix === 'required') this.bad([...p, 'mask'], 'expected a prefix length (0 to 128)');
    else if (d.mask !== undefined) {
      const bits = this.int(d.mask, [...p, 'mask'], 0, 128);
      mask = bits === undefined ? undefined : String(bits);
    }
    return name && mask !== undefined ? { address, mask, interface: name } : undefined;
  }

  int(v: Json, path: Array<string | number>, min: number, max: number): number | undefined {
    if (typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max) return v;
    return this.bad(path, `expected an integer from ${min} to ${max}, found ${JSON.stringify(v)}`);
  }

  str(v: Json, path: Array<string | number>, what: string): string | undefined {
    return typeof v === 'string' && v.length > 0 ? v : this.bad(path, `expected ${what}`);
  }

  oneOf<T extends string>(v: Json, path: Array<string | number>, choices: readonly T[]): T | undefined {
    return choices.includes(v as T)
      ? (v as T)
      : this.bad(path, `expected one of ${choices.join(', ')}, found ${JSON.stringify(v)}`);
  }

  list(v: Json, path: Array<string | number>): Json[] {
    if (v === undefined) return [];
    if (Array.isArray(v)) return v;
    this.bad(path, 'expected a list');
    return [];
  }

  cluster(doc: Json): ClusterConfig {
    const cfg: ClusterConfig = { nodes: [], peers: [] };
    if (!this.keys(doc, [], ['keyFile', 'identities', 'coupling', 'ipsec', 'newFlowRate', 'nodes', 'peers']))
      return cfg;
    if (doc.keyFile !== undefined) cfg.keyFile = this.str(doc.keyFile, ['keyFile'], 'a key file path');
    if (doc.identities !== undefined)
      cfg.identities = this.str(doc.identities, ['identities'], 'a directory of node keys');
    if (doc.coupling !== undefined) cfg.coupling = this.coupling(doc.coupling);
    if (doc.ipsec !== undefined) cfg.ipsec = this.ipsec(doc.ipsec);
    if (doc.newFlowRate !== undefined)
      cfg.newFlowRate = this.int(doc.newFlowRate, ['newFlowRate'], ...LIMITS.newFlowRate);
    this.list(doc.peers, ['peers']).forEach((p, i) => {
      if (!this.keys(p, ['peers', i], ['name', 'xcf', 'xcf6'])) return;
      const name = this.str(p.name, ['peers', i, 'name'], 'a peer name');
      const peer = { name: name ?? '', ...this.clusterAddress(p, ['peers', i]) };
      if (name && peer.xcf) cfg.peers.push(peer);
    });
    const nodes = this.list(doc.nodes, ['nodes']);
    if (nodes.length === 0) this.bad(['nodes'], 'expected at least one node');
    nodes.forEach((n, i) => {
      this.places.set(`${i}|node`, this.pos(['nodes', i]));
      cfg.nodes.push(this.node(n, ['nodes', i], i));
    });
    return cfg;
  }

  coupling(c: Json): CouplingConfig | undefined {
    const at = ['coupling'];
    if (!this.keys(c, at, ['etcd', 'leaseTtl', 'nopreempt', 'takebackDelay'])) return undefined;
    const etcd = this.list(c.etcd, [...at, 'etcd']).map((u, i) =>
      typeof u === 'string' && isEtcdUrl(u)
        ? u
        : this.bad([...at, 'etcd', i], 'expected an etcd URL (http://host:port or https://host:port)'),
    );
    if (!etcd.length) this.bad([...at, 'etcd'], 'expected at least one etcd URL');
    const out: CouplingConfig = { etcd: etcd.filter((u): u is string => u !== undefined) };
    if (c.leaseTtl !== undefined) out.leaseTtl = this.int(c.leaseTtl, [...at, 'leaseTtl'], ...LIMITS.leaseTtl);
    if (c.nopreempt !== undefined)
      out.nopreempt =
        typeof c.nopreempt === 'boolean' ? c.nopreempt : this.bad([...at, 'nopreempt'], 'expected true or false');
    if (c.takebackDelay !== undefined)
      out.takebackDelay = this.int(c.takebackDelay, [...at, 'takebackDelay'], ...LIMITS.takebackDelay);
    return out;
  }

  /** `ipsec: {}` turns IPsec recovery on with the defaults. */
  ipsec(c: Json): IpsecConfig | undefined {
    if (c === null) return {};
    if (!this.keys(c, ['ipsec'], ['seqMargin', 'interval'])) return undefined;
    const out: IpsecConfig = {};
    if (c.seqMargin !== undefined) out.seqMargin = this.int(c.seqMargin, ['ipsec', 'seqMargin'], ...LIMITS.seqMargin);
    if (c.interval !== undefined) out.interval = this.int(c.interval, ['ipsec', 'interval'], ...LIMITS.recordInterval);
    return out;
  }

  /** `xcf` (IPv4, or IPv6 alone) and `xcf6` (the IPv6 one beside an IPv4 `xcf`). */
  clusterAddress(n: Record<string, Json>, at: Array<string | number>): { xcf: string; xcf6?: string } {
    const xcf = this.address(n.xcf, [...at, 'xcf']) ?? '';
    if (n.xcf6 === undefined) return { xcf };
    const xcf6 = this.address(n.xcf6, [...at, 'xcf6']);
    if (xcf6 !== undefined && ipFamily(xcf6) !== 6)
      this.bad([...at, 'xcf6'], `expected an IPv6 address, found ${xcf6}`);
    else if (xcf && ipFamily(xcf) !== 4)
      this.bad([...at, 'xcf6'], 'xcf6 goes beside an IPv4 xcf (an IPv6-only node gives its address as xcf)');
    return xcf6 === undefined ? { xcf } : { xcf, xcf6 };
  }

  node(n: Json, at: Array<string | number>, index: number): NodeSpec {
    const spec: NodeSpec = { name: '', xcf: '', internal: [], vipaDynamic: emptyVipaDynamic() };
    if (!this.keys(n, at, ['name', 'xcf', 'xcf6', 'external', 'internal', 'vipaDynamic'])) return spec;
    spec.name = this.str(n.name, [...at, 'name'], 'a node name') ?? '';
    Object.assign(spec, this.clusterAddress(n, at));
    if (n.external !== undefined) spec.external = this.str(n.external, [...at, 'external'], 'an interface name');
    this.list(n.internal, [...at, 'internal']).forEach((x, i) => {
      const name = this.str(x, [...at, 'internal', i], 'an interface name');
      if (name) spec.internal.push(name);
    });
    const vd = n.vipaDynamic ?? {};
    const vat = [...at, 'vipaDynamic'];
    if (!this.keys(vd, vat, ['define', 'backup', 'distribute', 'range', 'route'])) return spec;
    const v = spec.vipaDynamic;
    this.list(vd.define, [...vat, 'define']).forEach((d, i) => {
      const p = [...vat, 'define', i];
      if (!this.keys(d, p, ['address', 'mask', 'moveable', 'interface'])) return;
      const a = this.dvipa(d, p, '128');
      if (a && a.mask === undefined) this.bad([...p, 'mask'], 'expected an address mask');
      const moveable =
        d.moveable === undefined
          ? 'immediate'
          : this.oneOf(d.moveable, [...p, 'moveable'], ['immediate', 'whenidle', 'disruptive'] as const);
      if (a?.interface && moveable && moveable !== 'immediate')
        this.bad([...p, 'moveable'], 'an IPv6 DVIPA moves immediate only (z/OS)');
      if (a?.mask && moveable) {
        this.places.set(`${index}|define ${a.address}`, this.pos(p));
        v.define.push({ ...a, mask: a.mask, moveable });
      }
    });
    this.list(vd.backup, [...vat, 'backup']).forEach((b, i) => {
      const p = [...vat, 'backup', i];
      if (!this.keys(b, p, ['address', 'rank', 'moveable', 'mask', 'interface'])) return;
      const rank = b.rank === undefined ? DEFAULTS.rank : this.int(b.rank, [...p, 'rank'], ...LIMITS.rank);
      const moveable =
        b.moveable === undefined
          ? undefined
          : this.oneOf(b.moveable, [...p, 'moveable'], ['immediate', 'whenidle'] as const);
      // z/OS: an IPv6 backup gives a prefix length only with MOVEABLE IMMEDIATE.
      const a = this.dvipa(b, p, '128');
      if (a?.interface === undefined && (moveable === undefined) !== (a?.mask === undefined))
        this.bad(p, 'moveable and mask go together');
      if (a?.interface && moveable === undefined && b.mask !== undefined)
        this.bad([...p, 'mask'], 'an IPv6 backup gives a prefix length only with moveable: immediate (z/OS)');
      if (a?.interface && moveable !== undefined && moveable !== 'immediate')
        this.bad([...p, 'moveable'], 'an IPv6 DVIPA moves immediate only (z/OS)');
      if (a && rank) {
        this.places.set(`${index}|backup ${a.address}`, this.pos(p));
        const { mask, ...rest } = a;
        v.backup.push({ ...rest, rank, ...(moveable && mask ? { moveable, mask } : {}) });
      }
    });
    this.list(vd.distribute, [...vat, 'distribute']).forEach((d, i) => {
      const dist = this.distribute(d, [...vat, 'distribute', i]);
      if (dist) {
        this.places.set(`${index}|distribute ${dist.address}`, this.pos([...vat, 'distribute', i]));
        v.distribute.push(dist);
      }
    });
    this.list(vd.range, [...vat, 'range']).forEach((r, i) => {
      const p = [...vat, 'range', i];
      if (!this.keys(r, p, ['address', 'mask', 'moveable', 'interface'])) return;
      const a = this.dvipa(r, p, 'required');
      if (a && a.mask === undefined) this.bad([...p, 'mask'], 'expected an address mask');
      const moveable =
        r.moveable === undefined
          ? 'nondisruptive'
          : this.oneOf(r.moveable, [...p, 'moveable'], ['nondisruptive', 'disruptive'] as const);
      if (a?.interface && moveable === 'disruptive')
        this.bad([...p, 'moveable'], 'an IPv6 DVIPA moves nondisruptive only (z/OS)');
      if (a?.mask && moveable) {
        this.places.set(`${index}|range ${a.address}`, this.pos(p));
        v.range.push({ ...a, mask: a.mask, moveable });
      }
    });
    this.list(vd.route, [...vat, 'route']).forEach((r, i) => {
      const p = [...vat, 'route', i];
      if (!this.keys(r, p, ['xcf', 'via'])) return;
      const xcf = this.address(r.xcf, [...p, 'xcf']);
      const via = this.address(r.via, [...p, 'via']);
      if (!xcf || !via) return;
      this.places.set(`${index}|route ${xcf}`, this.pos(p));
      (v.route ??= []).push({ xcf, via });
    });
    return spec;
  }

  distribute(d: Json, p: Array<string | number>): VipaDistribute | undefined {
    if (!this.keys(d, p, ['address', 'ports', 'destinations', 'method', 'timedAffinity'])) return undefined;
    const address = this.address(d.address, [...p, 'address']);
    let ports: PortRange[] | 'all' = 'all';
    if (d.ports !== undefined && d.ports !== 'all') {
      ports = [];
      this.list(d.ports, [...p, 'ports']).forEach((x, i) => {
        const m = /^(\d+)(?:-(\d+))?$/.exec(String(x));
        const from = Number(m?.[1]);
        const to = Number(m?.[2] ?? m?.[1]);
        if (!m || from < 1 || to > 65535 || from > to)
          this.bad([...p, 'ports', i], `expected a port (1 to 65535) or "from-to", found ${JSON.stringify(x)}`);
        else (ports as PortRange[]).push({ from, to });
      });
    }
    let destinations: Destination[] | 'all' = 'all';
    if (d.destinations !== 'all') {
      destinations = [];
      const list = this.list(d.destinations, [...p, 'destinations']);
      if (list.length === 0) this.bad([...p, 'destinations'], 'expected all or a list of target cluster addresses');
      list.forEach((x, i) => {
        const at = [...p, 'destinations', i];
        const spec = typeof x === 'string' ? { xcf: x } : x;
        if (!this.keys(spec, at, ['xcf', 'weight', 'role', 'rank'])) return;
        const xcf = this.address(spec.xcf, [...at, 'xcf']);
        const dest: Destination = { xcf: xcf ?? '' };
        if (spec.weight !== undefined) dest.weight = this.int(spec.weight, [...at, 'weight'], ...LIMITS.weight);
        if (spec.role !== undefined)
          dest.role = this.oneOf(spec.role, [...at, 'role'], ['preferred', 'backup'] as const);
        if (spec.rank !== undefined) dest.rank = this.int(spec.rank, [...at, 'rank'], ...LIMITS.rank);
        if (xcf) (destinations as Destination[]).push(dest);
      });
    }
    const method = this.method(d.method ?? 'roundrobin', [...p, 'method']);
    const timedAffinity =
      d.timedAffinity === undefined
        ? DEFAULTS.timedAffinity
        : this.int(d.timedAffinity, [...p, 'timedAffinity'], ...LIMITS.timedAffinity);
    if (!address || !method || timedAffinity === undefined) return undefined;
    return { address, ports, destinations, method, timedAffinity };
  }

  method(m: Json, p: Array<string | number>): DistMethod | undefined {
    const names = ['roundrobin', 'weightedactive', 'serverwlm', 'basewlm', 'hotstandby'] as const;
    if (typeof m === 'string') {
      const name = this.oneOf(m, p, names);
      return name === 'hotstandby' ? { name, autoSwitchBack: true, healthSwitch: true } : name && { name };
    }
    const switches = ['autoSwitchBack', 'healthSwitch'] as const;
    if (!this.keys(m, p, ['name', ...switches])) return undefined;
    const name = this.oneOf(m.name, [...p, 'name'], names);
    if (name !== 'hotstandby') {
      for (const k of switches) if (m[k] !== undefined) this.bad([...p, k], 'only for hotstandby');
      return name && { name };
    }
    for (const k of switches) {
      if (m[k] !== undefined && typeof m[k] !== 'boolean') return this.bad([...p, k], 'expected true or false');
    }
    const on = (v: Json) => (v as boolean | undefined) ?? true;
    return { name, autoSwitchBack: on(m.autoSwitchBack), healthSwitch: on(m.healthSwitch) };
  }
}

export function parseYamlConfig(text: string, file = '<yaml>'): ClusterConfig {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  if (doc.errors.length) {
    throw new ConfigError(
      file,
      doc.errors.map((e) => {
        const p = lines.linePos(e.pos[0]);
        return { line: p.line, column: p.col, message: e.message.split('\n')[0] };
      }),
    );
  }
  const r = new Reader(lines, doc.contents);
  const cfg = r.cluster(doc.toJS());
  const problems = [
    ...r.problems,
    ...validate(cfg, (n, what) => r.places.get(`${n}|${what}`) ?? r.places.get(`${n}|node`) ?? { line: 1, column: 1 }),
  ];
  if (problems.length)
    throw new ConfigError(
      file,
      problems.sort((a, b) => a.line - b.line || a.column - b.column),
    );
  return cfg;
}

/** YAML writes an IPv6 DVIPA's prefix length as the number it is. */
function prefixAsNumber<T extends { mask?: string; interface?: string }>(d: T): T | Omit<T, 'mask'> {
  return d.interface === undefined || d.mask === undefined ? d : { ...d, mask: Number(d.mask) };
}

/** The YAML form of a configuration, in its shortest spelling. */
export function formatYamlConfig(cfg: ClusterConfig): string {
  const out: Record<string, Json> = {};
  if (cfg.keyFile) out.keyFile = cfg.keyFile;
  if (cfg.identities) out.identities = cfg.identities;
  if (cfg.coupling) out.coupling = { ...cfg.coupling };
  if (cfg.ipsec) out.ipsec = { ...cfg.ipsec };
  if (cfg.newFlowRate !== undefined) out.newFlowRate = cfg.newFlowRate;
  if (cfg.peers.length) out.peers = cfg.peers;
  out.nodes = cfg.nodes.map((n) => ({
    name: n.name,
    xcf: n.xcf,
    ...(n.xcf6 === undefined ? {} : { xcf6: n.xcf6 }),
    ...(n.external ? { external: n.external } : {}),
    ...(n.internal.length ? { internal: n.internal } : {}),
    vipaDynamic: {
      ...(n.vipaDynamic.define.length ? { define: n.vipaDynamic.define.map(prefixAsNumber) } : {}),
      ...(n.vipaDynamic.backup.length ? { backup: n.vipaDynamic.backup.map(prefixAsNumber) } : {}),
      ...(n.vipaDynamic.distribute.length
        ? {
            distribute: n.vipaDynamic.distribute.map((d) => ({
              address: d.address,
              ...(d.ports === 'all'
                ? {}
                : { ports: d.ports.map((r) => (r.from === r.to ? r.from : `${r.from}-${r.to}`)) }),
              destinations:
                d.destinations === 'all' ? 'all' : d.destinations.map((x) => (Object.keys(x).length === 1 ? x.xcf : x)),
              method: d.method.name === 'hotstandby' ? d.method : d.method.name,
              ...(d.timedAffinity ? { timedAffinity: d.timedAffinity } : {}),
            })),
          }
        : {}),
      ...(n.vipaDynamic.range.length ? { range: n.vipaDynamic.range.map(prefixAsNumber) } : {}),
      ...(n.vipaDynamic.route?.length ? { route: n.vipaDynamic.route } : {}),
    },
  }));
  return stringify(out);
}
