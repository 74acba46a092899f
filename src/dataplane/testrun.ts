/*
 * BPF_PROG_TEST_RUN for XDP programs: the kernel runs the real program on a frame we hand
 * it, with real maps and (given an ingress interface) real FIB lookups in the calling
 * thread's network namespace. Used by `fastpath replay`, the benchmark and the tests.
 */
import { sys } from '../kernel/sys.js';
import { struct } from './codec.js';
import { REASONS, type Reason } from './structs.js';

export const XDP_ACTIONS = ['aborted', 'drop', 'pass', 'tx', 'redirect'] as const;
export type XdpAction = (typeof XDP_ACTIONS)[number];

/** struct xdp_md, the context handed to the program (uapi linux/bpf.h). */
export const xdpMd = struct<{
  data: number;
  dataEnd: number;
  dataMeta: number;
  ingressIfindex: number;
  rxQueueIndex: number;
  egressIfindex: number;
}>('xdp_md', [
  ['data', 'u32'],
  ['dataEnd', 'u32'],
  ['dataMeta', 'u32'],
  ['ingressIfindex', 'u32'],
  ['rxQueueIndex', 'u32'],
  ['egressIfindex', 'u32'],
]);

export interface XdpRun {
  action: XdpAction;
  /** The frame as the program left it. */
  frame: Buffer;
  /** Kernel-measured time per repetition. */
  durationNs: number;
}

export interface RunOptions {
  /** Interface the frame is deemed to arrive on (FIB lookups start there); default loopback. */
  ingressIfindex?: number;
  repeat?: number;
}

/** The context of a frame arriving on `ingressIfindex`: what BPF_PROG_TEST_RUN needs for FIB lookups from there. */
export function xdpContext(frame: Buffer, ingressIfindex: number): Buffer {
  return xdpMd.encode({
    data: 0,
    dataEnd: frame.length,
    dataMeta: 0,
    ingressIfindex,
    rxQueueIndex: 0,
    egressIfindex: 0,
  });
}

export function runXdp(progFd: number, program: string, frame: Buffer, opts: RunOptions = {}): XdpRun {
  const r = sys.progTestRun(program, progFd, {
    data: frame,
    ctxIn: opts.ingressIfindex === undefined ? undefined : xdpContext(frame, opts.ingressIfindex),
    repeat: opts.repeat ?? 1,
    dataOutSize: frame.length + 256,
  });
  const action = XDP_ACTIONS[r.retval];
  if (!action) throw new Error(`${program} returned ${r.retval}, not an XDP action`);
  return { action, frame: r.dataOut, durationNs: r.duration };
}

/**
 * Runs a frame and names the reason the program counted: every verdict counts exactly one
 * (bpf/maps_node.h verdict()), so zero or two moved counters is a bug and throws.
 * `counts` reads the per-reason counters (FastPath.reasonCounts).
 */
export function runCounted(
  progFd: number,
  program: string,
  frame: Buffer,
  counts: () => Record<Reason, bigint>,
  opts: RunOptions = {},
): XdpRun & { reason: Reason } {
  const before = counts();
  const run = runXdp(progFd, program, frame, opts);
  const after = counts();
  const moved = REASONS.filter((r) => after[r] !== before[r]);
  if (moved.length !== 1)
    throw new Error(`${program}: expected exactly one reason counter to move, saw ${moved.join(', ') || 'none'}`);
  return { ...run, reason: moved[0] };
}
