/*
 * The user-space mirror of bpf/dvipa.h. Keep the order of fields and enum members
 * identical to the C header; test/kernel/layout.test.ts compares both with the BTF.
 */
import { scalar, struct } from './codec.js';
import type { Flow } from '../net/flow.js';

/** A fencing deadline long past (DVIPA_FENCE_EXPIRED): the node answers no more for the DVIPA. */
export const FENCE_EXPIRED = 1n;
export const MAX_SERVICES = 1024;
export const CRT_DEFAULT_ENTRIES = 1 << 20;
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

export interface Svc {
  id: number;
  affinityS: number;
}
export const svc = struct<Svc>('dvipa_svc', [
  ['id', 'u32'],
  ['affinityS', 'u32'],
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

/** A service's target at its index, with the next hop the control plane resolved (ifindex 0: none). */
export interface TargetEntry {
  addr: string;
  svcId: number;
  ifindex: number;
  mtu: number;
  smac: string;
  dmac: string;
}
export const targetEntry = struct<TargetEntry>('dvipa_target', [
  ['addr', 'ipv4'],
  ['svcId', 'u32'],
  ['ifindex', 'u32'],
  ['mtu', 'u16'],
  ['smac', 'mac'],
  ['dmac', 'mac'],
  ['pad', { pad: 2 }],
]);

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

/** The frame of xdp_resolve: `nh` (a dvipa_target) follows at offset 8 (a _Static_assert in dvipa.h holds the layout). */
export const resolve = struct<{ addr: string; rc: number }>('dvipa_resolve', [
  ['addr', 'ipv4'],
  ['rc', 'u32'],
  ['nh', { pad: targetEntry.size }],
]);

export interface NodeConfig {
  clusterAddr: string;
  enabled: number;
  /** The distributor's external interface (0: none) and its MAC: frames to other MACs are not ours. */
  extIfindex: number;
  extMac: string;
}
export const nodeConfig = struct<NodeConfig>('dvipa_config', [
  ['clusterAddr', 'ipv4'],
  ['enabled', 'u32'],
  ['extIfindex', 'u32'],
  ['extMac', 'mac'],
  ['pad', { pad: 2 }],
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
]);

export const u32 = scalar('__u32', 'u32');
export const u64 = scalar('__u64', 'u64');
export const u8 = scalar('__u8', 'u8');
export const addr = scalar('__be32', 'ipv4');
