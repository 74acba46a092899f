/* Roles from the configuration, and the DPT's distribution methods turning target state into weights. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseProfile } from '../../src/config/profile.js';
import { planDvipas, rolesOf } from '../../src/cluster/roles.js';
import { Dpt } from '../../src/tables/dpt.js';
import type { Destination, DistMethod } from '../../src/config/model.js';

const CLUSTER = parseProfile(`
NODE r1 XCF 10.1.0.1
VIPADynamic
  VIPADEFine 255.255.255.0 198.51.100.10
  VIPADISTribute 198.51.100.10 PORT 80 DESTIP 10.1.0.3 10.1.0.4
ENDVIPADynamic
NODE r2 XCF 10.1.0.2
VIPADynamic
  VIPABackup 100 198.51.100.10
  VIPADISTribute 198.51.100.10 PORT 80 DESTIP ALL
ENDVIPADynamic
NODE r5 XCF 10.1.0.5
VIPADynamic
  VIPABackup 100 198.51.100.10
ENDVIPADynamic
NODE t3 XCF 10.1.0.3
NODE t4 XCF 10.1.0.4
NODE t6 XCF 10.1.0.6
`);

test('each node knows, per DVIPA, whether it routes, backs up (in order) or is a candidate target', () => {
  const plan = planDvipas(CLUSTER).get('198.51.100.10')!;
  assert.equal(plan.routingNode, 'r1');
  assert.deepEqual(
    plan.backups,
    [
      { node: 'r2', rank: 100 },
      { node: 'r5', rank: 100 },
    ],
    'equal ranks: by name',
  );
  assert.equal(plan.distribute.length, 1);
  assert.deepEqual([...plan.backupDistribute.keys()], ['r2']);

  // r2's own list is DESTIP ALL: every node, the routing node included, is a candidate target.
  assert.deepEqual(rolesOf(CLUSTER, 'r1').get('198.51.100.10'), [{ kind: 'routing' }, { kind: 'target' }]);
  assert.deepEqual(rolesOf(CLUSTER, 'r2').get('198.51.100.10'), [
    { kind: 'backup', rank: 100, order: 1 },
    { kind: 'target' },
  ]);
  assert.deepEqual(rolesOf(CLUSTER, 'r5').get('198.51.100.10'), [
    { kind: 'backup', rank: 100, order: 2 },
    { kind: 'target' },
  ]);
  assert.deepEqual(rolesOf(CLUSTER, 't3').get('198.51.100.10'), [{ kind: 'target' }]);
  assert.deepEqual(
    rolesOf(CLUSTER, 't6').get('198.51.100.10'),
    [{ kind: 'target' }],
    'a target only through the backup list (ALL)',
  );
  assert.throws(() => rolesOf(CLUSTER, 'nobody'), /node nobody is not in the configuration/);
});

const dests = (...xs: Array<Partial<Destination> & { xcf: string }>): Destination[] => xs;

function dpt(method: DistMethod, destinations: Destination[]): Dpt {
  const d = new Dpt();
  d.define('s', { method, destinations });
  return d;
}

const w = (d: Dpt) => Object.fromEntries(d.weights('s').map((t) => [t.addr, t.weight]));

test('only targets with a listener get new connections; a weight is never negative', () => {
  const d = dpt({ name: 'roundrobin' }, dests({ xcf: 'a' }, { xcf: 'b' }, { xcf: 'c' }));
  assert.deepEqual(w(d), { a: 0, b: 0, c: 0 });
  d.update('s', 'a', { ready: true });
  d.update('s', 'c', { ready: true });
  assert.deepEqual(w(d), { a: 1, b: 0, c: 1 });
  assert.equal(d.update('s', 'zz', { ready: true }), false, 'a report from a non-candidate changes nothing');
  assert.equal(d.update('s', 'a', { ready: true }), false, 'no change, no update');
});

test('redefining a service keeps what its remaining targets reported', () => {
  const d = dpt({ name: 'roundrobin' }, dests({ xcf: 'a' }, { xcf: 'b' }));
  d.update('s', 'a', { ready: true, active: 5 });
  d.define('s', { method: { name: 'roundrobin' }, destinations: dests({ xcf: 'a' }, { xcf: 'c' }) });
  assert.deepEqual(d.targets('s'), [
    { xcf: 'a', ready: true, active: 5 },
    { xcf: 'c', ready: false, active: 0 },
  ]);
});

test('WEIGHTEDACTIVE: weights close the gap between active counts and the configured ratio', () => {
  const d = dpt({ name: 'weightedactive' }, dests({ xcf: 'a', weight: 30 }, { xcf: 'b', weight: 10 }));
  d.update('s', 'a', { ready: true });
  d.update('s', 'b', { ready: true });
  assert.deepEqual(w(d), { a: 75, b: 25 }, 'idle: the configured 3:1');
  d.update('s', 'a', { active: 0 });
  d.update('s', 'b', { active: 100 });
  const x = w(d);
  assert.ok(x.a > 10 * x.b, `b is far above its share: ${JSON.stringify(x)}`);
  d.update('s', 'a', { active: 300 });
  assert.deepEqual(w(d), { a: 75, b: 25 }, 'at the ratio: back to 3:1');
});

test('SERVERWLM: weights follow reported load; all saturated still serves', () => {
  const d = dpt({ name: 'serverwlm' }, dests({ xcf: 'a' }, { xcf: 'b' }));
  d.update('s', 'a', { ready: true, load: 0.2 });
  d.update('s', 'b', { ready: true, load: 0.9 });
  assert.deepEqual(w(d), { a: 80, b: 10 });
  d.update('s', 'b', { load: 1 });
  assert.deepEqual(w(d), { a: 80, b: 0 });
  d.update('s', 'a', { load: 1 });
  assert.deepEqual(w(d), { a: 1, b: 1 });
});

test('HOTSTANDBY: the preferred target, else the best ready backup; AUTOSWITCHBACK decides the return', () => {
  for (const autoSwitchBack of [true, false]) {
    const d = dpt(
      { name: 'hotstandby', autoSwitchBack, healthSwitch: true },
      dests(
        { xcf: 'p', role: 'preferred' },
        { xcf: 'b1', role: 'backup', rank: 10 },
        { xcf: 'b2', role: 'backup', rank: 50 },
      ),
    );
    for (const x of ['p', 'b1', 'b2']) d.update('s', x, { ready: true });
    assert.deepEqual(w(d), { p: 1, b1: 0, b2: 0 });
    d.update('s', 'p', { ready: false });
    assert.deepEqual(w(d), { p: 0, b1: 0, b2: 1 }, 'highest rank first');
    d.update('s', 'p', { ready: true });
    assert.deepEqual(
      w(d),
      autoSwitchBack ? { p: 1, b1: 0, b2: 0 } : { p: 0, b1: 0, b2: 1 },
      `autoSwitchBack ${autoSwitchBack}`,
    );
    d.update('s', 'b2', { ready: false });
    assert.deepEqual(w(d), { p: 1, b1: 0, b2: 0 }, 'the backup failed: back to the preferred target');
  }
});

test('BASEWLM: the same weights from the same load reports as SERVERWLM (one load per node in dvipa)', () => {
  const abc = () => dests({ xcf: 'a' }, { xcf: 'b' }, { xcf: 'c' });
  const [base, server] = (['basewlm', 'serverwlm'] as const).map((name) => dpt({ name }, abc()));
  for (const d of [base, server]) {
    for (const [x, load] of [
      ['a', 0.2],
      ['b', 0.7],
      ['c', 1],
    ] as const)
      d.update('s', x, { ready: true, load });
  }
  assert.deepEqual(w(base), { a: 80, b: 30, c: 0 });
  assert.deepEqual(w(base), w(server));
});

test('HOTSTANDBY HEALTHSWITCH: a saturated target (load 1) is left like a failed one; NOHEALTHSWITCH: listeners only', () => {
  for (const healthSwitch of [true, false]) {
    const pb = dests({ xcf: 'p', role: 'preferred' }, { xcf: 'b', role: 'backup', rank: 10 });
    const d = dpt({ name: 'hotstandby', autoSwitchBack: true, healthSwitch }, pb);
    for (const x of ['p', 'b']) d.update('s', x, { ready: true, load: 0 });
    assert.deepEqual(w(d), { p: 1, b: 0 });
    d.update('s', 'p', { load: 1 });
    assert.deepEqual(w(d), healthSwitch ? { p: 0, b: 1 } : { p: 1, b: 0 }, `healthSwitch ${healthSwitch}`);
    d.update('s', 'b', { load: 1 });
    assert.deepEqual(w(d), { p: 1, b: 0 }, 'none healthy: the listening preferred target rather than none');
    d.update('s', 'p', { load: 0.5 });
    assert.deepEqual(w(d), { p: 1, b: 0 }, 'healthy again: back to the preferred target (AUTOSWITCHBACK)');
  }
});
