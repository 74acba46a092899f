/*
 * `dvipa lab`: the demo (the README's main job) completes with traffic on all three targets
 * through both DVIPAs (IPv4 and IPv6),
 * a takeover within the documented time and a takeback, nothing lost (and its verdict fails when
 * something is: each of its conditions broken in turn); the lab comes up and goes down cleanly twice in a row (the demo's own
 * up/down, then up, status, down), leaving no namespace, pin, process or state behind.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ip } from '../../src/net/iproute.js';
import { HaLab, LAB_PREFIX } from '../../src/lab/ha-lab.js';
import { requireRoot } from '../helpers/env.js';
import { BOUND } from '../helpers/ha-figures.js';
import { demoProblems, type DemoRun, type FamilyRun } from '../../src/cli/lab.js';
import type { LoadReport } from '../../src/lab/procs.js';

const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.js');
const dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'dvipa-lab-test-')), 'state');

function dvipa(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(process.execPath, [CLI, 'lab', ...args, '--dir', dir], { timeout: 180000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ),
  );
}

function leftovers(pids: number[] = []): string[] {
  const alive = pids.filter((pid) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  });
  return [
    ...ip('netns', 'list')
      .split('\n')
      .filter((l) => l.startsWith(LAB_PREFIX)),
    ...fs.readdirSync('/sys/fs/bpf').filter((p) => p.startsWith(LAB_PREFIX)),
    ...(fs.existsSync(dir) ? [dir] : []),
    ...alive.map((p) => `pid ${p}`),
  ];
}

after(async () => {
  await HaLab.clean(HaLab.open(dir)?.state, dir);
  fs.rmSync(path.dirname(dir), { recursive: true, force: true });
});

test('dvipa lab demo: traffic on all three targets, a takeover and a takeback, nothing lost, nothing left', async (t) => {
  requireRoot();
  assert.deepEqual(leftovers(), [], 'a clean machine to start with');
  const r = await dvipa('demo', '--json', '--long', '50');
  // The report says why a failed demo failed: show it before any verdict.
  t.diagnostic(`lab demo: exit ${r.code}; ${r.stdout.trim()}`);
  assert.equal(r.code, 0, `${r.stderr}${r.stdout}`);
  interface Family {
    http: Record<string, Record<string, number>>;
    longLived: { count: number; perTarget: Record<string, number> };
    takeover: { firstNewConnectionMs: number; allAnsweringMs: number; reset: number; newFailed: number };
    takeback: {
      reset: number;
      newFailed: number;
      retransmissions: number;
      synRetransmissions: number;
      dvipaRetransmissions: number;
    };
  }
  const report = JSON.parse(r.stdout) as Family & { ok: boolean; problems: string[]; ipv6: Family & { dvipa: string } };
  assert.deepEqual(report.problems, []);
  assert.ok(report.ok);
  assert.equal(report.ipv6.dvipa, '2001:db8:0:2::10');
  for (const [family, f] of [
    ['IPv4', report],
    ['IPv6', report.ipv6],
  ] as const) {
    const spread = (c: Record<string, number>) => Object.keys(c).sort();
    assert.deepEqual(spread(f.http.before), ['t1', 't2', 't3'], `${family}: r1 spreads over all three targets`);
    assert.deepEqual(spread(f.http.duringTakeover), ['t1', 't2'], `${family}: r2 routes by its own list`);
    assert.deepEqual(spread(f.longLived.perTarget), ['t1', 't2', 't3'], `${family}: long-lived connections`);
    assert.equal(f.longLived.count, 50);
    // What the client saw, from the failure on (the window opens as r1's link goes down).
    assert.ok(
      f.takeover.firstNewConnectionMs <= BOUND.firstNewConnectionMs,
      `${family}: first new connection after ${f.takeover.firstNewConnectionMs} ms; bound ${BOUND.firstNewConnectionMs}`,
    );
    assert.ok(
      f.takeover.allAnsweringMs <= BOUND.allAnsweringMs,
      `${family}: long-lived connections answering after ${f.takeover.allAnsweringMs} ms; bound ${BOUND.allAnsweringMs}`,
    );
    // At the takeback, what the README says: no SYN retransmitted and no segment of the DVIPA's
    // open connections retransmitted. Segments of connections that ended within the window are
    // the namespace's, of both families and no connection: shown, not judged, as the verdict
    // (procs.ts lossProblems, since cf968b0); a CI run of 2026-12-03 had 3 such, none of the DVIPA's.
    assert.deepEqual(
      [
        f.takeover.reset,
        f.takeover.newFailed,
        f.takeback.reset,
        f.takeback.newFailed,
        f.takeback.synRetransmissions,
        f.takeback.dvipaRetransmissions,
      ],
      [0, 0, 0, 0, 0, 0],
      `${family} (takeback: ${f.takeback.retransmissions} segments retransmitted in the client's namespace)`,
    );
  }
  assert.deepEqual(leftovers(), [], 'the demo took its lab down');
});

test("the demo's verdict: each thing the README says it shows, when false, fails it", () => {
  const window = (
    over: Partial<LoadReport['long']> = {},
    fresh: Partial<LoadReport['fresh']> = {},
    retrans = 0,
    tcp = { syn: 0, dsack: 0 },
    dvipa = { retrans: 0, dsack: 0 },
  ): LoadReport => ({
    label: 'w',
    windowMs: 3000,
    retrans,
    tcp,
    dvipa,
    long: {
      total: 50,
      open: 50,
      closed: {},
      switched: 0,
      maxWaitMs: 1500,
      silentSinceWindow: 0,
      perTarget: { t1: 17, t2: 17, t3: 16 },
      allAnsweredAfterMs: 1500,
      ...over,
    },
    fresh: { ok: 40, failed: 0, pending: 0, errors: {}, names: { t1: 20, t2: 20 }, firstOkAfterMs: 1000, ...fresh },
  });
  const fine: FamilyRun = {
    http: {
      before: { t1: 10, t2: 10, t3: 10 },
      duringTakeover: { t1: 15, t2: 15 },
      afterTakeback: { t1: 10, t2: 10, t3: 10 },
    },
    takeover: window({}, {}, 12),
    takeback: window(),
    everyWindow: [],
  };
  const good: DemoRun = { long: 50, ipv4: fine, ipv6: fine };
  assert.deepEqual(demoProblems(good), [], 'retransmissions during a takeover are TCP doing its job');
  const delayed = { ...fine, takeback: window({}, {}, 5, { syn: 0, dsack: 5 }, { retrans: 5, dsack: 5 }) };
  assert.deepEqual(
    demoProblems({ ...good, ipv6: delayed }),
    [],
    'retransmissions at the takeback whose originals arrived (D-SACKed) were delays, not losses',
  );
  const ended = { ...fine, takeback: window({}, {}, 4, { syn: 0, dsack: 0 }, { retrans: 0, dsack: 0 }) };
  assert.deepEqual(
    demoProblems({ ...good, ipv4: ended, ipv6: ended }),
    [],
    'segments of connections that ended within the window are shown, not judged',
  );
  const bad: Array<[string, Partial<FamilyRun>, RegExp]> = [
    [
      'two targets before',
      { http: { ...fine.http, before: { t1: 15, t2: 15 } } },
      /HTTP through r1 answered by t1 t2,/,
    ],
    ['r2 not by its own list', { http: { ...fine.http, duringTakeover: { t1: 10, t2: 10, t3: 10 } } }, /its own list/],
    [
      'an HTTP error',
      { http: { ...fine.http, afterTakeback: { t1: 10, t2: 10, t3: 9, 'error:ECONNRESET': 1 } } },
      /r1 again answered by error:ECONNRESET t1 t2 t3/,
    ],
    [
      'a reset',
      { takeover: window({ open: 49, closed: { ECONNRESET: 1 } }) },
      /takeover: long-lived connections reset or closed: 1 ECONNRESET/,
    ],
    [
      'silent connections (allAnswering timed out)',
      { takeover: window({ silentSinceWindow: 3, allAnsweredAfterMs: undefined }) },
      /takeover: 3 long-lived connections silent/,
    ],
    [
      'a failed new connection',
      { takeover: window({}, { failed: 1, errors: { timeout: 1 } }) },
      /takeover: w: 1 new connections failed/,
    ],
    [
      'a pending new connection',
      { takeback: window({}, { pending: 2 }) },
      /takeback: w: 2 new connections still pending/,
    ],
    [
      'a segment lost at the takeback',
      { takeback: window({}, {}, 3, { syn: 0, dsack: 2 }, { retrans: 3, dsack: 2 }) },
      /takeback: 1 TCP segments lost on this DVIPA's open connections \(1 in the namespace\)/,
    ],
    [
      'a SYN retransmitted at the takeback (never D-SACKed)',
      { takeback: window({}, {}, 1, { syn: 1, dsack: 0 }) },
      /takeback: 1 SYNs retransmitted/,
    ],
    [
      'a failure in another window',
      { everyWindow: ['after: 1 new connections failed ({"ECONNREFUSED":1})'] },
      /after: 1 new connections failed/,
    ],
  ];
  // Each broken in the IPv4 run, then in the IPv6 one: the problem names its family.
  for (const family of ['ipv4', 'ipv6'] as const)
    for (const [what, change, why] of bad) {
      const p = demoProblems({ ...good, [family]: { ...fine, ...change } });
      const named = new RegExp(`^${family === 'ipv4' ? 'IPv4' : 'IPv6'} .*${why.source}`);
      assert.ok(
        p.some((x) => named.test(x)),
        `${family}, ${what}: ${p.join('; ')}`,
      );
    }
});

test('dvipa lab up, status, failover, down (its state removed by hand first): a second clean cycle; errors say what to do', async () => {
  requireRoot();
  const notUp = await dvipa('status');
  assert.equal(notUp.code, 1);
  assert.match(notUp.stderr, /the lab is not up .*'dvipa lab up' first/);

  const up = await dvipa('up', '--json');
  assert.equal(up.code, 0, up.stderr);
  const pids = Object.values((JSON.parse(up.stdout) as { pids: Record<string, number> }).pids);
  assert.ok(pids.length >= 10, 'servers, etcd and five agents');
  try {
    const again = await dvipa('up');
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already up .*'dvipa lab down' first/);
    const status = JSON.parse((await dvipa('status', '--json')).stdout) as {
      routers: Array<{
        node: string;
        holdsAddress: boolean;
        vipadyn: { status: string };
        holdsAddress6: boolean;
        vipadyn6: { status: string };
      }>;
      targets: Array<{ dvipa: string; ready: boolean }>;
      processes: Array<{ running: boolean }>;
    };
    assert.deepEqual(
      status.routers.map((r) => [r.node, r.vipadyn.status, r.holdsAddress, r.vipadyn6.status, r.holdsAddress6]),
      [
        ['r1', 'Active', true, 'Active', true],
        ['r2', 'Backup', false, 'Backup', false],
      ],
    );
    assert.ok(
      status.targets.length === 12 && status.targets.every((x) => x.ready),
      'two DVIPAs, three targets, two ports, all listening',
    );
    assert.deepEqual([...new Set(status.targets.map((x) => x.dvipa))], ['192.0.2.10', '2001:db8:0:2::10']);
    const text = await dvipa('status');
    assert.match(
      text.stdout,
      /r1: 192\.0\.2\.10 ACTIVE .*holds the address; 2001:db8:0:2::10 ACTIVE .*holds the address/,
    );
    assert.ok(status.processes.every((p) => p.running));
    const over = JSON.parse((await dvipa('failover', '--json')).stdout) as {
      event: string;
      ipv6: { acquiredMs?: number; client: { ping: { replies: number } } };
    };
    assert.equal(over.event, 'takeover');
    // acquiredMs comes from the agents' info logs (absent under DVIPA_LOG_LEVEL=warn): printed, not asserted.
    assert.ok(over.ipv6.client.ping.replies > 0, JSON.stringify(over.ipv6));
  } finally {
    // The state lost (removed by hand): down still finds the lab's processes, in its namespaces.
    fs.rmSync(path.join(dir, 'state.json'), { force: true });
    const down = await dvipa('down');
    assert.equal(down.code, 0, down.stderr);
    assert.match(down.stdout, /lab down: removed .*processes found in its namespaces, \d+ namespaces/);
  }
  assert.deepEqual(leftovers(pids), [], 'nothing left: namespaces, pins, state, processes');
  const twice = await dvipa('down');
  assert.equal(twice.code, 0);
  assert.match(twice.stdout, /nothing to remove/);
});
