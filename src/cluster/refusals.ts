/*
 * What the agent refuses from its peers, counted by reason and logged at most once per
 * peer and reason per minute: a peer that repeats itself cannot flood the log.
 */
import type { Logger } from '../log.js';

const LOG_INTERVAL_MS = 60_000;

export class Refusals {
  readonly counts: Record<string, number> = {};
  private readonly lastLog = new Map<string, number>();

  constructor(
    private readonly logger: Logger,
    private readonly msg: string,
  ) {}

  add(who: string, reason: string, detail: string): void {
    this.counts[reason] = (this.counts[reason] ?? 0) + 1;
    this.once(who, reason, () => this.logger.warn({ peer: who, reason, detail, count: this.counts[reason] }, this.msg));
  }

  /** Runs `log` unless it ran for `who` and `reason` less than a minute ago. */
  once(who: string, reason: string, log: () => void): void {
    const k = `${who}|${reason}`;
    const now = Date.now();
    if ((this.lastLog.get(k) ?? -Infinity) + LOG_INTERVAL_MS <= now) {
      this.lastLog.set(k, now);
      log();
    }
  }
}
