/*
 * What peers may say about DVIPAs (admission.ts): a target never speaks as a routing node,
 * a node announces only itself, addresses outside the configuration are refused, and with
 * a shared coupling facility a DVIPA message waits until etcd names the same owner.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseProfile } from '../../src/config/profile.js';
import { planDvipas } from '../../src/cluster/roles.js';
import { Admission } from '../../src/cluster/admission.js';
import {
  decodeMessage,
  encodeMessage,
  MAX_VIPAS,
  MsgType,
  type DvipaChange,
  type VipaList,
} from '../../src/cluster/messages.js';

const DVIPA = '192.0.2.10';
const cfg = parseProfile(`
NODE r1 XCF 198.18.1.1
VIPADYNAMIC
  VIPADEFINE 255.255.255.255 ${DVIPA}
  VIPADISTRIBUTE ${DVIPA} PORT 80 DESTIP 198.18.1.11
ENDVIPADYNAMIC
NODE r2 XCF 198.18.1.2
VIPADYNAMIC
  VIPABACKUP 100 ${DVIPA}
ENDVIPADYNAMIC
NODE t1 XCF 198.18.1.11
VIPADYNAMIC
  VIPARANGE DEFINE 255.255.255.0 192.0.2.0
ENDVIPADYNAMIC
PEER edge XCF 198.18.1.50
`);
const admit = new Admission(cfg, planDvipas(cfg));
const list = (...addresses: string[]): VipaList => ({
  dvipas: addresses.map((address) => ({ address, epoch: 1, services: [] })),
});
const change = (owner: string, epoch = 3): DvipaChange => ({ address: DVIPA, owner, epoch, event: 'takeover' });

test('VIPA lists: only from a node that defines or backs up each DVIPA; PEERs only inside DVIPAs and VIPARANGEs', () => {
  assert.equal(admit.vipaList('r1', list(DVIPA)), undefined);
  assert.equal(admit.vipaList('r2', list(DVIPA)), undefined);
  assert.equal(admit.vipaList('t1', list(DVIPA))?.reason, 'not_routing', 'a target sends no VIPA list');
  assert.equal(
    admit.vipaList('r1', list(DVIPA, '192.0.2.77'))?.reason,
    'not_routing',
    'one address out of bounds refuses the list',
  );
  assert.equal(admit.vipaList('edge', list('192.0.2.77')), undefined, 'inside a VIPARANGE');
  assert.equal(admit.vipaList('edge', list('203.0.113.1'))?.reason, 'outside_ranges');
  // The 1,024-address list that once bound 1,023 /32s on a target: refused before anyone reads it.
  const huge = list(...Array.from({ length: 1024 }, (_, i) => `10.0.${i >> 8}.${i & 255}`));
  assert.throws(
    () => decodeMessage(MsgType.VipaList, encodeMessage({ type: MsgType.VipaList, body: huge })),
    new RegExp(`at most ${MAX_VIPAS}`),
  );
});

test('DVIPA messages: from a routing node about itself, confirmed by etcd when it is shared', () => {
  assert.equal(admit.dvipa('r2', change('r2')), 'accept', 'no shared store: the roles are all there is');
  assert.deepEqual(
    (admit.dvipa('t1', change('t1')) as { reason: string }).reason,
    'not_routing',
    'a target cannot take a DVIPA',
  );
  assert.deepEqual(
    (admit.dvipa('t1', change('r2')) as { reason: string }).reason,
    'not_owner',
    'nobody announces another node',
  );
  // With etcd: the owner record decides; until it agrees, the message waits (nothing is released).
  assert.equal(
    admit.dvipa('r2', change('r2'), () => ({ node: 'r1', rank: 255, epoch: 2 })),
    'wait',
  );
  assert.equal(
    admit.dvipa('r2', change('r2'), () => undefined),
    'wait',
  );
  assert.equal(
    admit.dvipa('r2', change('r2', 3), () => ({ node: 'r2', rank: 100, epoch: 4 })),
    'wait',
    'another epoch',
  );
  assert.equal(
    admit.dvipa('r2', change('r2', 3), () => ({ node: 'r2', rank: 100, epoch: 3 })),
    'accept',
  );
});
