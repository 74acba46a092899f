/*
 * What an agent shows of its state: the rows of `dvipa netstat vipadyn|vdpt|vcrt|ipsec`, the
 * same ones the control socket sends (control-protocol.ts), the lab reads and the metrics
 * export. Built here from the roles' state, so agent.ts only wires.
 */
import { CrtOrigin, type CrtEntry } from '../dataplane/structs.js';
import { protocolName, type Flow } from '../net/flow.js';
import type { OwnerRecord } from '../net/ownership.js';
import type { DvipaView } from './coupling.js';
import { PRIMARY_RANK } from './election.js';
import type { Role } from './roles.js';

// The IPsec role's rows are built in ipsec/ (below cluster/); they are shown with the others.
export type { IpsecDvipaRow, IpsecSaRow } from '../ipsec/ipsec-role.js';

export interface VipadynRow {
  dvipa: string;
  /** Active: routed here; Backup: a candidate, routed elsewhere; Moving: a move to or from here is pending; Quiescing: quiesced here, still routed here; Target: only a target here. */
  status: 'Active' | 'Backup' | 'Moving' | 'Quiescing' | 'Target';
  origin: 'VIPADEFine' | 'VIPABackup' | 'VIPA list';
  /** Dist: routes (or may route) it; Dest: a target of it; DistDest: both. */
  distStat: 'Dist' | 'Dest' | 'DistDest';
  rank?: number;
  epoch: number;
  owner?: string;
  since?: string;
  /** Why this node does not claim it although it would route it now (a takeback, a takeover or a move held back). */
  heldBack?: string;
}

/** One member as `dvipa netstat members` shows it. */
export interface MemberRow {
  node: string;
  /** Its cluster addresses, as its record gives them (a dual-stack node's IPv4 and IPv6 ones). */
  xcf: string[];
  port: number;
  /** Up: the transport to it is authenticated; Joined: a valid record, not (yet) connected. */
  state: 'Up' | 'Joined';
  since: string;
  key: string;
  version: number;
  dvipas: string[];
}

export interface CouplingState {
  shared: boolean;
  healthy: boolean;
  members: string[];
}

export interface VdptRow {
  dvipa: string;
  port: number;
  protocol: string;
  target: string;
  ready: boolean;
  weight: number;
  load?: number;
  activeConn: number;
  totalConn: number;
  /** What this node's data plane sent to the target for the service: packets, and their bytes from L2 on. */
  sent: { packets: bigint; bytes: bigint };
  method: string;
  owner: boolean;
  /** While continuing a previous owner's distribution: that node. */
  following?: string;
  service?: {
    packets: bigint;
    bytes: bigint;
    crtHit: bigint;
    crtNew: bigint;
    recovered: bigint;
    /** New flows hashed without a CRT entry: over the new-flow rate guard. */
    crtGuarded: bigint;
    forwarded: bigint;
    dropped: bigint;
  };
}

export interface VcrtRow {
  dvipa: string;
  port: number;
  protocol: string;
  client: string;
  clientPort: number;
  target: string;
  origin: 'syn' | 'recovered' | 'newconn';
  ageS: number;
}

export interface VcrtFilter {
  dvipa?: string;
  port?: number;
  client?: string;
  limit?: number;
}

export interface VcrtView {
  entries: VcrtRow[];
  total: number;
  truncated: boolean;
}

/** Rows shown when a VCRT request gives no limit. */
export const VCRT_DEFAULT_LIMIT = 10000;

const ORIGIN = {
  [CrtOrigin.First]: 'syn',
  [CrtOrigin.Recovered]: 'recovered',
  [CrtOrigin.Control]: 'newconn',
} as const;

/** The CRT entries the filter selects, at most `limit`, with how many matched. `nowNs`: CLOCK_MONOTONIC, as the entries are stamped. */
export function vcrtView(crt: Iterable<[Flow, CrtEntry]>, filter: VcrtFilter, nowNs: bigint): VcrtView {
  const limit = filter.limit ?? VCRT_DEFAULT_LIMIT;
  const entries: VcrtRow[] = [];
  let total = 0;
  for (const [k, v] of crt) {
    if (
      (filter.dvipa && k.daddr !== filter.dvipa) ||
      (filter.port && k.dport !== filter.port) ||
      (filter.client && k.saddr !== filter.client)
    )
      continue;
    total++;
    if (entries.length >= limit) continue;
    entries.push({
      dvipa: k.daddr,
      port: k.dport,
      protocol: protocolName(k.proto),
      client: k.saddr,
      clientPort: k.sport,
      target: v.target,
      origin: ORIGIN[v.origin] ?? 'newconn',
      ageS: v.createdNs ? Math.max(0, Math.round(Number(nowNs - v.createdNs) / 1e9)) : 0,
    });
  }
  return { entries, total, truncated: total > entries.length };
}

export interface VipadynInput {
  me: string;
  dvipa: string;
  roles: Role[];
  /** This node's ownership, if it owns the DVIPA. */
  owned?: OwnerRecord;
  /** What the coupling facility says about it. */
  view?: DvipaView;
  /** When this node last became its owner or stopped being it (ms since the epoch). */
  since?: number;
  heldBack?: string;
}

export function vipadynRow({ me, dvipa, roles: rs, owned, view, since, heldBack }: VipadynInput): VipadynRow {
  const routes = rs.some((r) => r.kind === 'routing' || r.kind === 'backup');
  const target = rs.some((r) => r.kind === 'target');
  const backup = rs.find((r) => r.kind === 'backup');
  let status: VipadynRow['status'] = !routes ? 'Target' : owned ? 'Active' : 'Backup';
  if (owned && view?.quiesced.has(me)) status = 'Quiescing';
  else if (view?.move && ((owned && view.move.to !== me) || (!owned && view.move.to === me))) status = 'Moving';
  return {
    dvipa,
    status,
    origin: rs.some((r) => r.kind === 'routing') ? 'VIPADEFine' : backup ? 'VIPABackup' : 'VIPA list',
    distStat: routes && target ? 'DistDest' : routes ? 'Dist' : 'Dest',
    ...(rs.some((r) => r.kind === 'routing')
      ? { rank: PRIMARY_RANK }
      : backup?.kind === 'backup'
        ? { rank: backup.rank }
        : {}),
    epoch: owned?.epoch ?? 0,
    ...(view?.owner ? { owner: view.owner.node } : owned ? { owner: me } : {}),
    ...(since ? { since: new Date(since).toISOString() } : {}),
    ...(heldBack ? { heldBack } : {}),
  };
}
