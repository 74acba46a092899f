/*
 * `dvipa lab up|status|demo|failover|down`: the whole system on one machine. `demo` is the
 * main job: it brings the lab up (unless it is), runs HTTP requests and long-lived
 * connections through the DVIPA, kills the primary routing node, shows the takeover and the
 * takeback with connection counts and timings, prints a report, and takes the lab down again
 * (unless it found it up, or --keep).
 */
import type { Argv } from 'yargs';
import { DEFAULT_LAB_DIR, HaLab, HTTP_PORT, LAB_PREFIX, LINE_PORT } from '../lab/ha-lab.js';
import { HA } from '../lab/ha-topology.js';
import { LoadClient, loadProblems, type LoadReport } from '../lab/procs.js';
import { failoverStep, startProbe, type Drill } from '../lab/drill.js';
import { Topology } from '../lab/netns.js';
import { command } from './command.js';
import { CliError, EXIT, requireRoot } from './errors.js';

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

async function up(a: Args): Promise<void> {
  await lab(async () => {
    if (!a.json) out('dvipa lab: bringing up\n');
    const l = await HaLab.up(a.dir, progress(a.json));
    if (a.json) out(`${JSON.stringify(l.state)}\n`);
    else
      out(
        `up: DVIPA ${HA.dvipa} (HTTP :80, line protocol :${LINE_PORT}) routed by r1, backed up by r2; etcd ${l.state.etcd}\n  netstat: dvipa netstat vdpt --socket ${l.socket('r1')}\n`,
      );
  });
}

async function status(a: Args): Promise<void> {
  await lab(async () => {
    const l = opened(a.dir);
    const routers = await Promise.all(
      HA.routers.map(async (r) => ({ node: r.name, holdsAddress: l.holds(r.name), vipadyn: await l.vipadyn(r.name) })),
    );
    const owner = routers.find((r) => r.vipadyn?.status === 'Active');
    const vdpt = owner ? await l.vdpt(owner.node) : undefined;
    const s = {
      dir: a.dir,
      up: l.state.up,
      etcd: l.state.etcd,
      processes: l.processes(),
      routers,
      targets: vdpt?.map((r) => ({ port: r.port, target: r.target, ready: r.ready, active: r.activeConn })),
    };
    if (a.json) return out(`${JSON.stringify(s)}\n`);
    out(`lab up since ${s.up}, state in ${s.dir}, etcd ${s.etcd}\n`);
    out(`processes: ${s.processes.map((p) => `${p.name}${p.running ? '' : ' (NOT RUNNING)'}`).join(' ')}\n`);
    for (const r of routers)
      out(
        `${r.node}: ${r.vipadyn ? `${r.vipadyn.status.toUpperCase()} epoch ${r.vipadyn.epoch || '-'} owner ${r.vipadyn.owner ?? '-'}` : 'agent not answering'}${r.holdsAddress ? `, holds ${HA.dvipa}` : ''}\n`,
      );
    for (const t of s.targets ?? [])
      out(`  port ${t.port} ${t.target}: ${t.ready ? 'listening' : 'NOT LISTENING'}, ${t.active} active connections\n`);
  });
}

function describeDrill(d: Drill): string {
  const c = d.client;
  const who =
    d.event === 'takeover'
      ? 'r1 died (links down, then agent killed): r2 took over'
      : 'r1 back (links up, agent started): it took the DVIPA back';
  return (
    `${who}\n` +
    `    client: longest ping gap ${c.ping.longestGapMs} ms (10 ms pings); keep-alive HTTP: longest wait ${c.http.longestWaitMs} ms, ` +
    `${c.http.failed} of ${c.http.requests + c.http.failed} requests failed, ${c.http.resets} resets; new connections: ${c.fresh.failed} of ${c.fresh.ok + c.fresh.failed} failed\n` +
    `    control plane: DVIPA acquired after ${d.acquiredMs ?? '-'} ms; new owner alone on the address after ${d.settledMs} ms (polled)\n`
  );
}

