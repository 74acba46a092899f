/*
 * One CPU of `dvipa bench fastpath` on every CPU at once: a worker thread pinned to its CPU, inside the
 * routing-node namespace (test runs take their ingress device and FIB from the thread's
 * namespace), running the test runs the main thread sends it.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { sys } from '../kernel/sys.js';

export interface WorkerRun {
  fd: number;
  data: Uint8Array;
  ctxIn: Uint8Array;
  repeat: number;
}
export interface WorkerResult {
  retval: number;
  duration: number;
}

const { cpu, netns } = workerData as { cpu: number; netns: string };
sys.pinThreadToCpu(`cpu ${cpu}`, cpu);
sys.closeFd(netns, sys.netnsEnter(netns, netns));
parentPort!.on('message', (m: WorkerRun) => {
  const run = { data: Buffer.from(m.data), ctxIn: Buffer.from(m.ctxIn), repeat: m.repeat };
  const r = sys.progTestRun(`prog fd ${m.fd}`, m.fd, run);
  parentPort!.postMessage({ retval: r.retval, duration: r.duration } satisfies WorkerResult);
});
