/*
 * Who answers ARP for an address, seen on a client's LAN over time: arping broadcasts a
 * request every INTERVAL while tcpdump records requests and replies with their times. A
 * request answered from two MACs means two nodes held the address at once (split brain);
 * the time that lasted is the sum of the intervals that began with such a request.
 */
import * as readline from 'node:readline';
import type { ChildProcess } from 'node:child_process';
import type { Topology } from './netns.js';

export interface ArpWatchReport {
  /** Requests from the client (arping's and the kernel's). */
  requests: number;
  /** Replies to the client per MAC. */
  answeredBy: Record<string, number>;
  /** Requests answered by more than one MAC. */
  dualAnswered: number;
  /** Time both held the address, from the dual-answered requests' intervals (resolution: one interval). */
  dualMs: number;
  /** First and last dual-answered request, ms after the watch began. */
  firstDualMs?: number;
  lastDualMs?: number;
  /** Whether the last request was answered by both: the overlap outlasted the watch (dualMs is a lower bound). */
  dualAtEnd: boolean;
  unanswered: number;
  intervalMs: number;
}

const BROADCAST = 'ff:ff:ff:ff:ff:ff';

export class ArpWatch {
  private readonly lines: string[] = [];
  /** When the capture began (ms since the epoch). */
  readonly startedAt = Date.now();
  private arping?: ChildProcess;

  private constructor(
    private readonly dump: ChildProcess,
    private readonly address: string,
    private readonly client: string,
    private readonly intervalMs: number,
  ) {
    readline.createInterface({ input: dump.stdout! }).on('line', (l) => this.lines.push(l));
  }

  /** Starts the capture on `ifname` in `ns` (the client at `client`) and, once it listens, the requests. */
  static async start(
    topo: Topology,
    o: { ns: string; ifname: string; address: string; client: string; intervalMs: number },
  ): Promise<ArpWatch> {
    const dump = topo.spawn(o.ns, 'tcpdump', ['-l', '-n', '-e', '-tt', '-i', o.ifname, 'arp'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const w = new ArpWatch(dump, o.address, o.client, o.intervalMs);
    // tcpdump says on stderr when it listens.
    await new Promise<void>((resolve, reject) => {
      readline.createInterface({ input: dump.stderr! }).once('line', () => resolve());
      dump.once('exit', (code) => reject(new Error(`tcpdump exited with ${code}`)));
    });
    // Debian's arping (Thomas Habets'): a broadcast request every interval, until killed.
    w.arping = topo.spawn(o.ns, 'arping', ['-q', '-i', o.ifname, '-W', String(o.intervalMs / 1000), o.address], {
      stdio: 'ignore',
    });
    return w;
  }

  /** What it has seen so far (the capture goes on). */
  report(): ArpWatchReport {
    return this.analyse();
  }

  /** Stops the requests, lets the last replies arrive, stops the capture: what it saw. */
  async stop(): Promise<ArpWatchReport> {
    this.arping?.kill();
    await new Promise((r) => setTimeout(r, 200));
    const exited = new Promise((r) => this.dump.once('exit', r));
    this.dump.kill();
    await exited;
    return this.analyse();
  }

  private analyse(): ArpWatchReport {
    const esc = this.address.replace(/\./g, '\\.');
    const request = new RegExp(
      `^(\\d+\\.\\d+) \\S+ > \\S+, .*Request who-has ${esc} tell ${this.client.replace(/\./g, '\\.')},`,
    );
    const reply = new RegExp(`^\\d+\\.\\d+ (\\S+) > (\\S+), .*Reply ${esc} is-at ([0-9a-f:]{17})`);
    const reqs: Array<{ at: number; macs: Set<string> }> = [];
    const answeredBy: Record<string, number> = {};
    for (const l of this.lines) {
      const q = request.exec(l);
      if (q) {
        reqs.push({ at: Number(q[1]) * 1000, macs: new Set() });
        continue;
      }
      const r = reply.exec(l);
      // Gratuitous ARP (broadcast) answers nobody's request.
      if (!r || r[2] === BROADCAST || !reqs.length) continue;
      answeredBy[r[3]] = (answeredBy[r[3]] ?? 0) + 1;
      reqs[reqs.length - 1].macs.add(r[3]);
    }
    let dualMs = 0;
    const dual: number[] = [];
    reqs.forEach((q, i) => {
      if (q.macs.size < 2) return;
      dual.push(q.at);
      dualMs += i + 1 < reqs.length ? reqs[i + 1].at - q.at : this.intervalMs;
    });
    return {
      requests: reqs.length,
      answeredBy,
      dualAnswered: dual.length,
      dualMs: Math.round(dualMs),
      firstDualMs: dual.length ? Math.round(dual[0] - this.startedAt) : undefined,
      lastDualMs: dual.length ? Math.round(dual[dual.length - 1] - this.startedAt) : undefined,
      dualAtEnd: (reqs[reqs.length - 1]?.macs.size ?? 0) > 1,
      unanswered: reqs.filter((q) => q.macs.size === 0).length,
      intervalMs: this.intervalMs,
    };
  }
}
