/*
 * The user-space mirror of bpf/dvipa.h. Keep the order of fields and enum members
 * identical to the C header; test/kernel/layout.test.ts compares both with the BTF.
 */
import { scalar, struct, type Struct } from './codec.js';
import { ipFamily, parseIpv4, parseIpv6 } from '../net/addr.js';
import type { Flow } from '../net/flow.js';
import type { CrtKey } from '../tables/crt-hash.js';

/** A fencing deadline long past (DVIPA_FENCE_EXPIRED): the node answers no more for the DVIPA. */
export const FENCE_EXPIRED = 1n;
/** Set in a fencing deadline (DVIPA_FENCE_DRAIN): handed over, ARP no more, traffic until the deadline. */
export const FENCE_DRAIN = 1n << 63n;
export const MAX_SERVICES = 1024;
export const CRT_DEFAULT_ENTRIES = 1 << 20;
export const CRT6_DEFAULT_ENTRIES = 1 << 18;
/** AF_INET6 in dvipa_target.family. */
const AF_INET = 2;
const AF_INET6 = 10;
export const MAX_TARGETS = 16384;

export interface SvcKey {
  vip: string;
  port: number;
  proto: number;
}
export const svcKey = struct<SvcKey>('dvipa_svc_key', [
  ['vip', 'ipv4'],
  ['port', 'be16'],
  ['proto', 'u8'],
  ['pad', { pad: 1 }],
]);

/** IPv6 services (map services6; decap_services6, served_stats6): as SvcKey, `vip` an IPv6 address. */
export const svc6Key = struct<SvcKey>('dvipa_svc6_key', [
  ['vip', 'ipv6'],
  ['port', 'be16'],
  ['proto', 'u8'],
  ['pad', { pad: 1 }],
]);

/** dvipa_svc.flags: some targets are IPv6 (IPv4 flows to them keep their CRT entries in crt6). */
export const SVC_V6_TARGETS = 1;
/** dvipa_svc.flags: the DVIPA has no fencing deadline, its packets skip the lookup (FastPath.setFence keeps it so). */
export const SVC_UNFENCED = 2;

export interface Svc {
  id: number;
  affinityS: number;
  flags: number;
}
export const svc = struct<Svc>('dvipa_svc', [
  ['id', 'u32'],
  ['affinityS', 'u32'],
  ['flags', 'u32'],
]);

export interface AffinityKey {
  svcId: number;
  client: string;
}
export const affinityKey = struct<AffinityKey>('dvipa_affinity_key', [
  ['svcId', 'u32'],
  ['client', 'ipv4'],
]);
export interface Affinity {
  target: string;
  targetIdx: number;
  lastNs: bigint;
}
export const affinity = struct<Affinity>('dvipa_affinity', [
  ['target', 'ipv4'],
  ['targetIdx', 'u32'],
  ['lastNs', 'u64'],
]);

/** TIMEDAFFINITY of IPv6 clients (map affinity6); `target` of either family. */
export const affinity6Key = struct<AffinityKey>('dvipa_affinity6_key', [
  ['svcId', 'u32'],
  ['client', 'ipv6'],
]);
export const affinity6 = struct<Affinity>('dvipa_affinity6', [
  ['target', 'ip'],
  ['targetIdx', 'u32'],
  ['pad', { pad: 4 }],
  ['lastNs', 'u64'],
]);

/**
 * A connection in crt6: an IPv6 one, or an IPv4 one to an IPv6 target (IPv4-mapped in the
 * map, dotted here: see DVIPA_SVC_V6_TARGETS).
 */
export const flow6 = struct<Flow>('dvipa_flow6', [
  ['saddr', 'ip'],
  ['daddr', 'ip'],
  ['sport', 'be16'],
  ['dport', 'be16'],
  ['proto', 'u8'],
  ['pad', { pad: 3 }],
]);

export const flow = struct<Flow>('dvipa_flow', [
  ['saddr', 'ipv4'],
  ['daddr', 'ipv4'],
  ['sport', 'be16'],
  ['dport', 'be16'],
  ['proto', 'u8'],
  ['pad', { pad: 3 }],
]);

export enum CrtOrigin {
  First = 1,
  Recovered = 2,
  Control = 3,
}

/** `targetIdx`: the target's index in `targets` (0: unknown, the data plane looks its next hop up by address). */
export interface CrtEntry {
  target: string;
  svcId: number;
  origin: CrtOrigin;
  targetIdx: number;
  createdNs: bigint;
}
export const crtEntry = struct<CrtEntry>('dvipa_crt_entry', [
  ['target', 'ipv4'],
  ['svcId', 'u32'],
  ['origin', 'u8'],
  ['pad', { pad: 1 }],
  ['targetIdx', 'u16'],
  ['pad2', { pad: 4 }],
  ['createdNs', 'u64'],
]);

