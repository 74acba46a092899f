/*
 * Voluntary handovers (src/cluster/handoff.ts): the new owner takes the address once its
 * previous owner said RELEASED for the new epoch, or once the previous owner's fence has run
 * out; a RELEASED from anyone else, or for another epoch, changes nothing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Handoffs } from '../../src/cluster/handoff.js';

const DVIPA = '192.0.2.10';

test("a handover ends with the previous owner's RELEASED for this epoch, whether it comes before or after the wait", async () => {
  const h = new Handoffs();
  const started = Date.now();
  const waiting = h.wait(DVIPA, 'r2', 5, 10_000);
  h.onReleased('r1', { address: DVIPA, epoch: 5 });
  h.onReleased('r2', { address: DVIPA, epoch: 4 });
  h.onReleased('r2', { address: DVIPA, epoch: 5 });
  assert.equal(await waiting, 'released');
  assert.ok(Date.now() - started < 1000);
  // Said before this node's claim was answered (its watch saw the change first).
  h.onReleased('r1', { address: DVIPA, epoch: 6 });
  assert.equal(await h.wait(DVIPA, 'r1', 6, 10_000), 'released');
});

test('without a RELEASED from the previous owner, a handover ends when its fence has run out', async () => {
  const h = new Handoffs();
  const started = Date.now();
  h.onReleased('r3', { address: DVIPA, epoch: 7 });
  h.onReleased('r2', { address: DVIPA, epoch: 6 });
  assert.equal(await h.wait(DVIPA, 'r2', 7, 50), 'fence');
  assert.ok(Date.now() - started >= 49);
});
