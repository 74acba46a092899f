/*
 * `dvipa lab up|status|demo|failover|down`: the whole system on one machine. `demo` is the
 * main job: it brings the lab up (unless it is), runs HTTP requests and long-lived
 * connections through both DVIPAs (IPv4 and IPv6), kills the primary routing node, shows the
 * takeover and the takeback with connection counts and timings per family, prints a report,
 * and takes the lab down again (unless it found it up, or --keep).
 */
import type { Argv } from 'yargs';
import { DEFAULT_LAB_DIR, HaLab, HTTP_PORT, LAB_PREFIX, LabError, LINE_PORT } from '../lab/ha-lab.js';
import { HA, HA_DVIPAS } from '../lab/ha-topology.js';
import {
  LoadClient,
  loadProblems,
  lostSegments,
  type LoadReport,
  type OutageProbe,
  type OutageReport,
} from '../lab/procs.js';
import { failoverStep, startProbe, type Drill } from '../lab/drill.js';
import { Topology } from '../lab/netns.js';
import type { VdptRow, VipadynRow } from '../cluster/views.js';
import { command } from './command.js';
import { CliError, EXIT, requireRoot } from './errors.js';
import { checkLimit, DEFAULTS } from '../config/settings.js';

interface Args {
  dir: string;
  json?: boolean;
}

