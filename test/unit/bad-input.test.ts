/*
 * Bad input where it arrives without a kernel: the control socket (broken, unknown and huge
 * requests, a second server on a live socket) and every agent message type other than DVIPA
 * (election.test.ts has DVIPA): each gets a clear error, never a crash, and the server goes on.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { askAgent, ControlServer } from '../../src/cluster/control.js';
import { MAX_REQUEST_BYTES, type ControlHandlers } from '../../src/cluster/control-protocol.js';
import { decodeMessage, InvalidMessage, MAX_CONNS_PER_MESSAGE, MsgType } from '../../src/cluster/messages.js';
import { log } from '../../src/log.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvipa-bad-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Sends raw bytes on the socket; the answer lines until the server closes or `ms` pass. */
function raw(socketPath: string, data: Buffer | string, ms = 3000): Promise<{ lines: string[]; closed: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect(socketPath);
    let got = '';
    const done = (closed: boolean) => {
      clearTimeout(timer);
      s.destroy();
      resolve({ lines: got.split('\n').filter(Boolean), closed });
    };
    const timer = setTimeout(() => done(false), ms);
    s.on('data', (d: Buffer) => (got += d.toString()));
    s.on('error', () => undefined);
    s.on('close', () => done(true));
    s.on('connect', () => s.write(data, () => undefined));
  });
}

/** An agent with nothing to show: what is tested here is the socket, not the views. */
const handlers: ControlHandlers = {
  vdpt: () => [],
  vcrt: () => ({ entries: [], total: 0, truncated: false }),
  vipadyn: () => ({ dvipas: [] }),
  vipadcfg: () => ({ node: 'n', profile: '' }),
  ipsec: () => [],
  members: () => ({ members: [], refused: {} }),
};

test('the control socket: broken, unknown and huge requests get an error; the server goes on; a second one on a live socket is refused', async (t) => {
  const sock = path.join(dir, 'agent.sock');
  const server = new ControlServer(sock, handlers, log);
  await server.start();
  t.after(() => server.stop());

  for (const [line, why] of [
    ['not json', /JSON/],
    ['{"cmd": 7}', /expected \{"v": 1, "cmd": \.\.\.\}/],
    ['[]', /expected \{"v": 1, "cmd": \.\.\.\}/],
    ['null', /expected/],
    ['{"cmd": "frobnicate"}', /unknown request frobnicate/],
  ] as const) {
    const r = await raw(sock, `${line}\n`, 1000);
    assert.equal(r.lines.length, 1, line);
    const a = JSON.parse(r.lines[0]) as { ok: boolean; error: string };
    assert.equal(a.ok, false, line);
    assert.match(a.error, why, line);
  }
  // Several requests on one connection, one answer each, in order.
  const two = await raw(sock, '{"cmd":"vipadyn"}\nnope\n{"cmd":"vipadyn"}\n', 1000);
  assert.deepEqual(
    two.lines.map((l) => (JSON.parse(l) as { ok: boolean }).ok),
    [true, false, true],
  );

  // A request line without end: answered and closed once past the limit, not buffered for ever.
  const before = process.memoryUsage().rss;
  const huge = await raw(sock, Buffer.alloc(MAX_REQUEST_BYTES * 64, 0x61), 5000);
  assert.ok(huge.closed, 'the server closed the connection');
  assert.match(huge.lines[0] ?? '', /request longer than 65536 bytes/);
  assert.ok(process.memoryUsage().rss - before < 64 * 1024 * 1024, 'and did not keep what it was sent');
  assert.deepEqual(await askAgent(sock, { cmd: 'vipadyn' }), { dvipas: [] }, 'still answering');

  const second = new ControlServer(sock, handlers, log);
  await assert.rejects(second.start(), /another agent answers on .*agent\.sock: one agent per node/);
  assert.deepEqual(await askAgent(sock, { cmd: 'vipadyn' }), { dvipas: [] }, 'the first keeps its socket');
});

test('a socket left by a dead agent is replaced', async () => {
  const sock = path.join(dir, 'stale.sock');
  const dead = net.createServer().listen(sock);
  await new Promise((r) => dead.once('listening', r));
  // Closing a listening unix server unlinks its file: make it a stale file the way a SIGKILL leaves it.
  await new Promise((r) => dead.close(r));
  fs.writeFileSync(sock, '');
  const server = new ControlServer(sock, handlers, log);
  await server.start();
  assert.deepEqual(await askAgent(sock, { cmd: 'vipadyn' }), { dvipas: [] });
  await server.stop();
});

