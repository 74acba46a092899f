/*
 * Katran (github.com/facebookincubator/katran) beside dvipa in `dvipa bench fastpath
 * --katran DIR`: its balancer built from a checkout the user supplies, inside the harness of
 * bpf/bench_harness.h (bpf/bench_katran.bpf.c), with its maps set up as KatranLb sets them
 * for one VIP. No Katran code is part of dvipa: DIR's files are compiled at run time
 * (katran-build.ts).
 */
import * as path from 'node:path';
import { DvipaError } from '../errors.js';
import { loadObject, type BpfObject } from '../kernel/object.js';
import { sys } from '../kernel/sys.js';
import { scalar, struct, type Struct } from '../dataplane/codec.js';
import { runXdp } from '../dataplane/testrun.js';
import { buildMaglevIndexed } from '../tables/maglev.js';
import { checksum } from '../net/checksum.js';
import { ETH_P_IP, PROTO } from '../net/packet.js';
import { formatIpv4, formatMac } from '../net/addr.js';
import type { KatranBuild } from './katran-build.js';

// Katran's structs (katran/lib/bpf/balancer_structs.h); an IPv4 address fills the first
// word of its 16-byte union. checkLayouts compares them with the built object's BTF.
export interface KatranFlow {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  proto: number;
}
const flowKey = struct<KatranFlow>('flow_key', [
  ['src', 'ipv4'],
  ['srcRest', { pad: 12 }],
  ['dst', 'ipv4'],
  ['dstRest', { pad: 12 }],
  ['sport', 'be16'],
  ['dport', 'be16'],
  ['proto', 'u8'],
]);
const realPosLru = struct<{ pos: number; atime: bigint }>('real_pos_lru', [
  ['pos', 'u32'],
  ['atime', 'u64'],
]);
const vipDefinition = struct<{ vip: string; port: number; proto: number }>('vip_definition', [
  ['vip', 'ipv4'],
  ['vipRest', { pad: 12 }],
  ['port', 'be16'],
  ['proto', 'u8'],
]);
const vipMeta = struct<{ flags: number; vipNum: number }>('vip_meta', [
  ['flags', 'u32'],
  ['vipNum', 'u32'],
]);
const realDefinition = struct<{ dst: string; flags: number }>('real_definition', [
  ['dst', 'ipv4'],
  ['dstRest', { pad: 12 }],
  ['flags', 'u8'],
]);
const ctlValue = struct<{ mac: string }>('ctl_value', [
  ['mac', 'mac'],
  ['macRest', { pad: 2 }],
]);
const lbStats = struct<{ v1: bigint; v2: bigint }>('lb_stats', [
  ['v1', 'u64'],
  ['v2', 'u64'],
]);
const u32 = scalar('__u32', 'u32');

const KATRAN_STRUCTS: Struct<unknown>[] = [
  flowKey,
  realPosLru,
  vipDefinition,
  vipMeta,
  realDefinition,
  ctlValue,
  lbStats,
];
const camel = (s: string) => s.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/**
 * Our codecs against the BTF of the object built from DIR: sizes, named members by name, and
 * for an anonymous union a codec field at its offset. A Katran whose structs changed fails
 * here instead of being fed wrong bytes.
 */
function checkLayouts(objectFile: string): void {
  for (const s of KATRAN_STRUCTS) {
    const btf = sys.btfStruct(objectFile, objectFile, s.cName);
    const problems: string[] = [];
    if (btf.size !== s.size) problems.push(`size ${btf.size}, ours ${s.size}`);
    for (const m of btf.members) {
      const ours = m.name
        ? s.fields.find((f) => f.name === camel(m.name))
        : s.fields.find((f) => f.offset === m.offset);
      if (!ours || ours.offset !== m.offset)
        problems.push(`member ${m.name || '(union)'} at ${m.offset}, ours ${ours ? `at ${ours.offset}` : 'missing'}`);
    }
    if (problems.length)
      throw new DvipaError(`Katran's struct ${s.cName} is not as dvipa expects: ${problems.join('; ')}`);
  }
}

