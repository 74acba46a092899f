/*
 * A voluntary handover (takeback, move) replaces a living owner, which holds the address, and
 * so has its stack answer ARP for it, until it sees the change in etcd: a moment after the new
 * owner's claim succeeded, tens of milliseconds on a busy node. The new owner takes the
 * address only once the previous owner says it let it go (RELEASED), or once the previous
 * owner's fence has surely run out, whichever comes first; meanwhile the previous owner's data
 * plane goes on forwarding what clients still send it. So no ARP request is answered by both
 * (docs/ha.md).
 */
import type { Released } from './messages.js';

export type HandoffEnd = 'released' | 'fence';

interface Waiting {
  from: string;
  epoch: number;
  end: (how: HandoffEnd) => void;
}

export class Handoffs {
  /** The last RELEASED from each peer, by DVIPA: it may come before the claim's own answer. */
  private readonly released = new Map<string, { from: string; epoch: number }>();
  private readonly waiting = new Map<string, Waiting>();

  /**
   * Resolves once `from` has released `dvipa` to this node's ownership under `epoch`, or after
   * `fenceMs`: `from`'s last renewal that etcd confirmed left before this node's claim was
   * answered, so its fence has run out by then (and its data plane drops ARP requests).
   */
  wait(dvipa: string, from: string, epoch: number, fenceMs: number): Promise<HandoffEnd> {
    const r = this.released.get(dvipa);
    if (r?.from === from && r.epoch === epoch) return Promise.resolve('released');
    return new Promise((resolve) => {
      const timer = setTimeout(() => end('fence'), fenceMs);
      const end = (how: HandoffEnd) => {
        clearTimeout(timer);
        if (this.waiting.get(dvipa) === w) this.waiting.delete(dvipa);
        resolve(how);
      };
      const w: Waiting = { from, epoch, end };
      this.waiting.set(dvipa, w);
    });
  }

  /** A peer's RELEASED (for a DVIPA this node may route: the caller checks). */
  onReleased(peer: string, m: Released): void {
    this.released.set(m.address, { from: peer, epoch: m.epoch });
    const w = this.waiting.get(m.address);
    if (w?.from === peer && w.epoch === m.epoch) w.end('released');
  }
}
