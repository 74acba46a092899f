/*
 * `dvipa bench failover`: what a client sees when the owner of the DVIPA dies, for dvipa and
 * for keepalived (VRRPv3) on the same topology in the same run, interleaved: N takeovers (r1
 * dies: links down at one instant, then its process killed) and N takebacks (r1 comes back),
 * each measured by the lab's outage probe (10 ms pings, keep-alive HTTP, new connections).
 * Then the partition drills, with the time both nodes held the address counted from ARP
 * answers on the client's LAN: the owner frozen (SIGSTOP) and the owner cut off from etcd and
 * from the other node while its clients still reach it.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ArpWatch, type ArpWatchReport } from '../lab/arp-watch.js';
import { failoverStep, SETTLE_MS, startProbe, type Drill, type HaPair } from '../lab/drill.js';
import { LabError, until } from '../lab/wait.js';
import { HaLab, HTTP_PORT } from '../lab/ha-lab.js';
import { HA, isolateRouter, macOf } from '../lab/ha-topology.js';
import { CLAIM_RENEWALS, FENCE_RENEWALS } from '../cluster/agent.js';
import { KeepalivedPair } from '../lab/keepalived.js';
import { Topology } from '../lab/netns.js';
import type { OutageReport } from '../lab/procs.js';
import type { ChartSeries } from './svg.js';

export const FAILOVER_SYSTEMS = ['dvipa', 'keepalived'] as const;
export type FailoverSystem = (typeof FAILOVER_SYSTEMS)[number];
export const PARTITION_DRILLS = ['freeze', 'isolate'] as const;
export type PartitionDrill = (typeof PARTITION_DRILLS)[number];

/** How long each drill's fault lasts by default (the issue's drills), and how long it is watched after. */
export const DRILL_FAULT_S: Record<PartitionDrill, number> = { freeze: 5, isolate: 15 };
const DRILL_AFTER_MS = 3000;
/** Runs of one system before the next one's lab comes up (see benchFailover). */
const BLOCK_RUNS = 5;
const ARP_INTERVAL_MS = 20;

export interface FailoverBenchOptions {
  runs: number;
  advertIntS: number;
  systems: FailoverSystem[];
  /** dvipa's renewal intervals (--renew-ms): one lab each, side by side. */
  renewMs: number[];
  drills: PartitionDrill[];
  /** Seconds each drill's fault lasts. */
  faultS: Record<PartitionDrill, number>;
  /** Names the bench's namespaces and pin roots (two labs: PREFIX + d, PREFIX + k). */
  prefix: string;
  onProgress?: (fraction: number, note: string) => void;
}

export interface Distribution {
  n: number;
  median: number;
  p90: number;
  max: number;
}

export interface EventFigures {
  /** Longest gap between ping replies (10 ms pings): the outage. */
  outageMs: Distribution;
  /** Longest wait of a keep-alive HTTP request. */
  httpWaitMs: Distribution;
  /** Summed over the runs. */
  httpFailed: number;
  httpResets: number;
  newConnectionsFailed: number;
  /** Until the new owner held the address alone, polled. */
  settledMs: Distribution;
}

export interface DrillFigures extends ArpWatchReport {
  faultMs: number;
  /** Replies per node (the MACs of r1's and r2's external interfaces); firstDualMs and lastDualMs count from the fault's start. */
  answeredByNode: Record<string, number>;
}

export interface SystemFigures {
  system: FailoverSystem;
  /** The system with its setting where a run compares several (dvipa's renewal interval). */
  name: string;
  settings: string;
  /** The same probe over SETTLE_MS with no failure, once per run: the noise floor of this machine. */
  idle: { outageMs: Distribution; httpWaitMs: Distribution };
  takeover: EventFigures;
  takeback: EventFigures;
  drills: Partial<Record<PartitionDrill, DrillFigures>>;
  events: Drill[];
}

