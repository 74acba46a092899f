/*
 * The takeover figures the docs claim and the bounds the HA tests (test/kernel/ha.test.ts, the
 * demo in test/kernel/lab.test.ts) assert, in one place: the lab is the same, and so are the claims.
 */
/**
 * The takeover figures docs/ha.md states (the worst of its runs) and the bounds asserted here:
 * the one place to update when the documented figures change. All are measured from the
 * failure (both links down) by the client, except `acquiredMs` (the agent's log).
 */
export const DOCUMENTED = { pingGapMs: 195, acquiredMs: 162, firstNewConnectionMs: 218, allAnsweringMs: 301 };
/** A loaded 2-core machine (seven engineers' suites, etcd, qemu) delays timers, threads and etcd. */
export const LOADED_MACHINE_MARGIN_MS = 1000;
/**
 * The client's longest ping gap gets a smaller margin: the lease-based takeover this replaced
 * left gaps of 1.1-1.3 s, and a bound above that would not tell the two apart. The renewal
 * path runs at raised priority (a thread at nice -20, nice -10 agents, etcd in real time),
 * so the load delays it by tens of milliseconds, not by a second.
 */
export const FAST_PATH_MARGIN_MS = 400;
/**
 * Long-lived connections recover at TCP's next retransmission after the takeover (RTO 0.2 s
 * doubling: 0.2, 0.6, 1.4 s after the failure): a takeover late by the margin crosses one step.
 */
export const ONE_BACKOFF_STEP_MS = 800;
export const BOUND = {
  pingGapMs: DOCUMENTED.pingGapMs + FAST_PATH_MARGIN_MS,
  acquiredMs: DOCUMENTED.acquiredMs + LOADED_MACHINE_MARGIN_MS,
  firstNewConnectionMs: DOCUMENTED.firstNewConnectionMs + LOADED_MACHINE_MARGIN_MS,
  allAnsweringMs: DOCUMENTED.allAnsweringMs + ONE_BACKOFF_STEP_MS,
};