async function failover(a: Args): Promise<void> {
  await lab(async () => {
    const l = opened(a.dir);
    const spawner = new Topology(LAB_PREFIX);
    try {
      const r = await failoverStep(l, await startProbe(spawner, l.state.ns.client, HTTP_PORT));
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

export interface DemoRun {
  long: number;
  http: Record<'before' | 'duringTakeover' | 'afterTakeback', Record<string, number>>;
  takeover: LoadReport;
  takeback: LoadReport;
  /** Problems of every window of the load client (new connections failed or never ended), the idle ones included. */
  everyWindow: string[];
}

/**
 * Why the demo failed, or nothing: what the README says it shows. r1 spreads HTTP over all
 * three targets and r2 by its own list (t1, t2); through the takeover and the takeback no
 * long-lived connection is reset, closed or left silent and no new connection fails or hangs;
 * the takeback costs not one TCP retransmission.
 */
export function demoProblems(d: DemoRun): string[] {
  const targets = (c: Record<string, number>) => Object.keys(c).sort().join(' ');
  const p: string[] = [];
  const http = (got: Record<string, number>, want: string, through: string) => {
    if (targets(got) !== want) p.push(`HTTP through ${through} answered by ${targets(got)}, not ${want}`);
  };
  http(d.http.before, 't1 t2 t3', 'r1');
  http(d.http.duringTakeover, 't1 t2', 'r2 (its own list)');
  http(d.http.afterTakeback, 't1 t2 t3', 'r1 again');
  p.push(...loadProblems(d.takeover, { long: d.long }).map((x) => `takeover: ${x}`));
  p.push(...loadProblems(d.takeback, { long: d.long, retransmissions: false }).map((x) => `takeback: ${x}`));
  p.push(...d.everyWindow);
  return [...new Set(p)];
}

async function demo(a: Args & { keep?: boolean; long: number }): Promise<void> {
  await lab(async () => {
    const say = progress(a.json);
    let l = HaLab.open(a.dir);
    const ours = !l;
    if (!a.json) out('dvipa lab demo\n');
    if (!l) l = await HaLab.up(a.dir, say);
    const spawner = new Topology(LAB_PREFIX);
    try {
      say('HTTP requests through the DVIPA, each on a new connection');
      const before = await l.httpRound(30);
      say(`${a.long} long-lived connections (a line every 100 ms) and 20 new connections a second`);
      const load = await LoadClient.start(spawner, l.state.ns.client, {
        host: HA.dvipa,
        port: LINE_PORT,
        long: a.long,
        intervalMs: 100,
        newPerSec: 20,
      });
      await load.mark('steady');
      await sleep(1000);
      const steady = await load.report();
      const probe = await startProbe(spawner, l.state.ns.client, HTTP_PORT);
      say('r1 dies: both links down at one instant, then its agent killed');
      const takeover = await failoverStep(l, probe, [load]);
      await load.allAnswering(15000);
      const afterTakeover = await load.close();
      // The new owner distributes as the old one did for 3 s; then by its own list.
      await sleep(3000);
      const during = await l.httpRound(30);
      say('bringing r1 back');
      const takeback = await failoverStep(l, probe, [load]);
      await sleep(3000);
      await load.allAnswering(15000);
      const afterTakeback = await load.close();
      const after = await l.httpRound(30);
      const everyWindow = await load.everyWindowProblems();
      load.stop();
      const lost = (r: LoadReport) => Object.values(r.long.closed).reduce((x, n) => x + n, 0);
      const problems = demoProblems({
        long: a.long,
        http: { before, duringTakeover: during, afterTakeback: after },
        takeover: afterTakeover,
        takeback: afterTakeback,
        everyWindow,
      });
      for (const d of [takeover, takeback]) {
        if (d.client.http.resets > 0)
          problems.push(`${d.event}: ${d.client.http.resets} keep-alive HTTP connections reset`);
      }
      const ok = problems.length === 0;
      const report = {
        http: { before, duringTakeover: during, afterTakeback: after },
        longLived: { count: a.long, perTarget: steady.long.perTarget },
        takeover: {
          ms: takeover.settledMs,
          acquiredMs: takeover.acquiredMs,
          client: takeover.client,
          firstNewConnectionMs: afterTakeover.fresh.firstOkAfterMs,
          longestWaitMs: afterTakeover.long.maxWaitMs,
          allAnsweringMs: afterTakeover.long.allAnsweredAfterMs,
          reset: lost(afterTakeover),
          silent: afterTakeover.long.silentSinceWindow,
          newFailed: afterTakeover.fresh.failed,
          newPending: afterTakeover.fresh.pending,
          retransmissions: afterTakeover.retrans,
        },
        takeback: {
          ms: takeback.settledMs,
          acquiredMs: takeback.acquiredMs,
          client: takeback.client,
          reset: lost(afterTakeback),
          silent: afterTakeback.long.silentSinceWindow,
          newFailed: afterTakeback.fresh.failed,
          newPending: afterTakeback.fresh.pending,
          retransmissions: afterTakeback.retrans,
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
        out('\nreport\n');
        out(`  HTTP, r1 routing:            ${dist(before)}\n`);
        out(`  long-lived connections:      ${dist(steady.long.perTarget)}\n`);
        out(`  ${describeDrill(takeover)}`);
        out(
          `  takeover by r2:              ${takeover.settledMs} ms; first new connection ${report.takeover.firstNewConnectionMs ?? '-'} ms after the failure; longest wait ${report.takeover.longestWaitMs} ms; ${report.takeover.reset} of ${a.long} long-lived connections reset; ${report.takeover.newFailed} new connections failed\n`,
        );
        out(`  HTTP, r2 routing (own list): ${dist(during)}\n`);
        out(`  ${describeDrill(takeback)}`);
        out(
          `  takeback by r1:              ${takeback.settledMs} ms (readiness gate included); ${report.takeback.reset} reset; ${report.takeback.newFailed} new connections failed; ${report.takeback.retransmissions} TCP retransmissions\n`,
        );
        out(`  HTTP, r1 routing again:      ${dist(after)}\n`);
        for (const x of problems) out(`  FAILED: ${x}\n`);
        out(ok ? 'demo passed\n' : 'demo FAILED\n');
      }
      if (!ok) process.exitCode = EXIT.failed;
    } finally {
      spawner.teardown();
      if (ours && !a.keep) {
        await HaLab.clean(l.state, a.dir);
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
        (b) => b,
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
          b
            .option('keep', { type: 'boolean', describe: 'leave the lab up afterwards' })
            .option('long', { type: 'number', default: 100, describe: 'long-lived connections during the failover' }),
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
