/*
 * Pings from a namespace to an address for as long as a test runs, kept as the times of their
 * replies: how many came since a moment, and the longest silence around one (how long a
 * failover interrupted the traffic, as the client saw it).
 */
import type { ChildProcess } from 'node:child_process';
import * as readline from 'node:readline';
import type { Topology } from '../../src/lab/netns.js';

export interface Pings {
  /** The ping process: signals stop (SIGINT) or pause (SIGSTOP) it. */
  child: ChildProcess;
  /** When each reply came (Date.now()). */
  replies: number[];
  since: (at: number) => number;
  /** The longest time between two replies from a second before `from`, and when it began (ms after `from`). */
  gap: (from: number) => { ms: number; at: number };
}

export function startPings(topo: Topology, ns: string, address: string, intervalS: number): Pings {
  const child = topo.spawn(ns, 'ping', ['-n', '-i', String(intervalS), '-W', '1', address], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const replies: number[] = [];
  readline.createInterface({ input: child.stdout! }).on('line', (l) => {
    if (/bytes from/.test(l)) replies.push(Date.now());
  });
  return {
    child,
    replies,
    since: (at) => replies.filter((x) => x >= at).length,
    gap: (from) => {
      const around = replies.filter((x) => x >= from - 1000);
      return around
        .slice(1)
        .reduce((g, x, i) => (x - around[i] > g.ms ? { ms: x - around[i], at: around[i] - from } : g), {
          ms: 0,
          at: 0,
        });
    },
  };
}