// Katran's constants (katran/lib/bpf/balancer_consts.h) that the set-up depends on.
const RING_SIZE = 65537;
const MAX_VIPS = 512;
const LRU_CNTRS = 0;
const NEW_CONN_RATE_CNTR = 2;
const BPF_MAP_TYPE_LRU_HASH = 9;
const GUARD_KEY = u32.encode(MAX_VIPS + NEW_CONN_RATE_CNTR);
const LRU_KEY = u32.encode(MAX_VIPS + LRU_CNTRS);
/** New flows in the second as the engaged guard's count starts: over any MAX_CONN_RATE. */
const GUARD_ENGAGED = 1n << 40n;
const STATS_STRIDE = Math.ceil(lbStats.size / 8) * 8;

export interface KatranService {
  vip: string;
  port: number;
  /** Reals in order: real i + 1 (Katran's real ids start at 1). */
  reals: readonly string[];
  /** The default gateway's MAC: the outer frame's destination. */
  gatewayMac: string;
  /** Entries of each CPU's connection table. */
  lruEntries: number;
}

/** The loaded object with its maps filled as KatranLb fills them for one TCP VIP. */
export class KatranBench {
  readonly obj: BpfObject;
  private readonly cpus: number;
  private readonly lrus: number[] = [];

  constructor(build: KatranBuild, svc: KatranService) {
    const file = path.join(build.dir, 'bench_katran.bpf.o');
    checkLayouts(file);
    this.obj = loadObject('bench_katran', { dir: build.dir });
    this.cpus = sys.numPossibleCpus('stats');
    try {
      this.setUp(svc);
    } catch (e) {
      this.close();
      throw e;
    }
  }

  private setUp(svc: KatranService): void {
    const fd = (m: string) => this.obj.mapFd(m);
    sys.mapUpdate(
      'vip_map',
      fd('vip_map'),
      vipDefinition.encode({ vip: svc.vip, port: svc.port, proto: PROTO.tcp }),
      vipMeta.encode({ flags: 0, vipNum: 0 }),
    );
    svc.reals.forEach((dst, i) =>
      sys.mapUpdate('reals', fd('reals'), u32.encode(i + 1), realDefinition.encode({ dst, flags: 0 })),
    );
    // The VIP's consistent-hash ring (vip_num 0: its first RING_SIZE slots), real ids 1..n.
    const { slots, addrs } = buildMaglevIndexed(svc.reals.map((addr) => ({ addr, weight: 1 })));
    const keys = Buffer.alloc(RING_SIZE * 4);
    const values = Buffer.alloc(RING_SIZE * 4);
    for (let i = 0; i < RING_SIZE; i++) {
      keys.writeUInt32LE(i, i * 4);
      values.writeUInt32LE(svc.reals.indexOf(addrs[slots[i] - 1]) + 1, i * 4);
    }
    sys.mapUpdateBatch('ch_rings', fd('ch_rings'), keys, values, RING_SIZE, 0);
    sys.mapUpdate('ctl_array', fd('ctl_array'), u32.encode(0), ctlValue.encode({ mac: svc.gatewayMac }));
    // One connection table per CPU, as KatranLb makes one per forwarding core (flags 0).
    for (let cpu = 0; cpu < this.cpus; cpu++) {
      const lru = sys.mapCreate(
        'katran_lru',
        BPF_MAP_TYPE_LRU_HASH,
        'katran_lru',
        flowKey.size,
        realPosLru.size,
        svc.lruEntries,
        0,
      );
      this.lrus.push(lru);
      sys.mapUpdate('lru_mapping', fd('lru_mapping'), u32.encode(cpu), u32.encode(lru));
    }
  }

  /** An established connection: in every CPU's connection table, to real `real` (1-based). */
  established(flow: KatranFlow, real: number): void {
    const key = flowKey.encode(flow);
    const value = realPosLru.encode({ pos: real, atime: 0n });
    for (const lru of this.lrus) sys.mapUpdate('katran_lru', lru, key, value);
  }

