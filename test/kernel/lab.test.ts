/*
 * `dvipa lab`: the demo (the README's main job) completes with traffic on all three targets,
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
import { demoProblems, type DemoRun } from '../../src/cli/lab.js';
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
  const report = JSON.parse(r.stdout) as {
    ok: boolean;
    problems: string[];
    http: Record<string, Record<string, number>>;
    takeover: { ms: number; firstNewConnectionMs: number; allAnsweringMs: number; reset: number; newFailed: number };
    takeback: { ms: number; reset: number; newFailed: number; retransmissions: number };
  };
  assert.deepEqual(report.problems, []);
  assert.ok(report.ok);
  assert.deepEqual(Object.keys(report.http.before).sort(), ['t1', 't2', 't3'], 'r1 spreads over all three targets');
  assert.deepEqual(Object.keys(report.http.duringTakeover).sort(), ['t1', 't2'], 'r2 routes by its own list');
  // What the client saw, from the failure on (the window opens as r1's link goes down).
  assert.ok(
    report.takeover.firstNewConnectionMs <= BOUND.firstNewConnectionMs,
    `first new connection after ${report.takeover.firstNewConnectionMs} ms; bound ${BOUND.firstNewConnectionMs}`,
  );
  assert.ok(
    report.takeover.allAnsweringMs <= BOUND.allAnsweringMs,
    `long-lived connections answering after ${report.takeover.allAnsweringMs} ms; bound ${BOUND.allAnsweringMs}`,
  );
  assert.deepEqual(
    [
      report.takeover.reset,
      report.takeover.newFailed,
      report.takeback.reset,
      report.takeback.newFailed,
      report.takeback.retransmissions,
    ],
    [0, 0, 0, 0, 0],
  );
  assert.deepEqual(leftovers(), [], 'the demo took its lab down');
});

test("the demo's verdict: each thing the README says it shows, when false, fails it", () => {
  const window = (
    over: Partial<LoadReport['long']> = {},
    fresh: Partial<LoadReport['fresh']> = {},
    retrans = 0,
  ): LoadReport => ({
    label: 'w',
    windowMs: 3000,
    retrans,
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
  const good: DemoRun = {
    long: 50,
    http: {
      before: { t1: 10, t2: 10, t3: 10 },
      duringTakeover: { t1: 15, t2: 15 },
      afterTakeback: { t1: 10, t2: 10, t3: 10 },
    },
    takeover: window({}, {}, 12),
    takeback: window(),
    everyWindow: [],
  };
  assert.deepEqual(demoProblems(good), [], 'retransmissions during a takeover are TCP doing its job');
  const bad: Array<[string, Partial<DemoRun>, RegExp]> = [
    [
      'two targets before',
      { http: { ...good.http, before: { t1: 15, t2: 15 } } },
      /HTTP through r1 answered by t1 t2,/,
    ],
    ['r2 not by its own list', { http: { ...good.http, duringTakeover: { t1: 10, t2: 10, t3: 10 } } }, /its own list/],
    [
      'an HTTP error',
      { http: { ...good.http, afterTakeback: { t1: 10, t2: 10, t3: 9, 'error:ECONNRESET': 1 } } },
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
    ['a takeback retransmission', { takeback: window({}, {}, 1) }, /takeback: 1 TCP retransmissions/],
    [
      'a failure in another window',
      { everyWindow: ['after: 1 new connections failed ({"ECONNREFUSED":1})'] },
      /after: 1 new connections failed/,
    ],
  ];
  for (const [what, change, why] of bad) {
    const p = demoProblems({ ...good, ...change });
    assert.ok(
      p.some((x) => why.test(x)),
      `${what}: ${p.join('; ')}`,
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
      routers: Array<{ node: string; holdsAddress: boolean; vipadyn: { status: string } }>;
      targets: Array<{ ready: boolean }>;
      processes: Array<{ running: boolean }>;
    };
    assert.deepEqual(
      status.routers.map((r) => [r.node, r.vipadyn.status, r.holdsAddress]),
      [
        ['r1', 'Active', true],
        ['r2', 'Backup', false],
      ],
    );
    assert.ok(
      status.targets.length === 6 && status.targets.every((x) => x.ready),
      'three targets, two ports, all listening',
    );
    assert.ok(status.processes.every((p) => p.running));
    const over = JSON.parse((await dvipa('failover', '--json')).stdout) as { event: string; ms: number };
    assert.equal(over.event, 'takeover');
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
