/*
 * The owner's heartbeat to the other candidate routing nodes of its DVIPAs, over the cluster
 * network: a second way, besides etcd, to prove that it may go on answering for a DVIPA.
 * Each candidate that acknowledges a HOLD promises not to take the DVIPA over for a claim
 * delay from when it received it (Election.promise); once every other candidate has
 * acknowledged the same HOLD, the owner's fence runs from when it sent it, as after a
 * renewal etcd confirmed. So an owner cut off from etcd but not from its peers (or etcd
 * down for everyone) keeps forwarding, and an owner cut off from both falls silent.
 */
import type { OwnerRecord } from '../net/ownership.js';
import { MsgType, type Hold, type Message } from './messages.js';

/** HOLDs remembered per DVIPA, waiting for acknowledgements: older ones no longer matter. */
const KEPT = 8;

interface Sent {
  epoch: number;
  sentNs: bigint;
  waiting: Set<string>;
}

export class Heartbeat {
  private seq = 0;
  /** DVIPA -> seq -> the HOLD sent and the candidates that have not acknowledged it. */
  private readonly sent = new Map<string, Map<number, Sent>>();

  constructor(
    /** The other candidate routing nodes of a DVIPA. */
    private readonly others: (dvipa: string) => string[],
    private readonly send: (peer: string, m: Message) => boolean,
    /** Every other candidate acknowledged a HOLD sent at `sentNs` under `epoch`. */
    private readonly confirmed: (dvipa: string, epoch: number, sentNs: bigint) => void,
  ) {}

  /** One HOLD per owned DVIPA to each other candidate; skipped where one of them cannot be reached. */
  beat(owned: Map<string, OwnerRecord>): void {
    for (const d of this.sent.keys()) if (!owned.has(d)) this.sent.delete(d);
    for (const [dvipa, rec] of owned) {
      const peers = this.others(dvipa);
      if (!peers.length) continue;
      const body: Hold = { address: dvipa, epoch: rec.epoch, seq: ++this.seq };
      const sentNs = process.hrtime.bigint();
      if (!peers.every((p) => this.send(p, { type: MsgType.Hold, body }))) continue;
      const mine = this.sent.get(dvipa) ?? new Map<number, Sent>();
      this.sent.set(dvipa, mine);
      mine.set(body.seq, { epoch: rec.epoch, sentNs, waiting: new Set(peers) });
      for (const k of [...mine.keys()].slice(0, Math.max(0, mine.size - KEPT))) mine.delete(k);
    }
  }

  /** A candidate's HOLDACK. */
  acked(peer: string, ack: Hold): void {
    const s = this.sent.get(ack.address)?.get(ack.seq);
    if (!s || s.epoch !== ack.epoch || !s.waiting.delete(peer) || s.waiting.size) return;
    this.sent.get(ack.address)!.delete(ack.seq);
    this.confirmed(ack.address, ack.epoch, s.sentNs);
  }
}