export interface FailoverBench {
  runs: number;
  advertIntS: number;
  cpus: number;
  /** The machine's load average (1 min) as the bench began and ended: the figures' noise. */
  loadavg: { before: number; after: number };
  systems: SystemFigures[];
}

/** Nearest-rank percentile of an ascending list. */
function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? 0;
}

export function distribution(xs: number[]): Distribution {
  const s = [...xs].sort((a, b) => a - b);
  return { n: s.length, median: percentile(s, 50), p90: percentile(s, 90), max: s[s.length - 1] ?? 0 };
}

function eventFigures(ds: Drill[]): EventFigures {
  const sum = (f: (d: Drill) => number) => ds.reduce((a, d) => a + f(d), 0);
  return {
    outageMs: distribution(ds.map((d) => d.client.ping.longestGapMs)),
    httpWaitMs: distribution(ds.map((d) => d.client.http.longestWaitMs)),
    httpFailed: sum((d) => d.client.http.failed),
    httpResets: sum((d) => d.client.http.resets),
    newConnectionsFailed: sum((d) => d.client.fresh.failed),
    settledMs: distribution(ds.map((d) => d.settledMs)),
  };
}

/** A system under test: its pair of routing nodes, and how to freeze its owner and tear it down. */
interface Contender {
  pair: HaPair;
  ns: Record<string, string>;
  freeze(node: string, frozen: boolean): void;
  down(): Promise<void>;
}

/** A system as the bench runs it: its name, its settings line, and how to bring its lab up. */
interface ContenderSpec {
  system: FailoverSystem;
  name: string;
  settings: string;
  up(): Promise<Contender>;
}

/** The systems to run (dvipa: one lab per renewal interval). */
function specsOf(o: FailoverBenchOptions, dir: string): ContenderSpec[] {
  return o.systems.flatMap((system): ContenderSpec[] => {
    if (system === 'keepalived')
      return [
        {
          system,
          name: system,
          settings: `VRRPv3, advert_int ${o.advertIntS} s, preempt`,
          up: async () => {
            const k = await KeepalivedPair.up({
              prefix: `${o.prefix}k`,
              dir: path.join(dir, 'keepalived'),
              advertIntS: o.advertIntS,
              port: HTTP_PORT,
            });
            return { pair: k, ns: k.ns, freeze: (n, f) => k.freeze(n, f), down: () => k.down() };
          },
        },
      ];
    return o.renewMs.map((renewMs, i) => ({
      system,
      name: o.renewMs.length > 1 ? `dvipa ${renewMs} ms` : system,
      settings:
        `the lab's agents and etcd, as 'dvipa lab up --renew-ms ${renewMs}' runs them: a renewal every ${renewMs} ms ` +
        `(${Math.round(1000 / renewMs)} etcd writes a second per owned DVIPA), fence ${FENCE_RENEWALS * renewMs} ms, ` +
        `claim after ${CLAIM_RENEWALS * renewMs} ms quiet`,
      up: async () => {
        const lab = await HaLab.up(path.join(dir, `dvipa${i || ''}`), undefined, `${o.prefix}d${i || ''}`, renewMs);
        return { pair: lab, ns: lab.state.ns, freeze: (n, f) => lab.freeze(n, f), down: () => lab.down() };
      },
    }));
  });
}

/** Puts r1 back as the only owner after a drill: at once if it is, else by bringing it back as after a death. */
async function restoreOwner(c: Contender): Promise<void> {
  const settled = async () => (await c.pair.active('r1')) && c.pair.holds('r1') && !c.pair.holds('r2');
  try {
    await until('r1 to own the DVIPA again', settled, 5000);
  } catch {
    await c.pair.kill('r1');
    await until('r2 to own the DVIPA', async () => (await c.pair.active('r2')) && c.pair.holds('r2'), 15000);
    c.pair.revive('r1');
    await until('r1 to take the DVIPA back', settled, 30000);
  }
}