  /** Whether CPU `cpu`'s connection table holds `flow`. */
  has(cpu: number, flow: KatranFlow): boolean {
    return sys.mapLookup('katran_lru', this.lrus[cpu], flowKey.encode(flow), Buffer.alloc(realPosLru.size));
  }

  /**
   * Katran's new-flow guard (is_under_flood) keeps its state in stats[MAX_VIPS +
   * NEW_CONN_RATE_CNTR] per CPU: v1 new flows in the second that started at v2 (ns,
   * CLOCK_MONOTONIC). Engaged: over any limit, in a second that started now; else cleared.
   */
  guard(engaged: boolean): void {
    const value = Buffer.alloc(STATS_STRIDE * this.cpus);
    const state = engaged ? { v1: GUARD_ENGAGED, v2: process.hrtime.bigint() } : { v1: 0n, v2: 0n };
    for (let c = 0; c < this.cpus; c++) lbStats.encode(state, value, c * STATS_STRIDE);
    sys.mapUpdate('stats', this.obj.mapFd('stats'), GUARD_KEY, value);
  }

  /** Whether the guard was engaged on every CPU through the runs since guard(true): no CPU's second ended. */
  guardHeld(): boolean {
    return this.stats(GUARD_KEY).every((s) => s.v1 >= GUARD_ENGAGED);
  }

  /** Connection-table misses so far, all CPUs (Katran counts them in stats[MAX_VIPS + LRU_CNTRS].v2). */
  lruMisses(): bigint {
    return this.stats(LRU_KEY).reduce((n, s) => n + s.v2, 0n);
  }

  private stats(key: Buffer): { v1: bigint; v2: bigint }[] {
    const value = Buffer.alloc(STATS_STRIDE * this.cpus);
    sys.mapLookup('stats', this.obj.mapFd('stats'), key, value);
    return Array.from({ length: this.cpus }, (_, c) => lbStats.decode(value, c * STATS_STRIDE));
  }

  close(): void {
    for (const lru of this.lrus.splice(0)) sys.closeFd('katran_lru', lru);
    this.obj.close();
  }
}

/**
 * Katran's own program (balancer_ingress, not the harness) on `frame` of an established
 * connection, once: it must find it in its connection table and return XDP_TX with the frame
 * in IPIP to `real`, the gateway's MAC as destination, an outer
 * header of 20 bytes with a valid checksum and the frame's IP packet intact behind it.
 */
export function checkKatranFrame(k: KatranBench, frame: Buffer, real: string, gatewayMac: string): void {
  const misses = k.lruMisses();
  const r = runXdp(k.obj.progFd('balancer_ingress'), 'balancer_ingress', frame);
  const out = r.frame;
  const outer = out.subarray(14, 34);
  const problems = [
    r.action !== 'tx' && `verdict ${r.action}, expected tx`,
    out.length !== frame.length + 20 && `length ${out.length}, expected ${frame.length + 20}`,
    formatMac(out.subarray(0, 6)) !== gatewayMac && `destination MAC ${formatMac(out.subarray(0, 6))}`,
    out.readUInt16BE(12) !== ETH_P_IP && `ethertype 0x${out.readUInt16BE(12).toString(16)}`,
    outer[0] !== 0x45 && `outer version/IHL 0x${outer[0]?.toString(16)}`,
    outer[9] !== PROTO.ipip && `outer protocol ${outer[9]}`,
    formatIpv4(outer.readUInt32BE(16)) !== real && `outer destination ${formatIpv4(outer.readUInt32BE(16))}`,
    outer.readUInt16BE(2) !== frame.length - 14 + 20 && `outer total length ${outer.readUInt16BE(2)}`,
    checksum(outer) !== 0 && 'outer header checksum',
    !out.subarray(34).equals(frame.subarray(14)) && 'inner packet changed',
    k.lruMisses() !== misses && 'not found in the connection table',
  ].filter((p): p is string => typeof p === 'string');
  if (problems.length) throw new DvipaError(`Katran's IPIP frame is wrong: ${problems.join('; ')}`);
}
