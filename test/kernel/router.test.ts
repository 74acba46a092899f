/*
 * A routing node's tables around a change of owner, on a real data plane (scratch pins):
 * whose distribution the Maglev table follows once another node owns the DVIPA, and when a
 * takeback may be claimed (RoutingRole.prepared, which lets the renewal thread announce the
 * address as soon as the old owner releases it). r1 distributes to t1, t2 and t3; its backup
 * r2 to t1 and t2, so a table that still follows r1 sends a third of r2's connections to t3.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { RoutingRole } from '../../src/cluster/router.js';
import { planDvipas, type DvipaPlan } from '../../src/cluster/roles.js';
import { parseProfile } from '../../src/config/profile.js';
import type { ClusterConfig } from '../../src/config/model.js';
import { FENCE_EXPIRED } from '../../src/dataplane/structs.js';
import type { Service } from '../../src/net/service.js';
import { log } from '../../src/log.js';
import { openRoutingNode, type RoutingNode } from '../helpers/routing-node.js';
import { requireRoot } from '../helpers/env.js';
import { waitFor } from '../helpers/wait.js';

const VIP = '192.0.2.10';
const TARGETS = ['198.18.1.11', '198.18.1.12', '198.18.1.13'];
const web: Service = { vip: VIP, port: 80, protocol: 'tcp' };

const CONFIG = [
  'NODE r1 XCF 198.18.1.1',
  'VIPADYNAMIC',
  '  VIPADEFINE 255.255.255.255 192.0.2.10',
  `  VIPADISTRIBUTE 192.0.2.10 PORT 80 DESTIP ${TARGETS.join(' ')}`,
  'ENDVIPADYNAMIC',
  'NODE r2 XCF 198.18.1.2',
  'VIPADYNAMIC',
  '  VIPABACKUP 100 192.0.2.10',
  `  VIPADISTRIBUTE 192.0.2.10 PORT 80 DESTIP ${TARGETS.slice(0, 2).join(' ')}`,
  'ENDVIPADYNAMIC',
  ...TARGETS.map((t, i) => `NODE t${i + 1} XCF ${t}`),
  '',
].join('\n');

let node: RoutingNode;
let cfg: ClusterConfig;
let plan: DvipaPlan;
const roles: RoutingRole[] = [];

before(() => {
  requireRoot();
  cfg = parseProfile(CONFIG, 'router.test');
  plan = planDvipas(cfg).get(VIP)!;
  node = openRoutingNode('rt', { targets: TARGETS, crtMaxEntries: 4096 });
});

after(() => {
  for (const r of roles) r.stop();
  node?.close();
});

/** r1's routing role on the scratch data plane, every target listening and synced, owning the DVIPA under `epoch`. */
function ownerR1(epoch: number): RoutingRole {
  const role = new RoutingRole(
    node.fp,
    cfg.nodes.find((n) => n.name === 'r1')!,
    cfg,
    { isConnected: () => true, fencing: true },
    log.child({ test: 'router' }),
  );
  roles.push(role);
  role.route(plan);
  TARGETS.forEach((xcf, i) => {
    role.onSrvStat(`t${i + 1}`, xcf, { full: true, up: [{ dvipa: VIP, port: 80, protocol: 'tcp' }], down: [] });
    role.onConns(xcf, { full: true, added: [], removed: [] });
  });
  role.follow(VIP, 'r1');
  role.own(VIP, epoch);
  return role;
}

/** The targets the service's Maglev table holds now. */
function tableTargets(): string[] {
  const id = node.fp.serviceId(web)!;
  return TARGETS.filter((t) => node.fp.targetIndexOf(id, t) !== 0);
}

test('a node back from the dead follows the new owner at once: a takeback finds the owner’s table', async () => {
  const role = ownerR1(1);
  assert.deepEqual(tableTargets(), TARGETS, 'r1 distributes by its own list while it owns the DVIPA');
  // Its pinned fence ran out while it was dead; etcd says r2 owns the DVIPA now.
  node.fp.setFence(VIP, FENCE_EXPIRED);
  role.follow(VIP, 'r2');
  await role.disown(VIP);
  await waitFor('the takeback to be prepared', () => role.prepared(VIP), 3000, tableTargets);
  assert.deepEqual(tableTargets(), TARGETS.slice(0, 2), "prepared means r2's table: t3 holds no slot");
  role.stop();
});

test('a living owner replaced drains with its own table, and claims nothing back while it drains', async () => {
  const role = ownerR1(2);
  // Its fence runs: the renewal thread turns it into a drain (here: a deadline 10 s away).
  node.fp.setFence(VIP, process.hrtime.bigint() + 10_000_000_000n);
  role.follow(VIP, 'r2');
  await role.disown(VIP);
  // Longer than a table push (100 ms): nothing may follow r2 meanwhile.
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(tableTargets(), TARGETS, 'what still reaches it goes where it sent it before');
  assert.equal(role.prepared(VIP), false, 'a takeback now would announce the address over its own table');
  role.stop();
});
