/*
 * The targets' next hops follow the kernel: rtnetlink tells of every route, nexthop object,
 * neighbour, address, rule, link and forwarding change in the namespace, and each wakeup re-resolves
 * every target (FastPath.resolveTargets: one test run per target address, microseconds),
 * writing only what changed. No timer polls; a lost event (receive buffer overflow) is answered the same
 * way, by resolving everything again.
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

export class NexthopFollower {
  private events: EventSource | undefined;
  /** Wakeups handled, FIB questions asked (one per target address) and next hops rewritten. */
  readonly stats = { wakeups: 0, asked: 0, changed: 0 };

  constructor(
    private readonly fp: FastPath,
    private readonly log: Logger,
  ) {}

  /** Subscribes in the FastPath's namespace and resolves every target once. */
  start(): void {
    if (this.events) return;
    this.events = this.fp.inNamespace(() => openRouteEvents(Object.values(RTNL_GROUPS), (msgs) => this.onWakeup(msgs)));
    this.resolve();
  }

  stop(): void {
    this.events?.close();
    this.events = undefined;
  }

  private onWakeup(msgs: Array<{ error?: Error }>): void {
    for (const m of msgs) {
      if (m.error)
        this.log.warn({ err: m.error.message }, 'rtnetlink events: read failed; resolving every target again');
    }
    this.resolve();
  }

  private resolve(): void {
    this.stats.wakeups++;
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
