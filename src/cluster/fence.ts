/*
 * Fencing by epoch: what a routing node says about a DVIPA counts only if no newer owner of
 * it is known. An owner deposed while cut off keeps talking until it learns so; its words
 * carry its old epoch and are refused, counted and logged.
 */
export class EpochFence {
  private readonly owners = new Map<string, { owner: string; epoch: number }>();
  /** Messages refused because a newer owner of their DVIPA is known. */
  refused = 0;

  /** Accepts (and remembers) `owner` at `epoch`, or refuses it as stale. */
  admit(dvipa: string, owner: string, epoch: number): boolean {
    const known = this.owners.get(dvipa);
    if (known && (epoch < known.epoch || (epoch === known.epoch && owner !== known.owner))) {
      this.refused++;
      return false;
    }
    this.owners.set(dvipa, { owner, epoch });
    return true;
  }

  current(dvipa: string): { owner: string; epoch: number } | undefined {
    return this.owners.get(dvipa);
  }
}
