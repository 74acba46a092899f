/*
 * A routing node for BPF_PROG_TEST_RUN tests (testrun.test.ts, testrun6.test.ts): the
 * router namespace of src/lab/router-ns.ts with its targets' routes and neighbours, the
 * data plane opened on scratch pins with egress enabled on the internal interface, and a
 * `run` that sends one frame in from the external interface and tells the verdict and why.
 */
import assert from 'node:assert/strict';
import { FastPath } from '../../src/dataplane/fastpath.js';
import type { BpfMap } from '../../src/dataplane/map.js';
import { CrtOrigin, type CrtEntry, type Reason } from '../../src/dataplane/structs.js';
import type { Flow } from '../../src/net/flow.js';
import { runCounted, type XdpAction } from '../../src/dataplane/testrun.js';
import { createRouterNs, type RouterNs } from '../../src/lab/router-ns.js';
import { netnsPath } from '../../src/lab/netns.js';
import { scratchPinRoot, uniquePrefix } from './env.js';

export interface Result {
  action: XdpAction;
  frame: Buffer;
  reason: Reason;
}

export interface RoutingNode {
  rns: RouterNs;
  fp: FastPath;
  /** The external interface's index: where test frames come in. */
  ext0: number;
  /** One frame through a program of `on` (default: this node's data plane), in the node's namespace. */
  run(frame: Buffer, prog?: 'distributor' | 'decap', on?: FastPath): Result;
  /** Removes the pins and the namespace; safe after a partial setup. */
  close(): void;
}

export function openRoutingNode(
  tag: string,
  opts: { targets: readonly string[]; targets6?: readonly string[]; crtMaxEntries: number; clusterAddr6?: string },
): RoutingNode {
  const rns = createRouterNs(uniquePrefix(tag), opts.targets, opts.targets6);
  let pins: ReturnType<typeof scratchPinRoot> | undefined;
  let fp: FastPath | undefined;
  const close = () => {
    fp?.close();
    pins?.remove();
    rns.teardown();
  };
  try {
    const ext0 = rns.ifindex('ext0');
    pins = scratchPinRoot(tag);
    const opened = FastPath.open({
      pinRoot: pins.pinRoot,
      crtMaxEntries: opts.crtMaxEntries,
      netnsPath: netnsPath(rns.ns),
    });
    fp = opened;
    opened.configure({
      clusterAddr: rns.clusterAddr,
      ...(opts.clusterAddr6 === undefined ? {} : { clusterAddr6: opts.clusterAddr6 }),
    });
    rns.inside(() => opened.enableEgress('int0'));
    const run = (frame: Buffer, prog: 'distributor' | 'decap' = 'distributor', on: FastPath = opened): Result => {
      const r = rns.inside(() =>
        runCounted(on.progFd(prog), prog, frame, () => on.reasonCounts(), { ingressIfindex: ext0 }),
      );
      return { action: r.action, frame: r.frame, reason: r.reason };
    };
    return { rns, fp: opened, ext0, run, close };
  } catch (e) {
    close();
    throw e;
  }
}

/**
 * A UDP flow is never a confirmed connection, in either family: its datagram does not look in
 * the confirmed table (`est`), so an entry written there behind confirm's back, to another of
 * `targets` than the one it hashes to, does not move it (`send` returns where it went); the
 * table of unconfirmed flows (`lru`) holds it, and confirm writes none.
 */
export function assertUdpNeverConfirmed(o: {
  fp: FastPath;
  flow: Flow;
  svcId: number;
  hashed: string;
  targets: readonly string[];
  est: BpfMap<Flow, CrtEntry>;
  lru: Pick<BpfMap<Flow, CrtEntry>, 'get'>;
  send: () => string;
}): void {
  const other = o.targets.find((t) => t !== o.hashed)!;
  const entry = {
    target: other,
    svcId: o.svcId,
    origin: CrtOrigin.Control,
    targetIdx: o.fp.targetIndexOf(o.svcId, other),
    createdNs: 0n,
  };
  o.est.set(o.flow, entry);
  try {
    assert.equal(o.send(), o.hashed, `the datagram looked in ${o.est.name}`);
    assert.equal(o.lru.get(o.flow)!.target, o.hashed, 'the unconfirmed table holds the flow');
  } finally {
    o.est.delete(o.flow);
  }
  assert.deepEqual(o.fp.confirm([[o.flow, entry]]), []);
  assert.equal(o.est.get(o.flow), undefined, `confirm wrote no UDP flow to ${o.est.name}`);
  assert.equal(o.lru.get(o.flow)!.target, o.hashed, 'and left it among the unconfirmed');
}
