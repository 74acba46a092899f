/*
 * Who answers ARP for an address, seen from a client namespace: arping broadcasts a request
 * every INTERVAL while tcpdump records requests and replies; a request answered from two
 * MACs is two nodes holding the address at once (the split brain a fence must prevent).
 */
import * as readline from 'node:readline';
import type { Topology } from './netns.js';

export interface ArpReport {
  requests: number;
  /** Replies per MAC. */
  answeredBy: Record<string, number>;
  /** Requests answered by more than one MAC. */
  answeredByTwo: number;
  /** Requests nobody answered. */
  unanswered: number;
}

const INTERVAL_S = 0.02;

export async function probeArp(
  topo: Topology,
  ns: string,
  ifname: string,
  address: string,
  ms: number,
): Promise<ArpReport> {
  const dump = topo.spawn(ns, 'tcpdump', ['-l', '-n', '-e', '-i', ifname, 'arp'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  readline.createInterface({ input: dump.stdout! }).on('line', (l) => lines.push(l));
  // tcpdump says on stderr when it listens.
  await new Promise<void>((resolve) => readline.createInterface({ input: dump.stderr! }).once('line', () => resolve()));
  // Debian's arping (Thomas Habets'): broadcast requests every INTERVAL_S until the deadline.
  const arping = topo.spawn(
    ns,
    'arping',
    ['-q', '-i', ifname, '-W', String(INTERVAL_S), '-w', String(ms / 1000), address],
    { stdio: 'ignore' },
  );
  await new Promise((r) => arping.once('exit', r));
  await new Promise((r) => setTimeout(r, 100));
  dump.kill();
  const report: ArpReport = { requests: 0, answeredBy: {}, answeredByTwo: 0, unanswered: 0 };
  let macs = new Set<string>();
  const close = () => {
    if (macs.size > 1) report.answeredByTwo++;
    if (macs.size === 0 && report.requests > 0) report.unanswered++;
  };
  for (const l of lines) {
    if (l.includes(`Request who-has ${address} `)) {
      close();
      report.requests++;
      macs = new Set();
      continue;
    }
    const m = new RegExp(`Reply ${address.replace(/\./g, '\\.')} is-at ([0-9a-f:]{17})`).exec(l);
    if (!m) continue;
    report.answeredBy[m[1]] = (report.answeredBy[m[1]] ?? 0) + 1;
    macs.add(m[1]);
  }
  close();
  return report;
}