async function partitionDrill(
  c: Contender,
  drill: PartitionDrill,
  faultMs: number,
  spawner: Topology,
): Promise<DrillFigures> {
  const macs = Object.fromEntries(HA.routers.map((r) => [macOf(c.ns[r.name], 'ext'), r.name]));
  const watch = await ArpWatch.start(spawner, {
    ns: c.ns.client,
    ifname: 'c0',
    address: HA.dvipa,
    client: HA.client,
    intervalMs: ARP_INTERVAL_MS,
  });
  let report: ArpWatchReport;
  const fault = (on: boolean) => (drill === 'freeze' ? c.freeze('r1', on) : isolateRouter(c.ns.r1, 'r1', on));
  let faultAt = Date.now();
  try {
    await sleep(300);
    faultAt = Date.now();
    fault(true);
    try {
      await sleep(faultMs);
    } finally {
      fault(false);
    }
    await sleep(DRILL_AFTER_MS);
  } finally {
    report = await watch.stop();
  }
  const answeredByNode: Record<string, number> = {};
  for (const [mac, n] of Object.entries(report.answeredBy)) answeredByNode[macs[mac] ?? mac] = n;
  await restoreOwner(c);
  // Times from the fault on, not from the capture's start.
  const since = (ms?: number) => (ms === undefined ? undefined : ms - (faultAt - watch.startedAt));
  return {
    ...report,
    firstDualMs: since(report.firstDualMs),
    lastDualMs: since(report.lastDualMs),
    faultMs,
    answeredByNode,
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The programs a run needs, by system and drills: missing ones are named before anything starts. */
function checkPrograms(o: FailoverBenchOptions): void {
  const needed = [
    ...(o.systems.includes('keepalived') ? ['keepalived'] : []),
    ...(o.drills.length ? ['arping', 'tcpdump'] : []),
    ...(o.drills.includes('isolate') ? ['nft'] : []),
  ];
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin'];
  const missing = needed.filter((p) => !dirs.some((d) => d && fs.existsSync(path.join(d, p))));
  if (missing.length) throw new LabError(`${missing.join(', ')} not found: scripts/setup installs them`);
}

/** What the bench gathers of one system over the whole run. */
interface Gathered {
  events: Drill[];
  idle: OutageReport[];
  drills: SystemFigures['drills'];
}

export async function benchFailover(o: FailoverBenchOptions): Promise<FailoverBench> {
  checkPrograms(o);
  const before = os.loadavg()[0];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvipa-bench-failover-'));
  const spawner = new Topology(`${o.prefix}p`);
  const specs = specsOf(o, dir);
  const gathered = new Map<ContenderSpec, Gathered>(specs.map((c) => [c, { events: [], idle: [], drills: {} }]));
  const progress = o.onProgress ?? (() => undefined);
  const steps = specs.length * (2 * o.runs + o.drills.length);
  let done = 0;
  const step = (note: string) => progress(++done / steps, note);
  let ok = false;
  let live: Contender | undefined;
  try {
    // One system's lab up at a time, BLOCK_RUNS runs each in turn: the others' agents, etcd and
    // probes would otherwise load this machine as much as the one measured.
    for (let first = 1; first <= o.runs; first += BLOCK_RUNS) {
      const last = Math.min(o.runs, first + BLOCK_RUNS - 1);
      for (const spec of specs) {
        const c = (live = await spec.up());
        const g = gathered.get(spec)!;
        const probe = await startProbe(spawner, c.ns.client, HTTP_PORT);
        try {
          for (let run = first; run <= last; run++) {
            await probe.mark();
            await sleep(SETTLE_MS);
            g.idle.push(await probe.report());
            for (const event of ['takeover', 'takeback']) {
              const d = await failoverStep(c.pair, probe);
              if (d.event !== event) throw new LabError(`${spec.name}: a ${d.event} where a ${event} was due`);
              g.events.push(d);
              step(`run ${run}: ${spec.name} ${event}`);
            }
          }
        } finally {
          probe.stop();
        }
        if (last === o.runs)
          for (const d of o.drills) {
            g.drills[d] = await partitionDrill(c, d, o.faultS[d] * 1000, spawner);
            step(`${spec.name} ${d}`);
          }
        live = undefined;
        await c.down();
      }
    }
    ok = true;
    return {
      runs: o.runs,
      advertIntS: o.advertIntS,
      cpus: os.cpus().length,
      loadavg: { before, after: os.loadavg()[0] },
      systems: specs.map((c) => {
        const g = gathered.get(c)!;
        return {
          system: c.system,
          name: c.name,
          settings: c.settings,
          idle: {
            outageMs: distribution(g.idle.map((r) => r.ping.longestGapMs)),
            httpWaitMs: distribution(g.idle.map((r) => r.http.longestWaitMs)),
          },
          takeover: eventFigures(g.events.filter((e) => e.event === 'takeover')),
          takeback: eventFigures(g.events.filter((e) => e.event === 'takeback')),
          drills: g.drills,
          events: g.events,
        };
      }),
    };
  } finally {
    spawner.teardown();
    await live?.down();
    // The logs stay for a run that failed (its error names the directory).
    if (ok) fs.rmSync(dir, { recursive: true, force: true });
  }
}

const dist = (d: Distribution) => `${d.median} / ${d.p90} / ${d.max}`;

export function formatFailoverBench(b: FailoverBench): string {
  const rows: string[][] = [
    [
      'system',
      'event',
      'outage ms (median / p90 / max)',
      'HTTP wait ms (median / p90 / max)',
      'failed',
      'resets',
      'new conn. failed',
    ],
  ];
  for (const s of b.systems) {
    rows.push([s.name, 'idle', dist(s.idle.outageMs), dist(s.idle.httpWaitMs), '-', '-', '-']);
    for (const event of ['takeover', 'takeback'] as const) {
      const e = s[event];
      rows.push([
        s.name,
        event,
        dist(e.outageMs),
        dist(e.httpWaitMs),
        String(e.httpFailed),
        String(e.httpResets),
        String(e.newConnectionsFailed),
      ]);
    }
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const table = rows.map((r) =>
    r
      .map((c, i) => c.padEnd(widths[i]))
      .join('  ')
      .trimEnd(),
  );
  const drillLines = b.systems.flatMap((s) =>
    Object.entries(s.drills).map(
      ([name, d]) =>
        `  ${s.name.padEnd(14)} ${name === 'freeze' ? 'owner frozen' : 'owner isolated'} ${d.faultMs / 1000} s: both held the address ${d.dualAtEnd ? 'at least ' : ''}${d.dualMs} ms (${d.dualAnswered} of ${d.requests} ARP requests answered by both; answers ${Object.entries(
          d.answeredByNode,
        )
          .map(([n, c]) => `${n} ${c}`)
          .join(', ')})`,
    ),
  );
  return [
    `failover: ${b.runs} takeovers and takebacks per system, interleaved (${b.cpus} CPUs, load average ${b.loadavg.before.toFixed(1)} before, ${b.loadavg.after.toFixed(1)} after)`,
    ...b.systems.map((s) => `  ${s.name}: ${s.settings}`),
    '',
    ...table,
    ...(drillLines.length
      ? ['', `partition drills (ARP request every ${ARP_INTERVAL_MS} ms from the client):`, ...drillLines]
      : []),
  ].join('\n');
}

/** The chart: each run's outage per system and event, with the median, p90 and max as bars. */
export function failoverSeries(b: FailoverBench): ChartSeries[] {
  return b.systems.flatMap((s) =>
    (['takeover', 'takeback'] as const).map((event) => {
      const ev = s.events.filter((e) => e.event === event);
      const d = s[event].outageMs;
      return {
        name: `${s.name} ${event}`,
        points: ev.map((e, i) => ({ t: i + 1, pps: e.client.ping.longestGapMs })),
        perTarget: { median: d.median, p90: d.p90, max: d.max },
      };
    }),
  );
}
