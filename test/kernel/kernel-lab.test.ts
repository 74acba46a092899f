/*
 * What this machine's kernel cannot do, in the kernel lab (scripts/kernel-lab: Debian's stock
 * 6.1 kernel in qemu under TCG, the host root shared read-only): ESP SAs installed and dumped
 * back through dvipa's XFRM netlink and their events, ESP carried through a takeover and a
 * takeback by the agents (SAs re-installed from etcd), and pktgen driven by `dvipa bench
 * traffic` on a veth. In the same boot, the data path's own tests on Debian 12's stock kernel.
 * There (DVIPA_KERNEL_LAB=1) a test that finds no ESP fails instead of skipping: every test of
 * these files must pass, none may skip. Then IKE continuity with three real charons
 * (test/ipsec-ike.test.ts). All in one boot: the first test boots the lab, and each test
 * checks its group's part of the console. The last tests try the lab's own failure paths: a
 * guest that does not come up, a command that outruns its time, bad options.
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
/**
 * What the lab runs, in one boot (a boot and its module loads cost about 20 s each), one group
 * after another, each within its limit in emulated seconds (about three times its usual time on
 * a CI machine): a group that hangs is stopped with its output kept, and the next groups still run.
 */
const GROUPS: Record<string, { cmd: string; limit: number }> = {
  esp: {
    cmd: [NODE, '--test', '--test-concurrency=1', ...FILES.map((f) => `dist/test/kernel/${f}.test.js`)].join(' '),
    limit: 1200,
  },
  pktgen: {
    cmd: [
      'ip link add pg0 type veth peer name pg1 && ip link set pg0 up && ip link set pg1 up',
      `${NODE} dist/src/cli/main.js bench traffic --generator pktgen --device pg0 --dst-mac $(cat /sys/class/net/pg1/address) --seconds 1 --rate 20000 --flows 100 --json`,
    ].join(' && '),
    limit: 120,
  },
  // One file: run as a script (node:test reports and sets the exit status the same), not under a
  // `node --test` runner, a second node process whose start costs seconds of emulated CPU.
  ike: { cmd: `${NODE} dist/test/kernel/ipsec-ike.test.js`, limit: 600 },
};
const MARK = '@@kernel-lab';
const LAB = path.join(ROOT, 'scripts', 'kernel-lab');
/** How long the guest may take to come up, each of the (at most) two boots. */
const BOOT_LIMIT = 120;
/** The lab's whole budget: every group's limit and two boots. */
const BUDGET = Object.values(GROUPS).reduce((sum, g) => sum + g.limit, 0) + 2 * BOOT_LIMIT;
/** For bash: a word in single quotes. */
const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

/** Each group's output, exit status and emulated seconds, from the one boot (run at the first ask). */
let booted: Map<string, { code: number; out: string; seconds?: number }> | undefined;
/** What scripts/kernel-lab said of the boots (how long one took, a second boot, a timeout), for the diagnostics. */
let bootNotes: string[] = [];
function lab(group: string): { code: number; out: string; seconds?: number } {
  if (!booted) {
    // Each group in a process group of its own under timeout (124 when stopped), its output
    // between markers (with the time), whatever the others did.
    const script = Object.entries(GROUPS)
      .map(
        ([name, { cmd, limit }]) =>
          `echo ${MARK} begin ${name} $(date +%s); timeout -k 10 ${limit} bash -c ${quote(cmd)} 2>&1; rc=$?; echo; echo ${MARK} end ${name} $rc $(date +%s)`,
      )
      .join('; ');
    const r = spawnSync(
      LAB,
      ['--timeout', String(BUDGET), '--boot-timeout', String(BOOT_LIMIT), '--', 'bash', '-c', script],
      { cwd: ROOT, encoding: 'utf8', timeout: (BUDGET + 300) * 1000 },
    );
    const all = `${r.stdout}${r.stderr}`;
    bootNotes = (r.stderr ?? '').split('\n').filter((l) => l.startsWith('kernel-lab: '));
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
  for (const l of bootNotes) t.diagnostic(l);
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

test('kernel lab: a guest that does not come up is booted once more, then reported with its console', () => {
  requireRoot();
  // No boot takes 3 s under TCG (8-20 s): both boots are stopped before the guest is up.
  const r = spawnSync(LAB, ['--boot-timeout', '3', '--', 'true'], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 120_000,
  });
  assert.equal(r.status, 125, r.stderr);
  assert.equal(
    r.stderr.match(/did not come up within 3 s\nkernel-lab: the console's last lines:\n/g)?.length,
    2,
    r.stderr,
  );
  assert.match(r.stderr, /booting again/, r.stderr);
});

test("kernel lab: a command that outruns --timeout ends in 124, with what it printed and the console's tail", () => {
  requireRoot();
  // 60 s: room for a boot on a loaded machine (8-20 s) and the command's first line.
  const r = spawnSync(LAB, ['--timeout', '60', '--', 'sh', '-c', 'echo still here; sleep 600'], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 180_000,
  });
  assert.equal(r.status, 124, `${r.stdout}${r.stderr}`);
  assert.match(r.stdout, /^still here$/m, r.stdout);
  assert.match(
    r.stderr,
    /timed out after 60 s \(the guest up after \d+ s\)\nkernel-lab: the console's last lines:\n[\s\S]*still here/,
    r.stderr,
  );
});

test('kernel lab: bad options are refused, each with its reason, before anything boots', () => {
  requireRoot();
  const cases: Array<[string[], RegExp]> = [
    [['--timeout', 'soon', '--', 'true'], /take a whole number from 1 to 999999, not 'soon'/],
    [['--boot-timeout', '0', '--', 'true'], /take a whole number from 1 to 999999, not '0'/],
    [['--memory'], /take a whole number from 1 to 999999, not ''/],
    [['--'], /no command/],
    [['--fast', '--', 'true'], /unknown option --fast/],
  ];
  for (const [args, reason] of cases) {
    const r = spawnSync(LAB, args, { cwd: ROOT, encoding: 'utf8' });
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`^kernel-lab: .*${reason.source}`), `${args.join(' ')}: ${r.stderr}`);
    // Refused before qemu starts: no firmware banner, no console tail.
    assert.doesNotMatch(r.stderr, /SeaBIOS|the console's last lines/, `${args.join(' ')}: ${r.stderr}`);
  }
});
