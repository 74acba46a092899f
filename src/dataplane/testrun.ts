/*
 * BPF_PROG_TEST_RUN for XDP programs: the kernel runs the real program on a frame we hand
 * it, with real maps and (given an ingress interface) real FIB lookups in the calling
 * thread's network namespace. Used by `fastpath replay`, the benchmark and the tests.
 */
import { native } from './addon.js';
import { named } from './errors.js';
import { struct } from './codec.js';

export const XDP_ACTIONS = ['aborted', 'drop', 'pass', 'tx', 'redirect'] as const;
export type XdpAction = (typeof XDP_ACTIONS)[number];

/** struct xdp_md, the context handed to the program (uapi linux/bpf.h). */
export const xdpMd = struct<{ data: number; dataEnd: number; dataMeta: number; ingressIfindex: number; rxQueueIndex: number; egressIfindex: number }>(
  'xdp_md',
  [['data', 'u32'], ['dataEnd', 'u32'], ['dataMeta', 'u32'], ['ingressIfindex', 'u32'], ['rxQueueIndex', 'u32'], ['egressIfindex', 'u32']],
);

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

function ctxFor(frame: Buffer, ingressIfindex: number | undefined): Buffer | undefined {
  if (ingressIfindex === undefined) return undefined;
  return xdpMd.encode({ data: 0, dataEnd: frame.length, dataMeta: 0, ingressIfindex, rxQueueIndex: 0, egressIfindex: 0 });
}

export function runXdp(progFd: number, program: string, frame: Buffer, opts: RunOptions = {}): XdpRun {
  const r = named(program, () =>
    native.progTestRun(progFd, { data: frame, ctxIn: ctxFor(frame, opts.ingressIfindex), repeat: opts.repeat ?? 1, dataOutSize: frame.length + 256 }),
  );
  const action = XDP_ACTIONS[r.retval];
  if (!action) throw new Error(`${program} returned ${r.retval}, not an XDP action`);
  return { action, frame: r.dataOut, durationNs: r.duration };
}