/**
 * One slot of the IPv4 CRT's cache of unconfirmed flows (map `crt`, a set of CRT_WAYS of them
 * per array value; bpf/dvipa.h). Read and written only through FlowCache (flow-cache.ts).
 */
export interface CrtSlot extends Flow, Omit<CrtEntry, 'createdNs'> {
  seq: number;
  ref: number;
  /** Way 0's: where the set's next insert starts looking (bpf/distributor.h crt_insert). */
  hand: number;
  createdS: number;
}
export const CRT_WAYS = 4;
export const crtSlot = struct<CrtSlot>('dvipa_crt_slot', [
  ['seq', 'u32'],
  ['saddr', 'ipv4'],
  ['daddr', 'ipv4'],
  ['sport', 'be16'],
  ['dport', 'be16'],
  ['proto', 'u8'],
  ['origin', 'u8'],
  ['targetIdx', 'u16'],
  ['target', 'ipv4'],
  ['svcId', 'u16'],
  ['ref', 'u8'],
  ['hand', 'u8'],
  ['createdS', 'u32'],
]);

/** The secret placing flows in the cache's sets (map crt_key; FlowCache writes it). */
export const crtKey = struct<CrtKey>('dvipa_crt_key', [
  ['saddrMul', 'u32'],
  ['daddrMul', 'u32'],
  ['portsMul', 'u32'],
  ['salt', 'u32'],
]);

/** An IPv6 connection's CRT entry (map crt6): as CrtEntry, `target` of either family. */
export const crt6Entry = struct<CrtEntry>('dvipa_crt6_entry', [
  ['target', 'ip'],
  ['svcId', 'u32'],
  ['origin', 'u8'],
  ['pad', { pad: 1 }],
  ['targetIdx', 'u16'],
  ['createdNs', 'u64'],
]);

/**
 * A service's target at its index, with the next hop the control plane resolved (ifindex
 * 0: none). `addr` of either family; '0.0.0.0' marks a free index.
 */
export interface TargetEntry {
  addr: string;
  svcId: number;
  ifindex: number;
  mtu: number;
  smac: string;
  dmac: string;
  /** VIPAROUTE: the outer destination and the next hop's address ('0.0.0.0': none, `addr`). */
  via: string;
}
interface RawTarget extends Omit<TargetEntry, 'addr'> {
  addr: string;
  family: number;
  addr6: string;
}
const rawTarget = struct<RawTarget>('dvipa_target', [
  ['addr', 'ipv4'],
  ['svcId', 'u32'],
  ['ifindex', 'u32'],
  ['mtu', 'u16'],
  ['smac', 'mac'],
  ['dmac', 'mac'],
  ['family', 'u8'],
  ['pad', { pad: 1 }],
  ['via', 'ipv4'],
  ['addr6', 'ipv6'],
]);
/** dvipa_target with one address field: an IPv6 target goes to addr6 with family AF_INET6. */
export const targetEntry: Struct<TargetEntry> = {
  cName: rawTarget.cName,
  size: rawTarget.size,
  fields: rawTarget.fields,
  encode(t, into, offset) {
    const v6 = ipFamily(t.addr) === 6;
    return rawTarget.encode(
      {
        ...t,
        addr: v6 ? '0.0.0.0' : t.addr,
        family: v6 ? AF_INET6 : AF_INET,
        addr6: v6 ? t.addr : '::',
      },
      into,
      offset,
    );
  },
  decode(buf, offset) {
    const { family, addr6, addr, ...rest } = rawTarget.decode(buf, offset);
    return { ...rest, addr: family === AF_INET6 ? addr6 : addr };
  },
};

export interface TargetStats {
  conns: bigint;
  packets: bigint;
  bytes: bigint;
}
export const targetStats = struct<TargetStats>('dvipa_target_stats', [
  ['conns', 'u64'],
  ['packets', 'u64'],
  ['bytes', 'u64'],
]);

/** BPF_FIB_LKUP_RET_* codes of bpf_fib_lookup (uapi linux/bpf.h). */
export const FIB_RESULTS = [
  'success',
  'blackhole',
  'unreachable',
  'prohibit',
  'not_fwded',
  'fwd_disabled',
  'unsupp_lwt',
  'no_neigh',
  'frag_needed',
  'no_src_addr',
] as const;

