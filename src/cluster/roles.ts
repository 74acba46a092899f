/*
 * Who does what for each DVIPA, from the configuration alone: the routing node (the one
 * VIPADEFine), the backups in takeover order (highest VIPABackup rank first, then name),
 * and the candidate targets of each distribution. A backup that has its own VIPADISTribute
 * for the DVIPA uses it after a takeover; otherwise it uses the routing node's.
 */
import type { ClusterConfig, NodeSpec, VipaDistribute } from '../config/model.js';

export interface DvipaPlan {
  address: string;
  /** Node name of the owner (VIPADEFine); undefined for a DVIPA only backed up (its owner is elsewhere). */
  routingNode?: string;
  backups: Array<{ node: string; rank: number }>;
  /** The owner's distribution (empty if it distributes nothing). */
  distribute: VipaDistribute[];
  /** Per backup with a distribution of its own. */
  backupDistribute: Map<string, VipaDistribute[]>;
}

export type Role = { kind: 'routing' } | { kind: 'backup'; rank: number; order: number } | { kind: 'target' };

/** Every DVIPA the configuration mentions, with its plan. */
export function planDvipas(cfg: ClusterConfig): Map<string, DvipaPlan> {
  const plans = new Map<string, DvipaPlan>();
  const plan = (address: string) => {
    let p = plans.get(address);
    if (!p) plans.set(address, (p = { address, backups: [], distribute: [], backupDistribute: new Map() }));
    return p;
  };
  for (const n of cfg.nodes) {
    const v = n.vipaDynamic;
    for (const d of v.define) plan(d.address).routingNode = n.name;
    for (const b of v.backup) plan(b.address).backups.push({ node: n.name, rank: b.rank });
  }
  for (const n of cfg.nodes) {
    for (const d of n.vipaDynamic.distribute) {
      const p = plan(d.address);
      if (p.routingNode === n.name) p.distribute.push(d);
      else p.backupDistribute.set(n.name, [...(p.backupDistribute.get(n.name) ?? []), d]);
    }
  }
  for (const p of plans.values()) p.backups.sort((a, b) => b.rank - a.rank || a.node.localeCompare(b.node));
  return plans;
}

/** Does `node` take connections of this distribution (DESTIP ALL, or its cluster address listed)? */
export function isTarget(d: VipaDistribute, node: NodeSpec): boolean {
  return d.destinations === 'all' || d.destinations.some((t) => t.xcf === node.xcf);
}

/** What `node` does for each DVIPA: a node can be a candidate target and a backup at once. */
export function rolesOf(cfg: ClusterConfig, nodeName: string): Map<string, Role[]> {
  const node = cfg.nodes.find((n) => n.name === nodeName);
  if (!node)
    throw new Error(`node ${nodeName} is not in the configuration (nodes: ${cfg.nodes.map((n) => n.name).join(', ')})`);
  const roles = new Map<string, Role[]>();
  for (const p of planDvipas(cfg).values()) {
    const mine: Role[] = [];
    if (p.routingNode === nodeName) mine.push({ kind: 'routing' });
    const order = p.backups.findIndex((b) => b.node === nodeName);
    if (order >= 0) mine.push({ kind: 'backup', rank: p.backups[order].rank, order: order + 1 });
    const lists = [p.distribute, ...p.backupDistribute.values()];
    if (lists.some((ds) => ds.some((d) => isTarget(d, node)))) mine.push({ kind: 'target' });
    if (mine.length) roles.set(p.address, mine);
  }
  return roles;
}
