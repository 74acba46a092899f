/*
 * What this machine's kernel cannot do, in the kernel lab (scripts/kernel-lab: Debian's stock
 * 6.1 kernel in qemu under TCG, the host root shared read-only): ESP SAs installed and dumped
 * back through dvipa's XFRM netlink and their events, ESP carried through a takeover and a
 * takeback by the agents (SAs re-installed from etcd), and pktgen driven by `dvipa bench
 * traffic` on a veth. In the same boot, the data path's own tests on Debian 12's stock kernel.
 * There (DVIPA_KERNEL_LAB=1) a test that finds no ESP fails instead of skipping: every test of
 * these files must pass, none may skip. Then IKE continuity with three real charons
 * (test/ipsec-ike.test.ts). All in one boot: the first test boots the lab, and each test
 * checks its group's part of the console.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { ROOT } from '../../src/kernel/paths.js';
import { requireRoot } from '../helpers/env.js';

const NODE = process.execPath;
/**
 * Every test file with an ESP branch (skipped on this machine), and the data path's and socket
 * events' own. Not layout.test.ts: it compares the codecs with the BTF of the compiled objects,
 * the same files under any kernel (the kernel's own layouts are xfrm.test.ts's first test).
 */
const FILES = [
  'xfrm',
  'xfrm-events',
  'ipsec-failover',
  'ipsec-reinstall',
  'testrun',
  'testrun6',
  'dataplane',
  // The socket-event program reads the socket's namespace through CO-RE: proven on 6.1 too.
  'sockevents',
];
/** What the lab runs, in one boot (a boot and its module loads cost about 20 s each), one group after another. */
const GROUPS: Record<string, string> = {
  esp: [NODE, '--test', '--test-concurrency=1', ...FILES.map((f) => `dist/test/kernel/${f}.test.js`)].join(' '),
  pktgen: [
    'ip link add pg0 type veth peer name pg1 && ip link set pg0 up && ip link set pg1 up',
    `${NODE} dist/src/cli/main.js bench traffic --generator pktgen --device pg0 --dst-mac $(cat /sys/class/net/pg1/address) --seconds 1 --rate 20000 --flows 100 --json`,
  ].join(' && '),
  // One file: run as a script (node:test reports and sets the exit status the same), not under a
  // `node --test` runner, a second node process whose start costs seconds of emulated CPU.
  ike: `${NODE} dist/test/kernel/ipsec-ike.test.js`,
};
const MARK = '@@kernel-lab';

/** Each group's output, exit status and emulated seconds, from the one boot (run at the first ask). */
let booted: Map<string, { code: number; out: string; seconds?: number }> | undefined;
function lab(group: string): { code: number; out: string; seconds?: number } {
  if (!booted) {
    // Each group in a subshell, its output between markers (with the time), whatever the others did.
    const script = Object.entries(GROUPS)
      .map(
        ([name, cmd]) =>
          `echo ${MARK} begin ${name} $(date +%s); (${cmd}) 2>&1; rc=$?; echo; echo ${MARK} end ${name} $rc $(date +%s)`,
      )
      .join('; ');
    const r = spawnSync(path.join(ROOT, 'scripts', 'kernel-lab'), ['--timeout', '2400', '--', 'bash', '-c', script], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 2_500_000,
    });
    const all = `${r.stdout}${r.stderr}`;
    booted = new Map();
    for (const name of Object.keys(GROUPS)) {
      const m = new RegExp(`^${MARK} begin ${name} (\\d+)$([\\s\\S]*?)^${MARK} end ${name} (\\d+) (\\d+)$`, 'm').exec(
        all,
      );
      // A group that never ended (the boot failed or timed out): the whole console says why.
      booted.set(
        name,
        m
          ? { code: Number(m[3]), out: m[2], seconds: Number(m[4]) - Number(m[1]) }
          : { code: r.status ?? -1, out: all },
      );
    }
  }
  return booted.get(group)!;
}
/** How long a group ran in the lab: emulated time, for whoever makes the lab faster. */
const took = (name: string, r: { seconds?: number }) => `${name}: ${r.seconds ?? '?'} s in the lab (TCG)`;

test('kernel lab: ESP SAs and their events, ESP through a takeover and a takeback, the data path, on the stock kernel', (t) => {
  requireRoot();
  const r = lab('esp');
  t.diagnostic(took('esp and the data path', r));
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /ESP SA installed through XFRM netlink and dumped back field for field/, r.out);
  assert.match(r.out, /ESP SA events received and decoded/, r.out);
  const failover = r.out.split('\n').filter((l) => /takeover: SAs re-installed|takeback: pings|ESP failover:/.test(l));
  for (const l of failover) t.diagnostic(l.replace(/^\W+/, ''));
  // The lab's console is a terminal: node's spec reporter (ℹ), or TAP (#) elsewhere.
  const count = (what: string) => Number(new RegExp(`^\\W*(?:#|ℹ) ${what} (\\d+)$`, 'm').exec(r.out)?.[1]);
  t.diagnostic(`kernel lab: ${count('tests')} tests, ${count('pass')} passed, ${count('skipped')} skipped`);
  // Where the lab's minutes go, for whoever makes it faster: its slowest tests (spec reporter: ✔ name (ms)).
  const slowest = [...r.out.matchAll(/^\W*[✔✖] (.+) \(([\d.]+)ms\)$/gmu)]
    .map((m) => ({ name: m[1], s: Number(m[2]) / 1000 }))
    .sort((x, y) => y.s - x.s)
    .slice(0, 8);
  for (const x of slowest) t.diagnostic(`lab: ${x.s.toFixed(1)} s ${x.name.slice(0, 100)}`);
  assert.ok(count('tests') >= 40, r.out);
  assert.deepEqual(
    [count('pass') + count('todo'), count('fail'), count('skipped'), count('todo'), count('cancelled')],
    [count('tests'), 0, 0, 0, 0],
    r.out,
  );
});

test('kernel lab: pktgen sends through a veth; dvipa bench traffic --generator pktgen reads its result', (t) => {
  requireRoot();
  const r = lab('pktgen');
  t.diagnostic(took('pktgen', r));
  assert.equal(r.code, 0, r.out);
  const json = JSON.parse(r.out.slice(r.out.indexOf('{'), r.out.lastIndexOf('}') + 1)) as {
    generator: string;
    results: Array<{ device: string; packets: number; pps: number; errors: number }>;
  };
  assert.equal(json.generator, 'pktgen');
  assert.equal(json.results[0].device, 'pg0@0');
  // A rate makes a counted run (rate x seconds), which ends by itself: all of it sent, none faster than the rate.
  const [r0] = json.results;
  assert.ok(r0.packets === 20000 && r0.errors === 0 && r0.pps <= 22000, JSON.stringify(json));
});

test('kernel lab: IKE continuity with three real charons: the new owner renegotiates, the peer holds one IKE SA, no replay', (t) => {
  requireRoot();
  const r = lab('ike');
  t.diagnostic(took('IKE', r));
  assert.equal(r.code, 0, r.out);
  const figures = r.out
    .split('\n')
    .filter((l) => /takeover: SAs re-installed|takeback: pings|peer xfrm_stat|IKE continuity: \d+ replies/.test(l));
  assert.equal(figures.length, 5, r.out);
  for (const l of figures) t.diagnostic(l.replace(/^\W+/, ''));
  assert.doesNotMatch(r.out, /this kernel has no ESP/, 'the lab has ESP: the test ran, not skipped');
});