test('agent messages other than DVIPA: every malformed body is an InvalidMessage naming the field', () => {
  const service = { dvipa: '192.0.2.10', port: 80, protocol: 'tcp' };
  const conn = { saddr: '198.18.0.1', daddr: '192.0.2.10', sport: 40000, dport: 80, protocol: 'tcp' };
  const valid: Array<[MsgType, object]> = [
    [MsgType.Hello, { node: 'r1', nonce: 'ab'.repeat(16), eph: 'cd'.repeat(32), run: 'ef'.repeat(8) }],
    [
      MsgType.VipaList,
      {
        dvipas: [
          {
            address: '192.0.2.10',
            epoch: 3,
            services: [
              { port: 0, protocol: 'tcp', targets: 'all' },
              { port: 80, protocol: 'udp', targets: ['198.18.1.1'] },
            ],
          },
        ],
      },
    ],
    [MsgType.SrvStat, { full: true, up: [service], down: [], load: 0.5 }],
    [MsgType.Conns, { full: false, added: [conn], removed: [] }],
    [MsgType.Released, { address: '192.0.2.10', epoch: 4 }],
  ];
  for (const [type, body] of valid)
    assert.deepEqual(decodeMessage(type, Buffer.from(JSON.stringify(body))).body, body, MsgType[type]);
  const bad: Array<[MsgType, unknown, RegExp]> = [
    [MsgType.Hello, { node: 'r 1', nonce: 'ab'.repeat(16), eph: 'cd'.repeat(32), run: 'ef'.repeat(8) }, /HELLO\.node/],
    [
      MsgType.Hello,
      { node: 'x'.repeat(65), nonce: 'ab'.repeat(16), eph: 'cd'.repeat(32), run: 'ef'.repeat(8) },
      /HELLO\.node/,
    ],
    [MsgType.Hello, { node: 'r1', nonce: 'zz'.repeat(16), eph: 'cd'.repeat(32), run: 'ef'.repeat(8) }, /HELLO\.nonce/],
    [
      MsgType.Hello,
      { node: 'r1', nonce: 'ab'.repeat(16), eph: 'cd'.repeat(32), run: 'ef'.repeat(8), extra: 1 },
      /unexpected field extra/,
    ],
    [MsgType.VipaList, { dvipas: {} }, /VIPALIST\.dvipas: expected a list/],
    [MsgType.VipaList, { dvipas: [{ address: '192.0.2.10', services: [] }] }, /epoch/],
    [MsgType.VipaList, { dvipas: [{ address: '192.0.2.300', epoch: 1, services: [] }] }, /dvipas\[0\]\.address/],
    [MsgType.VipaList, { dvipas: [{ address: '192.0.2.10', epoch: -1, services: [] }] }, /epoch/],
    [
      MsgType.VipaList,
      { dvipas: [{ address: '192.0.2.10', epoch: 1, services: [{ port: 70000, protocol: 'tcp', targets: 'all' }] }] },
      /services\[0\]\.port/,
    ],
    [
      MsgType.VipaList,
      { dvipas: [{ address: '192.0.2.10', epoch: 1, services: [{ port: 80, protocol: 'sctp', targets: 'all' }] }] },
      /protocol/,
    ],
    [
      MsgType.VipaList,
      { dvipas: [{ address: '192.0.2.10', epoch: 1, services: [{ port: 80, protocol: 'tcp', targets: 'some' }] }] },
      /targets: expected a list/,
    ],
    [
      MsgType.Hello,
      { node: 'r1', nonce: 'ab'.repeat(16), eph: 'cd'.repeat(31), run: 'ef'.repeat(8) },
      /HELLO\.eph: expected 32 bytes/,
    ],
    [MsgType.Hello, { node: 'r1', nonce: 'ab'.repeat(16), eph: 'cd'.repeat(32) }, /HELLO\.run: expected 8 bytes/],
    [MsgType.Auth, { proof: 'ab'.repeat(65) }, /AUTH\.proof: expected 32 to 64 bytes/],
    [MsgType.Ping, { x: 1 }, /PING: unexpected field x/],
    [
      MsgType.VipaList,
      { dvipas: Array.from({ length: 257 }, () => ({ address: '192.0.2.10', epoch: 1, services: [] })) },
      /257 entries, at most 256/,
    ],
    [MsgType.SrvStat, { full: 'yes', up: [], down: [] }, /SRVSTAT\.full/],
    [MsgType.SrvStat, { full: true, up: [{ ...service, port: 0 }], down: [] }, /SRVSTAT\.up\[0\]\.port/],
    [MsgType.SrvStat, { full: true, up: [], down: [service], load: 1.5 }, /SRVSTAT\.load/],
    [MsgType.SrvStat, { full: true, up: [], down: [], load: 'NaN' }, /SRVSTAT\.load/],
    [MsgType.SrvStat, { full: true, up: [] }, /SRVSTAT\.down: expected a list/],
    [MsgType.Conns, { full: true, added: [{ ...conn, sport: 1.5 }], removed: [] }, /CONNS\.added\[0\]\.sport/],
    [
      MsgType.Conns,
      { full: true, added: [], removed: [{ ...conn, daddr: 'localhost' }] },
      /CONNS\.removed\[0\]\.daddr/,
    ],
    [
      MsgType.Conns,
      { full: true, added: Array.from({ length: MAX_CONNS_PER_MESSAGE + 1 }, () => conn), removed: [] },
      /at most 8192/,
    ],
    [MsgType.Conns, null, /CONNS: expected an object/],
    [MsgType.Released, { address: '192.0.2.10', epoch: 0 }, /RELEASED\.epoch: an owner has an epoch of at least 1/],
    [MsgType.Released, { address: 'r1', epoch: 2 }, /RELEASED\.address/],
    [MsgType.Released, { address: '192.0.2.10', epoch: 2, seq: 1 }, /RELEASED: unexpected field seq/],
    [99 as MsgType, {}, /unknown message type 99/],
  ];
  for (const [type, body, why] of bad) {
    assert.throws(
      () => decodeMessage(type, Buffer.from(JSON.stringify(body))),
      (e: Error) => e instanceof InvalidMessage && why.test(e.message),
      `${MsgType[type]} ${JSON.stringify(body).slice(0, 120)}`,
    );
  }
  for (const payload of [Buffer.from('{"full":'), Buffer.from([0xff, 0xfe, 0x00]), Buffer.alloc(0)]) {
    assert.throws(() => decodeMessage(MsgType.Conns, payload), /payload is not JSON/);
  }
});
