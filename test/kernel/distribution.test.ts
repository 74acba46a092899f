/*
 * The whole fast path on real namespaces (src/lab/fastpath-lab.ts): a client, a routing
 * node with the distributor on its external veth, three targets with the decap program
 * and the DVIPA on lo, each running a real TCP/UDP server. Real connections to DVIPA:port.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createFastpathLab, LAB, type FastpathLab } from '../../src/lab/fastpath-lab.js';
import type { ConnResult } from '../../src/lab/procs.js';
import { CrtOrigin } from '../../src/dataplane/structs.js';
import { FastPath } from '../../src/dataplane/fastpath.js';
import { requireRoot, uniquePrefix } from '../helpers/env.js';

let lab: FastpathLab;

function namesOf(results: ConnResult[]): string[] {
  for (const r of results) assert.equal(r.error, undefined, `connection ${r.id}: ${r.error}`);
  return results.map((r) => r.name!);
}

function tally(names: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const n of names) out[n] = (out[n] ?? 0) + 1;
  return out;
}

before(async () => {
  requireRoot();
  lab = await createFastpathLab(uniquePrefix('dist'));
});

after(() => lab?.teardown());

test('connections to the DVIPA are served by all three targets and keep their target', async () => {
  const { client, router, tcpService } = lab;
  const first = await client.open(LAB.dvipa, LAB.tcpPort, 60);
  const names = namesOf(first);
  const spread = tally(names);
  assert.deepEqual(Object.keys(spread).sort(), ['t1', 't2', 't3'], `spread ${JSON.stringify(spread)}`);

  const ids = first.map((r) => r.id);
  assert.deepEqual(namesOf(await client.ask(ids)), names, 'every connection still answered by its first target');

  // The CRT holds exactly these connections, each created by its SYN.
  const entries = [...router.crt.entries()].filter(([k]) => k.daddr === LAB.dvipa && k.dport === LAB.tcpPort);
  assert.equal(entries.length, 60);
  assert.ok(entries.every(([, v]) => v.origin === CrtOrigin.First));

  // New weights never move an established connection.
  lab.setWeights(tcpService, { t1: 10, t2: 1, t3: 1 });
  assert.deepEqual(namesOf(await client.ask(ids)), names, 'connections stay put after a weight change');

  // t2 leaves the DPT: no new connections for it, its open ones carry on.
  lab.setWeights(tcpService, { t1: 1, t3: 1 });
  const freshConns = await client.open(LAB.dvipa, LAB.tcpPort, 40);
  const fresh = namesOf(freshConns);
  assert.equal(
    fresh.filter((n) => n === 't2').length,
    0,
    `new connections after t2 left: ${JSON.stringify(tally(fresh))}`,
  );
  assert.ok(fresh.includes('t1') && fresh.includes('t3'));
  assert.deepEqual(namesOf(await client.ask(ids)), names, "t2's open connections continue");

  const st = router.serviceStats(router.serviceId(tcpService)!);
  assert.equal(st.crtNew, 100n);
  assert.equal(st.dropped, 0n);
  assert.ok(st.crtHit > 0n);
  await client.close([...ids, ...freshConns.map((r) => r.id)]);
});

test('replacing the program under traffic loses no packet and keeps the CRT', async () => {
  const { client, router } = lab;
  const crtBefore = router.crt.count();
  const sending = client.udp(LAB.dvipa, LAB.udpPort, 4000, 250);
  let swaps = 0;
  const swapper = (async () => {
    while (swaps < 20) {
      // A new generation of the agent: freshly loaded programs over the same pinned maps.
      const next = FastPath.open({ pinRoot: router.pinRoot });
      try {
        assert.equal(lab.inside(lab.routerNs, () => next.attach('distributor', 'ext')).replaced, true);
      } finally {
        next.close();
      }
      swaps++;
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  assert.equal(await sending, 4000);
  await swapper;
  assert.equal(swaps, 20);

  // One UDP flow lands on one target: every datagram must have reached it.
  const counts: number[] = [];
  for (const t of lab.targets) {
    const local = lab.clientIn(t.ns);
    const [conn] = await local.open('127.0.0.1', LAB.tcpPort, 1);
    counts.push(Number(namesOf(await local.ask([conn.id], 'udpcount'))[0]));
    local.stop();
  }
  assert.deepEqual(
    counts.filter((n) => n > 0),
    [4000],
    `datagrams per target: ${counts.join(', ')}`,
  );
  assert.ok(router.crt.count() >= crtBefore + 1, 'CRT entries survive program replacement');
});