/**
 * The frame of xdp_resolve: rc, then `nh` (a dvipa_target: the target in, its next hop
 * out) at RESOLVE_NH (a _Static_assert in dvipa.h holds the layout).
 */
export const RESOLVE_NH = 4;
export const resolve = struct<{ rc: number }>('dvipa_resolve', [
  ['rc', 'u32'],
  ['nh', { pad: targetEntry.size }],
]);

export interface NodeConfig {
  clusterAddr: string;
  enabled: number;
  /** The distributor's external interface (0: none) and its MAC: frames to other MACs are not ours. */
  extIfindex: number;
  extMac: string;
  /** DVIPAs with an every-port service, as a filter of their anyPortBit()s (dvipa_config.any_port). */
  anyPort: number;
  /** The outer source towards IPv6 targets ('::': none, IPv6 targets are unreachable). */
  clusterAddr6: string;
  /** The new-flow rate guard: new flows per second per CPU that get a CRT entry (0: no guard). */
  maxNewFlows: number;
  /** The sets of the map `crt` (0: the data plane inserts nothing). */
  crtSets: number;
}

/**
 * An address's bit in dvipa_config.any_port, as bpf/dvipa.h's any_port_bit() computes it: of
 * the address's 32-bit words as the data plane loads them (little-endian loads of network-order
 * bytes), IPv6's four XORed together.
 */
export function anyPortBit(ip: string): number {
  let word = 0;
  if (ipFamily(ip) === 6) {
    const b = parseIpv6(ip);
    for (let i = 0; i < 16; i += 4) word ^= b.readUInt32LE(i);
  } else {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(parseIpv4(ip));
    word = b.readUInt32LE(0);
  }
  return 1 << (Math.imul(word, 0x9e3779b1) >>> 28);
}
export const nodeConfig = struct<NodeConfig>('dvipa_config', [
  ['clusterAddr', 'ipv4'],
  ['enabled', 'u32'],
  ['extIfindex', 'u32'],
  ['extMac', 'mac'],
  ['anyPort', 'u16'],
  ['clusterAddr6', 'ipv6'],
  ['maxNewFlows', 'u32'],
  ['crtSets', 'u32'],
]);

/** Per CPU: the new-flow rate guard's window (map `flow_rate`). */
export const flowRate = struct<{ windowNs: bigint; count: bigint }>('dvipa_flow_rate', [
  ['windowNs', 'u64'],
  ['count', 'u64'],
]);

/** Verdict reasons, in the order of enum dvipa_reason. */
export const REASONS = [
  'pass_not_ipv4',
  'pass_not_service',
  'pass_malformed',
  'pass_disabled',
  'drop_malformed_l4',
  'drop_fragment',
  'drop_no_target',
  'drop_no_route',
  'drop_no_neigh',
  'drop_fwd_disabled',
  'drop_no_egress',
  'drop_too_big',
  'drop_encap',
  'tx_frag_needed',
  'fwd_tx',
  'fwd_redirect',
  'decap',
  'decap_pass_not_ours',
  'decap_pass_malformed',
  'pass_other_host',
  'pass_local_target',
  'drop_fenced_arp',
  'drop_fenced',
  'decap_drop_not_router',
  'decap_drop_not_service',
  'pass_fragment6',
  'tx_pkt_too_big',
] as const;
export type Reason = (typeof REASONS)[number];

export interface SvcStats {
  packets: bigint;
  bytes: bigint;
  crtHit: bigint;
  crtMiss: bigint;
  crtNew: bigint;
  recovered: bigint;
  forwarded: bigint;
  dropped: bigint;
  fragNeeded: bigint;
  /** New flows forwarded by hash without a CRT entry: over the new-flow rate guard. */
  crtGuarded: bigint;
}
export interface ServedStats {
  packets: bigint;
  bytes: bigint;
}
export const servedStats = struct<ServedStats>('dvipa_served_stats', [
  ['packets', 'u64'],
  ['bytes', 'u64'],
]);

export const svcStats = struct<SvcStats>('dvipa_svc_stats', [
  ['packets', 'u64'],
  ['bytes', 'u64'],
  ['crtHit', 'u64'],
  ['crtMiss', 'u64'],
  ['crtNew', 'u64'],
  ['recovered', 'u64'],
  ['forwarded', 'u64'],
  ['dropped', 'u64'],
  ['fragNeeded', 'u64'],
  ['crtGuarded', 'u64'],
]);

export const u32 = scalar('__u32', 'u32');
export const u64 = scalar('__u64', 'u64');
export const u8 = scalar('__u8', 'u8');
export const addr = scalar('__be32', 'ipv4');
export const addr6 = scalar('dvipa_in6', 'ipv6');
