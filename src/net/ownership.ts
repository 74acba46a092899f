/*
 * Who owns a DVIPA, as the coupling facility records it, and how ownership was taken: the
 * cluster's election writes these and the IPsec role acts on them, so they sit below both.
 */

/** `epoch` grows with every change of owner: a record with an older epoch is stale (fencing). */
export interface OwnerRecord {
  node: string;
  rank: number;
  epoch: number;
}

/** Why a node takes a DVIPA: its owner is gone, it is the primary coming back, or a move was requested. */
export type Claim = 'takeover' | 'takeback' | 'move';
