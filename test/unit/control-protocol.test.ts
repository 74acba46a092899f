/* The control socket's protocol: what an agent accepts and what it refuses, before any handler runs. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CONTROL_PROTOCOL_VERSION, parseControlRequest } from '../../src/cluster/control-protocol.js';

test('requests: versioned, a missing version read as 1, arguments checked by type', () => {
  assert.deepEqual(parseControlRequest('{"v":1,"cmd":"vdpt"}'), { v: 1, cmd: 'vdpt', args: {} });
  assert.deepEqual(parseControlRequest('{"cmd":"vipadyn"}'), { v: CONTROL_PROTOCOL_VERSION, cmd: 'vipadyn', args: {} });
  assert.deepEqual(parseControlRequest('{"v":1,"cmd":"vcrt","args":{"dvipa":"192.0.2.10","port":80,"limit":5}}'), {
    v: 1,
    cmd: 'vcrt',
    args: { dvipa: '192.0.2.10', port: 80, limit: 5 },
  });
  // Arguments a command does not take are dropped, not passed on.
  assert.deepEqual(parseControlRequest('{"cmd":"vdpt","args":{"x":1}}'), { v: 1, cmd: 'vdpt', args: {} });
});

test('requests an agent refuses, each saying why', () => {
  for (const [line, why] of [
    ['{"v":2,"cmd":"vdpt"}', /version 2: this agent speaks 1/],
    ['{"cmd":"shutdown"}', /unknown request shutdown \(vdpt, vcrt, vipadyn, vipadcfg, ipsec, members\)/],
    ['[1,2]', /expected \{"v": 1, "cmd": \.\.\.\}/],
    ['{"cmd":"vcrt","args":[]}', /args must be an object/],
    ['{"cmd":"vcrt","args":{"port":"80"}}', /port must be a whole number from 1 to 65535/],
    ['{"cmd":"vcrt","args":{"limit":0}}', /limit must be a whole number/],
    ['{"cmd":"vcrt","args":{"dvipa":"not-an-address"}}', /not-an-address/],
    ['{"cmd":', /JSON/],
  ] as const) {
    assert.throws(() => parseControlRequest(line), why, line);
  }
});
