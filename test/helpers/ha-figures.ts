/*
 * The takeover figures the docs claim and the bounds the HA tests (test/ha.test.ts, the demo in
 * test/lab.test.ts) assert, in one place: the lab is the same, and so are the claims.
 */
/**
 * The takeover figures docs/ha.md states (the worst of its three runs) and the bounds asserted
 * here: the one place to update when the documented figures change. All are measured from the
 * failure (agent SIGKILL) by the client, except `acquiredMs` (the agent's log).
 */
export const DOCUMENTED = { acquiredMs: 961, firstNewConnectionMs: 977, allAnsweringMs: 1800 };
/** A loaded 2-core machine (seven engineers' suites, etcd, qemu) delays timers and etcd's lease checks. */
export const LOADED_MACHINE_MARGIN_MS = 1000;
/**
 * Long-lived connections recover at TCP's next retransmission after the takeover (RTO 0.2 s
 * doubling: 1.4 s, then 3.0 s after the failure): a takeover late by the margin crosses one step.
 */
export const ONE_BACKOFF_STEP_MS = 1600;
export const BOUND = {
  acquiredMs: DOCUMENTED.acquiredMs + LOADED_MACHINE_MARGIN_MS,
  firstNewConnectionMs: DOCUMENTED.firstNewConnectionMs + LOADED_MACHINE_MARGIN_MS,
  allAnsweringMs: DOCUMENTED.allAnsweringMs + ONE_BACKOFF_STEP_MS,
};
