/*
 * The target's socket table: events applied one by one, a resync from /proc whenever they
 * cannot be trusted (never scanned yet, events lost, a listener gone).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SocketTable } from '../../src/cluster/socktable.js';
import { TCP_STATES, type SocketEntry } from '../../src/cluster/sockets.js';
import type { SockEvent } from '../../src/cluster/sockevents.js';

const DVIPA = '192.0.2.10';
const n = (s: (typeof TCP_STATES)[number]) => TCP_STATES.indexOf(s) + 1;
const isListener = (oldstate: number, newstate: number) =>
  newstate === n('listen') || (oldstate === n('listen') && newstate === n('close'));
const ev = (oldstate: number, newstate: number, remotePort = 40000, local = DVIPA): SockEvent => ({
  local,
  localPort: 8080,
  remote: isListener(oldstate, newstate) ? '0.0.0.0' : '192.0.2.1',
  remotePort: isListener(oldstate, newstate) ? 0 : remotePort,
  oldstate,
  newstate,
});
const listener: SocketEntry = { local: '0.0.0.0', localPort: 8080, remote: '0.0.0.0', remotePort: 0, state: 'listen' };

function table(proc: SocketEntry[]) {
  let reads = 0;
  const t = new SocketTable(() => {
    reads++;
    return proc;
  });
  return { t, reads: () => reads };
}

const summary = (t: SocketTable) =>
  t.sockets().map((s) => `${s.local}:${s.localPort}<-${s.remote}:${s.remotePort} ${s.state}`);

test('events change the table without reading /proc once it was scanned', () => {
  const { t, reads } = table([listener]);
  t.resync(new Set([DVIPA]));
  // A connection's socket is cloned from the listener: LISTEN to SYN_RECV is no listener gone.
  assert.equal(t.update([ev(n('listen'), n('syn_recv')), ev(n('syn_recv'), n('established'))], 0), 0);
  assert.equal(t.update([ev(n('close'), n('syn_recv'), 40001)], 0), 0);
  assert.deepEqual(summary(t), [
    '0.0.0.0:8080<-0.0.0.0:0 listen',
    `${DVIPA}:8080<-192.0.2.1:40000 established`,
    `${DVIPA}:8080<-192.0.2.1:40001 syn_recv`,
  ]);
  t.update(
    [ev(n('established'), n('fin_wait1')), ev(n('fin_wait1'), n('fin_wait2')), ev(n('fin_wait2'), n('close'))],
    0,
  );
  t.update([ev(n('syn_recv'), n('close'), 40001)], 0);
  assert.deepEqual(summary(t), ['0.0.0.0:8080<-0.0.0.0:0 listen']);
  assert.equal(reads(), 1, 'only the first scan read /proc');
});

test('a new listener is applied; a listener gone, lost events or no scan yet make it rescan', () => {
  const { t, reads } = table([listener]);
  t.update([ev(n('close'), n('established'))], 0);
  assert.equal(reads(), 1, 'never scanned: it scans');
  t.update([{ ...ev(n('close'), n('listen')), local: '0.0.0.0', localPort: 9090 }], 0);
  assert.equal(reads(), 1);
  assert.ok(summary(t).includes('0.0.0.0:9090<-0.0.0.0:0 listen'));
  // A listener on :9090 closed: maybe a SO_REUSEPORT twin still listens; only /proc knows.
  t.update([{ ...ev(n('listen'), n('close')), local: '0.0.0.0', localPort: 9090 }], 0);
  assert.equal(reads(), 2);
  assert.deepEqual(summary(t), ['0.0.0.0:8080<-0.0.0.0:0 listen']);
  assert.equal(t.update([], 3), 3, 'three events lost since the last update');
  assert.equal(reads(), 3);
  assert.equal(t.update([], 3), 0, 'the same count is no new loss');
  assert.equal(reads(), 3);
});

test('a resync keeps the connections of the DVIPAs it is given only, and the next one keeps that set', () => {
  const other = {
    local: '192.0.2.20',
    localPort: 8080,
    remote: '192.0.2.1',
    remotePort: 1,
    state: 'established' as const,
  };
  const mine = { ...other, local: DVIPA };
  const { t } = table([listener, other, mine]);
  t.resync(new Set([DVIPA]));
  t.resync();
  assert.deepEqual(summary(t), ['0.0.0.0:8080<-0.0.0.0:0 listen', `${DVIPA}:8080<-192.0.2.1:1 established`]);
});