const out = (s: string): void => {
  process.stdout.write(s);
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function lab<T>(fn: () => Promise<T>): Promise<T> {
  requireRoot('dvipa lab');
  return fn();
}

function opened(dir: string): HaLab {
  const l = HaLab.open(dir);
  if (!l) throw new CliError(`the lab is not up (no state in ${dir}): 'dvipa lab up' first`);
  return l;
}

const progress = (json?: boolean) => (m: string) => {
  if (!json) out(`  ${m}\n`);
};

async function up(a: Args & { renewMs?: number }): Promise<void> {
  await lab(async () => {
    if (a.renewMs !== undefined) checkLimit('renewMs', 'renew-ms', a.renewMs);
    if (!a.json) out('dvipa lab: bringing up\n');
    const l = await HaLab.up(a.dir, progress(a.json), undefined, a.renewMs);
    if (a.json) out(`${JSON.stringify(l.state)}\n`);
    else
      out(
        `up: DVIPAs ${HA.dvipa} and ${HA.dvipa6} (HTTP :80, line protocol :${LINE_PORT}) routed by r1, backed up by r2; etcd ${l.state.etcd}\n  netstat: dvipa netstat vdpt --socket ${l.socket('r1')}\n`,
      );
  });
}

async function status(a: Args): Promise<void> {
  await lab(async () => {
    const l = opened(a.dir);
    const routers = await Promise.all(
      HA.routers.map(async (r) => ({
        node: r.name,
        holdsAddress: l.holds(r.name),
        vipadyn: await l.vipadyn(r.name),
        holdsAddress6: l.holds(r.name, HA.dvipa6),
        vipadyn6: await l.vipadyn(r.name, HA.dvipa6),
      })),
    );
    const owner = routers.find((r) => r.vipadyn?.status === 'Active');
    const vdpt = owner ? await l.vdpt(owner.node) : undefined;
    const s = {
      dir: a.dir,
      up: l.state.up,
      etcd: l.state.etcd,
      processes: l.processes(),
      routers,
      targets: vdpt?.map((r) => ({
        dvipa: r.dvipa,
        port: r.port,
        target: r.target,
        ready: r.ready,
        active: r.activeConn,
      })),
    };
    if (a.json) return out(`${JSON.stringify(s)}\n`);
    out(`lab up since ${s.up}, state in ${s.dir}, etcd ${s.etcd}\n`);
    out(`processes: ${s.processes.map((p) => `${p.name}${p.running ? '' : ' (NOT RUNNING)'}`).join(' ')}\n`);
    const row = (dvipa: string, v: VipadynRow | undefined, holds: boolean) =>
      `${dvipa} ${v ? `${v.status.toUpperCase()} epoch ${v.epoch || '-'} owner ${v.owner ?? '-'}` : 'agent not answering'}${holds ? ', holds the address' : ''}${v?.heldBack ? ` (held back: ${v.heldBack})` : ''}`;
    for (const r of routers)
      out(`${r.node}: ${row(HA.dvipa, r.vipadyn, r.holdsAddress)}; ${row(HA.dvipa6, r.vipadyn6, r.holdsAddress6)}\n`);
    for (const t of s.targets ?? [])
      out(
        `  ${t.dvipa} port ${t.port} ${t.target}: ${t.ready ? 'listening' : 'NOT LISTENING'}, ${t.active} active connections\n`,
      );
  });
}

/** A drill of the IPv4 DVIPA (failoverStep's) with what the client saw of the IPv6 one in the same window. */
interface DualDrill extends Drill {
  ipv6: { acquiredMs?: number; client: OutageReport };
}

function describeClient(c: OutageReport): string {
  return (
    `longest ping gap ${c.ping.longestGapMs} ms (10 ms pings); keep-alive HTTP: longest wait ${c.http.longestWaitMs} ms, ` +
    `${c.http.failed} of ${c.http.requests + c.http.failed} requests failed, ${c.http.resets} resets; new connections: ${c.fresh.failed} of ${c.fresh.ok + c.fresh.failed} failed`
  );
}

function describeDrill(d: DualDrill): string {
  const who =
    d.event === 'takeover'
      ? 'r1 died (links down, then agent killed): r2 took over'
      : 'r1 back (links up, agent started): it took the DVIPAs back';
  return (
    `${who}\n` +
    `    client, IPv4 ${HA.dvipa}: ${describeClient(d.client)}\n` +
    `    client, IPv6 ${HA.dvipa6}: ${describeClient(d.ipv6.client)}\n` +
    `    control plane: IPv4 DVIPA acquired after ${d.acquiredMs ?? '-'} ms, IPv6 after ${d.ipv6.acquiredMs ?? '-'} ms; new owner alone on the IPv4 address after ${d.settledMs} ms (polled)\n`
  );
}

/**
 * failoverStep with a probe on each DVIPA: the IPv6 one watches the same window, and the step
 * ends once the new owner holds the IPv6 DVIPA too (alone, for a takeback).
 */
async function dualFailover(
  l: HaLab,
  probe: OutageProbe,
  probe6: OutageProbe,
  watchers: LoadClient[] = [],
): Promise<DualDrill> {
  const since = Date.now();
  const d = await failoverStep(l, probe, [probe6, ...watchers]);
  const [to, from] = d.event === 'takeover' ? ['r2', 'r1'] : ['r1', 'r2'];
  await l.until(
    `${to} to hold ${HA.dvipa6}`,
    async () =>
      (await l.vipadyn(to, HA.dvipa6))?.status === 'Active' &&
      l.holds(to, HA.dvipa6) &&
      (d.event === 'takeover' || !l.holds(from, HA.dvipa6)),
    15000,
  );
  // The failure's instant, from the IPv4 acquisition and its delay after it.
  const at4 = l.acquired(to, since);
  const at6 = l.acquired(to, since, HA.dvipa6);
  const t0 = at4 !== undefined && d.acquiredMs !== undefined ? at4 - d.acquiredMs : undefined;
  return {
    ...d,
    ipv6: { acquiredMs: at6 !== undefined && t0 !== undefined ? at6 - t0 : undefined, client: await probe6.report() },
  };
}

/** A probe on each DVIPA: IPv4 first. */
async function startProbes(spawner: Topology, l: HaLab): Promise<[OutageProbe, OutageProbe]> {
  return [
    await startProbe(spawner, l.state.ns.client, HTTP_PORT),
    await startProbe(spawner, l.state.ns.client, HTTP_PORT, HA.dvipa6),
  ];
}

async function failover(a: Args): Promise<void> {
  await lab(async () => {
    const l = opened(a.dir);
    const spawner = new Topology(LAB_PREFIX);
    try {
      const r = await dualFailover(l, ...(await startProbes(spawner, l)));
      out(a.json ? `${JSON.stringify(r)}\n` : describeDrill(r));
    } finally {
      spawner.teardown();
    }
  });
}

async function down(a: Args): Promise<void> {
  await lab(async () => {
    const done = await HaLab.clean(HaLab.open(a.dir)?.state, a.dir);
    if (a.json) return out(`${JSON.stringify({ removed: done })}\n`);
    out(done.length ? `lab down: removed ${done.join(', ')}\n` : 'nothing to remove: the lab was not up\n');
  });
}

/** What the demo saw of one DVIPA (one family). */
export interface FamilyRun {
  http: Record<'before' | 'duringTakeover' | 'afterTakeback', Record<string, number>>;
  takeover: LoadReport;
  takeback: LoadReport;
  /** Problems of every window of the load client (new connections failed or never ended), the idle ones included. */
  everyWindow: string[];
}

export interface DemoRun {
  long: number;
  ipv4: FamilyRun;
  ipv6: FamilyRun;
}

const FAMILIES = ['ipv4', 'ipv6'] as const;
const familyName = { ipv4: 'IPv4', ipv6: 'IPv6' } as const;

/**
 * Why the demo failed, or nothing: what the README says it shows, for each DVIPA (each problem
 * names its family). r1 spreads HTTP over all three targets and r2 by its own list (t1, t2);
 * through the takeover and the takeback no long-lived connection is reset, closed or left silent
 * and no new connection fails or hangs; at the takeback no SYN is retransmitted and no segment of
 * the DVIPA's open connections is lost (procs.ts lossProblems: a D-SACKed retransmission came of
 * a delay).
 */
export function demoProblems(d: DemoRun): string[] {
  const targets = (c: Record<string, number>) => Object.keys(c).sort().join(' ');
  const p: string[] = [];
  for (const f of FAMILIES) {
    const run = d[f];
    const say = (x: string) => p.push(`${familyName[f]} ${x}`);
    const http = (got: Record<string, number>, want: string, through: string) => {
      if (targets(got) !== want) say(`HTTP through ${through} answered by ${targets(got)}, not ${want}`);
    };
    http(run.http.before, 't1 t2 t3', 'r1');
    http(run.http.duringTakeover, 't1 t2', 'r2 (its own list)');
    http(run.http.afterTakeback, 't1 t2 t3', 'r1 again');
    loadProblems(run.takeover, { long: d.long }).forEach((x) => say(`takeover: ${x}`));
    loadProblems(run.takeback, { long: d.long, lossless: true }).forEach((x) => say(`takeback: ${x}`));
    run.everyWindow.forEach(say);
  }
  return [...new Set(p)];
}

/** The drop verdicts counted since `before` (ARP and NS a draining owner drops on purpose included), by reason. */
function droppedSince(before: Record<string, bigint>, now: Record<string, bigint>): Record<string, number> {
  const moved = Object.entries(now).filter(([r, n]) => r.startsWith('drop_') && n > (before[r] ?? 0n));
  return Object.fromEntries(moved.map(([r, n]) => [r, Number(n - (before[r] ?? 0n))]));
}

/** The report's figures of a takeover or takeback, from the load client's window after it. */
function loadFigures(r: LoadReport) {
  return {
    firstNewConnectionMs: r.fresh.firstOkAfterMs,
    longestWaitMs: r.long.maxWaitMs,
    allAnsweringMs: r.long.allAnsweredAfterMs,
    reset: Object.values(r.long.closed).reduce((x, n) => x + n, 0),
    silent: r.long.silentSinceWindow,
    newFailed: r.fresh.failed,
    newPending: r.fresh.pending,
    retransmissions: r.retrans,
    // Of those: SYNs, and segments D-SACKed (the receiver had them: delayed, not lost).
    synRetransmissions: r.tcp.syn,
    dsacked: r.tcp.dsack,
    lost: lostSegments(r),
    // Retransmitted segments of this DVIPA's connections open at the window's end (the count above is both families').
    dvipaRetransmissions: r.dvipa?.retrans,
  };
}

async function demo(a: Args & { keep?: boolean; long: number }): Promise<void> {
  await lab(async () => {
    const say = progress(a.json);
    let l = HaLab.open(a.dir);
    const ours = !l;
    if (!a.json) out('dvipa lab demo\n');
    if (!l) l = await HaLab.up(a.dir, say);
    const lab = l;
    const spawner = new Topology(LAB_PREFIX);
    const httpRounds = () => Promise.all(HA_DVIPAS.map((d) => lab.httpRound(30, d)));
    // A new owner distributes as the old one did for 3 s after it owns a DVIPA (router.ts
    // INHERIT_MS), then by its own list: its DPT says when, where a fixed sleep raced it (the
    // IPv6 claim and the agent's timer both run late on a busy machine: stop 25's CI).
    const distributesByItsOwnList = async (node: string, since: number) => {
      let rows: VdptRow[] | undefined;
      const own = (d: string) =>
        rows?.some((r) => r.dvipa === d && r.owner) && !rows.some((r) => r.dvipa === d && r.following);
      await lab
        .until(
          `${node} to distribute both DVIPAs by its own list`,
          async () => {
            rows = await lab.vdpt(node);
            return HA_DVIPAS.every(own);
          },
          15000,
        )
        .catch(async (e: Error) => {
          // What its DPT said last, per DVIPA, and what the agent says of them: a failed wait says why.
          const dpt = HA_DVIPAS.map((d) => {
            if (!rows) return `${d}: no answer`;
            const mine = rows.filter((r) => r.dvipa === d);
            const following = [...new Set(mine.map((r) => r.following).filter(Boolean))];
            return `${d}: ${mine.length} rows, ${mine.some((r) => r.owner) ? 'owner' : 'not owner'}${following.length ? `, following ${following.join(', ')}` : ''}`;
          });
          throw new LabError(
            `${e.message}\n${node}'s DPT: ${dpt.join('; ')}\n${await lab.explain(node, since)}\n${lab.storeSays(since)}`,
          );
        });
    };
    try {
      say(`HTTP requests through each DVIPA (${HA.dvipa}, ${HA.dvipa6}), each on a new connection`);
      const before = await httpRounds();
      say(
        `${a.long} long-lived connections to each DVIPA (a line every 100 ms) and 20 new connections a second to each`,
      );
      const loads = await Promise.all(
        HA_DVIPAS.map((host) =>
          LoadClient.start(spawner, lab.state.ns.client, {
            host,
            port: LINE_PORT,
            long: a.long,
            intervalMs: 100,
            newPerSec: 20,
          }),
        ),
      );
      await Promise.all(loads.map((x) => x.mark('steady')));
      await sleep(1000);
      const steady = await Promise.all(loads.map((x) => x.report()));
      const [probe, probe6] = await startProbes(spawner, lab);
      const closeAll = async () => {
        await Promise.all(loads.map((x) => x.allAnswering(15000)));
        return Promise.all(loads.map((x) => x.close()));
      };
      say('r1 dies: both links down at one instant, then its agent killed');
      const failedAt = Date.now();
      const takeover = await dualFailover(lab, probe, probe6, loads);
      const afterTakeover = await closeAll();
      await distributesByItsOwnList('r2', failedAt);
      const during = await httpRounds();
      say('bringing r1 back');
      const routers = HA.routers.map((r) => r.name);
      const reasons0 = routers.map((r) => lab.reasons(r));
      const returnedAt = Date.now();
      const takeback = await dualFailover(lab, probe, probe6, loads);
      await distributesByItsOwnList('r1', returnedAt);
      const afterTakeback = await closeAll();
      // Where the routing nodes' data planes dropped packets over the takeback: a loss says where.
      const takebackDrops = Object.fromEntries(routers.map((r, i) => [r, droppedSince(reasons0[i], lab.reasons(r))]));
      const after = await httpRounds();
      const everyWindow = await Promise.all(loads.map((x) => x.everyWindowProblems()));
      for (const x of loads) x.stop();
      const run = (i: number): FamilyRun => ({
        http: { before: before[i], duringTakeover: during[i], afterTakeback: after[i] },
        takeover: afterTakeover[i],
        takeback: afterTakeback[i],
        everyWindow: everyWindow[i],
      });
      const problems = demoProblems({ long: a.long, ipv4: run(0), ipv6: run(1) });
      for (const d of [takeover, takeback]) {
        for (const [family, c] of [
          ['IPv4', d.client],
          ['IPv6', d.ipv6.client],
        ] as const)
          if (c.http.resets > 0)
            problems.push(`${family} ${d.event}: ${c.http.resets} keep-alive HTTP connections reset`);
      }
      const ok = problems.length === 0;
      const family = (i: number, client: (d: DualDrill) => OutageReport) => ({
        http: { before: before[i], duringTakeover: during[i], afterTakeback: after[i] },
        longLived: { count: a.long, perTarget: steady[i].long.perTarget },
        takeover: { client: client(takeover), ...loadFigures(afterTakeover[i]) },
        takeback: { client: client(takeback), ...loadFigures(afterTakeback[i]) },
      });
      const v4 = family(0, (d) => d.client);
      const v6 = family(1, (d) => d.ipv6.client);
      const report = {
        ...v4,
        takeover: { ms: takeover.settledMs, acquiredMs: takeover.acquiredMs, ...v4.takeover },
        takeback: { ms: takeback.settledMs, acquiredMs: takeback.acquiredMs, ...v4.takeback, drops: takebackDrops },
        ipv6: {
          dvipa: HA.dvipa6,
          ...v6,
          takeover: { acquiredMs: takeover.ipv6.acquiredMs, ...v6.takeover },
          takeback: { acquiredMs: takeback.ipv6.acquiredMs, ...v6.takeback },
        },
        problems,
      };
      if (a.json) out(`${JSON.stringify({ ok, ...report })}\n`);
      else {
        const dist = (c: Record<string, number>) =>
          Object.entries(c)
            .sort()
            .map(([k, v]) => `${k} ${v}`)
            .join(', ');
        const both = (c: Array<Record<string, number>>) => `${dist(c[0])}; IPv6: ${dist(c[1])}`;
        out('\nreport\n');
        out(`  HTTP, r1 routing:            ${both(before)}\n`);
        out(`  long-lived connections:      ${both(steady.map((x) => x.long.perTarget))}\n`);
        out(`  ${describeDrill(takeover)}`);
        for (const [name, f] of [
          ['', report],
          [', IPv6', report.ipv6],
        ] as const)
          out(
            `  takeover by r2${name}:${' '.repeat(14 - name.length)}${name ? '' : `${takeover.settledMs} ms; `}first new connection ${f.takeover.firstNewConnectionMs ?? '-'} ms after the failure; longest wait ${f.takeover.longestWaitMs} ms; ${f.takeover.reset} of ${a.long} long-lived connections reset; ${f.takeover.newFailed} new connections failed\n`,
          );
        out(`  HTTP, r2 routing (own list): ${both(during)}\n`);
        out(`  ${describeDrill(takeback)}`);
        out(
          `  takeback by r1:              ${takeback.settledMs} ms (readiness gate included); IPv4: ${report.takeback.reset} reset, ${report.takeback.newFailed} new connections failed; IPv6: ${report.ipv6.takeback.reset} reset, ${report.ipv6.takeback.newFailed} new connections failed; ${report.takeback.lost} TCP segments lost of ${report.takeback.retransmissions} retransmitted (both families)\n`,
        );
        out(`  HTTP, r1 routing again:      ${both(after)}\n`);
        for (const x of problems) out(`  FAILED: ${x}\n`);
        out(ok ? 'demo passed\n' : 'demo FAILED\n');
      }
      if (!ok) process.exitCode = EXIT.failed;
    } finally {
      spawner.teardown();
      if (ours && !a.keep) {
        await HaLab.clean(lab.state, a.dir);
        say('lab down');
      }
    }
  });
}

const common = <T>(y: Argv<T>) =>
  y
    .option('dir', {
      type: 'string',
      default: DEFAULT_LAB_DIR,
      describe: "the lab's state: processes, logs, control sockets",
    })
    .option('json', { type: 'boolean', describe: 'as JSON' });

export const labCommand = command({
  command: 'lab <action>',
  describe: 'the whole system on this machine: client, two routing nodes, three targets, etcd (network namespaces)',
  builder: (y) =>
    common(y)
      .command(
        'up',
        'bring the lab up and leave it running',
        (b) =>
          b.option('renew-ms', {
            type: 'number',
            describe: `the routing agents' renewal interval (agent --renew-ms; default ${DEFAULTS.renewMs})`,
          }),
        (a) => up(a),
      )
      .command(
        'status',
        'what runs, who routes the DVIPA, which targets listen',
        (b) => b,
        (a) => status(a),
      )
      .command(
        'demo',
        'traffic, distribution, takeover and takeback, with a report (the main job)',
        (b) =>
          b.option('keep', { type: 'boolean', describe: 'leave the lab up afterwards' }).option('long', {
            type: 'number',
            default: 100,
            describe: 'long-lived connections to each DVIPA (IPv4, IPv6) during the failover',
          }),
        (a) => demo(a),
      )
      .command(
        'failover',
        'kill the owner (r1) and watch r2 take over; again: bring r1 back for the takeback',
        (b) => b,
        (a) => failover(a),
      )
      .command(
        'down',
        'remove everything the lab made (also after a crash)',
        (b) => b,
        (a) => down(a),
      )
      .demandCommand(1, 'name an action: up, status, demo, failover or down'),
  handler: () => undefined,
});
