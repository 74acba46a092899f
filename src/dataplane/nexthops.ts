/*
 * The targets' next hops follow the kernel: rtnetlink tells of every route, nexthop object,
 * neighbour, address, rule, link and forwarding change in the namespace, and a wakeup re-resolves
 * every target (FastPath.resolveTargets: one test run per target address, microseconds),
 * writing only what changed. No timer polls; a lost event (receive buffer overflow) is answered the same
 * way, by resolving everything again. Resolves are at most RESOLVE_MS apart: a routing daemon
 * loading or flapping a full table wakes the agent thousands of times a second, and each
 * wakeup within RESOLVE_MS of the last resolve joins the one then due.
 */
import { openRouteEvents, type EventSource } from '../kernel/events.js';
import type { FastPath } from './fastpath.js';
import type { Logger } from '../log.js';

/**
 * The rtnetlink groups followed (the kernel's RTNLGRP_x numbers, checked against its BTF in
 * the tests). NEXTHOP: routes through nexthop objects (`ip nexthop`, what FRR installs) change
 * with them, and a nexthop's removal takes its IPv4 routes away without a route event.
 */
export const RTNL_GROUPS = {
  LINK: 1,
  NEIGH: 3,
  IPV4_IFADDR: 5,
  IPV4_ROUTE: 7,
  IPV4_RULE: 8,
  IPV6_IFADDR: 9,
  IPV6_ROUTE: 11,
  IPV6_RULE: 19,
  IPV4_NETCONF: 24,
  IPV6_NETCONF: 25,
  NEXTHOP: 32,
} as const;

/** The least time between two resolves; a change waits at most this long beyond its event. */
export const RESOLVE_MS = 10;

export class NexthopFollower {
  private events: EventSource | undefined;
  /** A resolve due RESOLVE_MS after the last, for the wakeups since. */
  private due: NodeJS.Timeout | undefined;
  private lastResolve = -Infinity;
  /**
   * Wakeups handled, resolves of every target, FIB questions asked (one per target address),
   * next hops rewritten, and wakeups that found events lost (the kernel's ENOBUFS: the receive
   * buffer overflowed).
   */
  readonly stats = { wakeups: 0, resolves: 0, asked: 0, changed: 0, overflows: 0 };

  /** `rcvBuf`: the event socket's receive buffer (the addon's 4 MiB by default). */
  constructor(
    private readonly fp: FastPath,
    private readonly log: Logger,
    private readonly rcvBuf?: number,
  ) {}

  /** Subscribes in the FastPath's namespace and resolves every target once. */
  start(): void {
    if (this.events) return;
    this.events = this.fp.inNamespace(() =>
      openRouteEvents(Object.values(RTNL_GROUPS), (msgs) => this.onWakeup(msgs), this.rcvBuf),
    );
    this.resolve();
  }

  stop(): void {
    this.events?.close();
    this.events = undefined;
    clearTimeout(this.due);
    this.due = undefined;
  }

  private onWakeup(msgs: Array<{ error?: Error; overflow?: true }>): void {
    this.stats.wakeups++;
    for (const m of msgs) {
      if (m.error)
        this.log.warn({ err: m.error.message }, 'rtnetlink events: read failed; resolving every target again');
    }
    // Every resolve covers every target, so nothing lost stays lost: counted, once a wakeup.
    if (msgs.some((m) => m.overflow)) {
      this.stats.overflows++;
      this.log.warn(
        { overflows: this.stats.overflows },
        'rtnetlink events lost (receive buffer full); resolving every target again',
      );
    }
    if (this.due) return;
    const wait = this.lastResolve + RESOLVE_MS - performance.now();
    if (wait <= 0) this.resolve();
    else
      // stop() clears it: it never fires unsubscribed.
      this.due = setTimeout(() => {
        this.due = undefined;
        this.resolve();
      }, wait);
  }

  private resolve(): void {
    this.lastResolve = performance.now();
    this.stats.resolves++;
    try {
      const { changed, asked } = this.fp.resolveTargets();
      this.stats.changed += changed;
      this.stats.asked += asked;
    } catch (e) {
      // A failure here must not stop the agent: the data plane asks the FIB for unresolved targets.
      this.log.error({ err: (e as Error).message }, "resolving the targets' next hops failed");
    }
  }
}
