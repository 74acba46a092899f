/*
 * The DVIPA's address on the external interface, taken and given over rtnetlink
 * (kernel/rtnl.ts) in a namespace: on the interface when take() returns (before the
 * announcement leaves), off it when give() resolves (before a handover's RELEASED), both
 * families, IPv6 without duplicate address detection; a missing interface is a logged
 * error, never a throw out of the holder.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Topology, nsIp } from '../../src/lab/netns.js';
import { inNetns } from '../../src/kernel/netns.js';
import { interfaceIndex } from '../../src/kernel/rtnl.js';
import { AddressHolder } from '../../src/cluster/address.js';
import { log } from '../../src/log.js';
import { requireRoot, uniquePrefix } from '../helpers/env.js';

let topo: Topology;
let owner: string;

before(() => {
  requireRoot();
  topo = new Topology(uniquePrefix('addr'));
  owner = topo.ns('own');
  const peer = topo.ns('peer');
  topo.veth({ ns: owner, name: 'ext0' }, { ns: peer, name: 'p0' });
  nsIp(owner, 'addr', 'add', '192.0.2.1/24', 'dev', 'ext0');
});

after(() => topo?.teardown());

const shown = () => nsIp(owner, 'addr', 'show', 'dev', 'ext0');

for (const [dvipa, form] of [
  ['192.0.2.10', /inet 192\.0\.2\.10\/32 scope global ext0/],
  ['2001:db8:7::10', /inet6 2001:db8:7::10\/128 scope global nodad/],
] as const) {
  test(`${dvipa}: on the interface when take() returns, off it when give() resolves, twice over`, async () => {
    const h = inNetns(owner, () => new AddressHolder('ext0', log));
    try {
      for (let round = 0; round < 2; round++) {
        inNetns(owner, () => h.take(dvipa));
        assert.match(shown(), form);
        assert.ok(inNetns(owner, () => h.holds(dvipa)));
        await inNetns(owner, () => h.give(dvipa));
        assert.doesNotMatch(shown(), new RegExp(dvipa.replace(/\./g, '\\.')));
        assert.equal(
          inNetns(owner, () => h.holds(dvipa)),
          false,
        );
      }
      // Given up when it was not there: nothing to do, no error.
      await inNetns(owner, () => h.give(dvipa));
    } finally {
      h.stop();
    }
  });
}

test('the primary address stays: only the DVIPA is given up', async () => {
  const h = new AddressHolder('ext0', log);
  inNetns(owner, () => h.take('192.0.2.11'));
  await inNetns(owner, () => h.give('192.0.2.11'));
  h.stop();
  assert.match(shown(), /inet 192\.0\.2\.1\/24/);
});

test('a missing interface: the holder logs and goes on; the lookup names the interface', async () => {
  const errors: string[] = [];
  const logger = { error: (o: { err?: string }) => errors.push(o.err ?? ''), warn: () => undefined };
  const h = new AddressHolder('nosuch0', logger as unknown as typeof log);
  inNetns(owner, () => h.take('192.0.2.12'));
  await inNetns(owner, () => h.give('192.0.2.12'));
  h.stop();
  assert.equal(errors.length, 2);
  assert.match(errors[0], /nosuch0/);
  assert.throws(
    () => inNetns(owner, () => interfaceIndex('nosuch0')),
    (e: Error & { code?: string }) => e.code === 'ENODEV' && /nosuch0/.test(e.message),
  );
});
