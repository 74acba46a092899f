/*
 * A second process running the distributor with BPF_PROG_TEST_RUN in a loop, for the test
 * that swaps a Maglev table under it (testrun.test.ts). Run inside the routing node's
 * namespace (real FIB). Usage: testrun-loop PIN_ROOT INGRESS_IFINDEX VIP PORT MS [STOP_FILE MIN_RUNS].
 * Prints "ready", then for MS ms sends SYNs of flows never seen before (flow i: see loopFlow), and
 * prints one JSON line: the target each flow was sent to, in the order the runs happened.
 * With STOP_FILE it stops sooner: once that file exists and MIN_RUNS SYNs went. A test that
 * wants a number of turns on both sides waits on them rather than on the clock, which under
 * TCG runs several times slower.
 */
import { existsSync } from 'node:fs';

import { FastPath } from '../../src/dataplane/fastpath.js';
import { runXdp } from '../../src/dataplane/testrun.js';
import { formatIpv4 } from '../../src/net/addr.js';
import { buildFrame, parseFrame } from '../../src/net/packet.js';

/** Flow i of the loop: a new source address every 60,000 ports, so the CRT never has it. */
export function loopFlow(i: number): { saddr: string; sport: number } {
  return { saddr: formatIpv4((0xc6128000 + Math.floor(i / 60000)) >>> 0), sport: 1024 + (i % 60000) };
}

function main(): void {
  const args = process.argv.slice(2);
  // Without its arguments FastPath.open would pin at the default root, a real node's place.
  if (args.length !== 5 && args.length !== 7) {
    process.stderr.write('usage: testrun-loop PIN_ROOT INGRESS_IFINDEX VIP PORT MS [STOP_FILE MIN_RUNS]\n');
    process.exit(2);
  }
  const [pinRoot, ifindex, vip, port, ms, stopFile, minRuns] = args;
  // The file is looked for every 64 runs: a syscall per run would slow the loop it measures.
  const stopped = (i: number) => stopFile !== undefined && i >= Number(minRuns) && i % 64 === 0 && existsSync(stopFile);
  const fp = FastPath.open({ pinRoot });
  const prog = fp.progFd('distributor');
  const targets: string[] = [];
  process.stdout.write('ready\n');
  const end = Date.now() + Number(ms);
  for (let i = 0; Date.now() < end && !stopped(i); i++) {
    const f = loopFlow(i);
    const frame = buildFrame({
      saddr: f.saddr,
      daddr: vip,
      sport: f.sport,
      dport: Number(port),
      tcpFlags: { syn: true },
      df: true,
    });
    const r = runXdp(prog, 'distributor', frame, { ingressIfindex: Number(ifindex) });
    targets.push(r.action === 'redirect' || r.action === 'tx' ? parseFrame(r.frame).ipv4!.dst : r.action);
  }
  fp.close();
  process.stdout.write(`${JSON.stringify(targets)}\n`);
}

if (process.argv[1]?.endsWith('testrun-loop.js')) main();
