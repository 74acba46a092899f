/*
 * What a peer may say about DVIPAs. Only a node that may route a DVIPA (it defines or
 * backs it up) sends a VIPA list or a DVIPA message about it, and a DVIPA message names
 * its sender as the owner. A peer known only by a PEER statement has no roles here: what
 * it names must be a DVIPA of this configuration or inside one of its VIPARANGEs. Where
 * A member found through etcd (members.ts), in a node whose file has no VIPARANGE to bound
 * it, may name what its signed member record says it defines or backs up. Where
 * the coupling facility is shared, a DVIPA message counts once etcd names the same owner
 * and epoch: until then it waits, so a forged or early message never releases an address.
 */
import { inPrefix6, ipFamily, parseIpv4, parseIpv6 } from '../net/addr.js';
import { maskBits, type ClusterConfig } from '../config/model.js';
import type { DvipaPlan } from './roles.js';
import type { DvipaChange, VipaList } from './messages.js';
import type { OwnerRecord } from '../net/ownership.js';

/** Refused, with the reason counted, and why. */
export interface Refusal {
  reason: 'not_routing' | 'outside_ranges' | 'not_owner';
  detail: string;
}

export class Admission {
  private readonly nodes: Set<string>;
  private readonly ranges: Array<{ base: number; mask: number }>;
  private readonly ranges6: Array<{ base: Buffer; bits: number }>;

  constructor(
    cfg: ClusterConfig,
    private readonly plans: ReadonlyMap<string, DvipaPlan>,
    /** The DVIPAs a member's checked record names (undefined: no such member). */
    private readonly memberDvipas: (peer: string) => readonly string[] | undefined = () => undefined,
  ) {
    this.nodes = new Set(cfg.nodes.map((n) => n.name));
    const ranges = cfg.nodes.flatMap((n) => n.vipaDynamic.range);
    this.ranges6 = ranges
      .filter((r) => ipFamily(r.address) === 6)
      .map((r) => ({ base: parseIpv6(r.address), bits: maskBits(r.mask) ?? 128 }));
    this.ranges = ranges
      .filter((r) => ipFamily(r.address) === 4)
      .map((r) => {
        const mask = maskBits(r.mask) === 0 ? 0 : parseIpv4(r.mask);
        return { base: (parseIpv4(r.address) & mask) >>> 0, mask };
      });
  }

  /** Whether `peer` may speak as a routing node of `dvipa`. */
  private refusal(peer: string, dvipa: string): Refusal | undefined {
    const plan = this.plans.get(dvipa);
    if (this.nodes.has(peer)) {
      if (plan && (plan.routingNode === peer || plan.backups.some((b) => b.node === peer))) return undefined;
      return { reason: 'not_routing', detail: `${peer} neither defines nor backs up ${dvipa}` };
    }
    if (plan || this.inRange(dvipa)) return undefined;
    if (!this.ranges.length && !this.ranges6.length && this.memberDvipas(peer)?.includes(dvipa)) return undefined;
    const detail = `${dvipa} is no DVIPA of this configuration and in none of its VIPARANGEs`;
    return { reason: 'outside_ranges', detail };
  }

  private inRange(dvipa: string): boolean {
    if (ipFamily(dvipa) === 6) {
      const a = parseIpv6(dvipa);
      return this.ranges6.some((r) => inPrefix6(a, r.base, r.bits));
    }
    const a = parseIpv4(dvipa);
    return this.ranges.some((r) => (a & r.mask) >>> 0 === r.base);
  }

  /** Undefined if the whole list is acceptable: one address out of bounds refuses it all. */
  vipaList(peer: string, list: VipaList): Refusal | undefined {
    for (const d of list.dvipas) {
      const r = this.refusal(peer, d.address);
      if (r) return r;
    }
    return undefined;
  }

  /**
   * 'accept', 'wait' (the shared store does not name this owner yet: ask again on its next
   * change), or a refusal. `owner`: the store's owner record, or undefined without a shared store.
   */
  dvipa(peer: string, change: DvipaChange, owner?: () => OwnerRecord | undefined): 'accept' | 'wait' | Refusal {
    if (change.owner !== peer) {
      return { reason: 'not_owner', detail: `${peer} announced ${change.owner} as the owner of ${change.address}` };
    }
    const r = this.refusal(peer, change.address);
    if (r) return r;
    if (!owner) return 'accept';
    const rec = owner();
    return rec?.node === peer && rec.epoch === change.epoch ? 'accept' : 'wait';
  }
}
