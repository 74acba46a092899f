/*
 * VICI, strongSwan's control protocol: the codec round-trips every element kind and refuses
 * malformed, truncated and oversized input with a clear ViciError; the client talks to real
 * charons (two, each in a namespace of the test's own with its own configuration, socket and
 * pid file): version, connections loaded and read back, an IKE SA negotiated between them
 * (childless: this machine's kernel has no ESP, so no CHILD SA can be installed here; the
 * kernel lab has them), its ike-updown event and list-sas items; and a fake charon that
 * never answers, answers garbage or an oversized frame ends the connection with an error
 * and rejects what was pending, never hangs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Topology } from '../../src/lab/netns.js';
import { Charon } from '../../src/lab/charon.js';
import {
  decodeMessage,
  decodePacket,
  encodeMessage,
  encodePacket,
  FrameSplitter,
  PacketType,
  ViciClient,
  ViciError,
  type ViciMessage,
} from '../../src/ipsec/vici.js';
import { requireRoot, uniquePrefix } from '../helpers/env.js';

const MSG: ViciMessage = {
  version: '2',
  empty: '',
  'local-id': 'dvipa.example ünïcode',
  addrs: ['198.18.0.1', '2001:db8::1'],
  none: [],
  conn: { children: { net: { local_ts: ['0.0.0.0/0'], mode: 'tunnel' } }, nothing: {} },
};

test('codec: every element kind round-trips, in packets of every type', () => {
  assert.deepEqual(decodeMessage(encodeMessage(MSG)), MSG);
  const proto = decodeMessage(Buffer.from([3, 9, ...Buffer.from('__proto__'), 0, 1, 0x78]));
  assert.deepEqual(
    [Object.keys(proto), Object.getPrototypeOf(proto) === Object.prototype],
    [['__proto__'], true],
    'a key, not a prototype',
  );
  for (const p of [
    { type: PacketType.CmdRequest, name: 'list-sas', message: { noblock: 'yes' } },
    { type: PacketType.CmdResponse, message: MSG },
    { type: PacketType.EventRegister, name: 'ike-updown' },
    { type: PacketType.EventConfirm },
    { type: PacketType.Event, name: 'child-rekey', message: MSG },
  ]) {
    const frame = encodePacket(p);
    assert.equal(frame.readUInt32BE(0), frame.length - 4);
    const back = decodePacket(frame.subarray(4));
    assert.deepEqual([back.type, back.name, back.message], [p.type, p.name, p.message ?? {}]);
  }
  const longest = 'x'.repeat(0xffff);
  assert.equal((decodeMessage(encodeMessage({ k: longest })).k as string).length, 0xffff);
});

test('codec: malformed, truncated and oversized input is refused with a clear ViciError', () => {
  const bad = (b: Buffer | number[], re: RegExp) =>
    assert.throws(
      () => decodeMessage(Buffer.from(b)),
      (e: Error) => e instanceof ViciError && re.test(e.message),
      re.source,
    );
  const good = encodeMessage(MSG);
  let refused = 0;
  for (let n = 1; n < good.length; n++) {
    // A cut mid-element or inside a section is refused; one between top-level elements is a shorter
    // message (the frame's length is what tells a whole one): never a half-read element.
    try {
      const keys = Object.keys(decodeMessage(good.subarray(0, n)));
      assert.deepEqual(keys, Object.keys(MSG).slice(0, keys.length), `cut at ${n}`);
    } catch (e) {
      if (!(e instanceof ViciError)) throw e;
      refused++;
    }
  }
  assert.equal(refused, good.length - Object.keys(MSG).length);
  bad([9], /unknown element type 9/);
  bad([2], /section end without a section/);
  bad([1, 1, 0x61], /1 section\(s\) not closed/);
  bad([3, 0], /empty name/);
  bad([3, 1, 0x6b, 0, 5, 0x61], /truncated value/);
  bad([4, 1, 0x6c, 3, 1, 0x6b, 0, 0, 6], /element 3 inside list l/);
  bad([3, 1, 0x6b, 0, 0, 3, 1, 0x6b, 0, 0], /duplicate key "k"/);
  bad(Array.from({ length: 20 }, () => [1, 1, 0x73]).flat(), /nested deeper than 16/);
  assert.throws(() => decodePacket(Buffer.of(8)), /unknown packet type 8/);
  assert.throws(() => decodePacket(Buffer.of(0, 5, 0x61)), /name missing or truncated/);
  assert.throws(() => decodePacket(Buffer.alloc(0)), /empty packet/);
  assert.throws(() => encodeMessage({ k: 'x'.repeat(0x10000) }), /value of 65536 bytes, at most 65535/);
  assert.throws(() => encodeMessage({ ['k'.repeat(256)]: '' }), /name of 256 bytes, at most 255/);
  assert.throws(() => encodeMessage(JSON.parse('{"l": [{}]}') as ViciMessage), /items are text/);
  assert.throws(() => encodePacket({ type: PacketType.CmdRequest }), /needs name/);
  assert.throws(
    () =>
      encodePacket({
        type: PacketType.CmdRequest,
        name: 'x',
        message: Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`k${i}`, 'v'.repeat(60000)])),
      }),
    /at most 524288/,
  );

  // Frames: split anywhere, reassembled; a length over the limit is refused before any buffering.
  const frames = Buffer.concat([
    encodePacket({ type: PacketType.CmdResponse, message: MSG }),
    encodePacket({ type: PacketType.EventConfirm }),
  ]);
  const s = new FrameSplitter();
  const got = [...frames].flatMap((byte) => s.push(Buffer.of(byte)));
  assert.deepEqual(
    got.map((p) => p.type),
    [PacketType.CmdResponse, PacketType.EventConfirm],
  );
  assert.equal(s.pending, 0);
  assert.throws(() => new FrameSplitter(1024).push(Buffer.of(0, 0, 4, 1)), /frame of 1025 bytes, at most 1024/);
});

/** A fake charon on a unix socket: `answer` decides what it writes back to each request. */
async function fakeCharon(answer: (sock: net.Socket) => void): Promise<{ path: string; close(): void }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvipa-vici-'));
  const where = path.join(dir, 'vici');
  const socks: net.Socket[] = [];
  const server = net.createServer((sock) => {
    socks.push(sock);
    sock.once('data', () => answer(sock));
  });
  await new Promise<void>((r) => server.listen(where, r));
  return {
    path: where,
    close: () => {
      for (const s of socks) s.destroy();
      server.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

test('client: silence times out, garbage and oversized frames close the connection; pending requests fail, nothing hangs', async (t) => {
  const silent = await fakeCharon(() => undefined);
  t.after(() => silent.close());
  const c = await ViciClient.connect(silent.path, { timeoutMs: 200 });
  const queued = [c.request('version'), c.request('version')];
  await assert.rejects(
    queued[0],
    (e: ViciError) => e.kind === 'timeout' && /version: no answer in 200 ms/.test(e.message),
  );
  await assert.rejects(queued[1], (e: ViciError) => e.kind === 'timeout');
  await assert.rejects(
    c.request('version'),
    /no answer/,
    'a timed-out connection stays closed: a late answer would be misread',
  );

  const garbage = await fakeCharon((s) => s.write(Buffer.of(0, 0, 0, 2, 1, 9)));
  t.after(() => garbage.close());
  await assert.rejects(
    (await ViciClient.connect(garbage.path)).request('version'),
    (e: ViciError) => e.kind === 'decode' && /unknown element type 9/.test(e.message),
  );

  const huge = await fakeCharon((s) => s.write(Buffer.of(0x7f, 0xff, 0xff, 0xff)));
  t.after(() => huge.close());
  await assert.rejects(
    (await ViciClient.connect(huge.path)).request('version'),
    /frame of 2147483647 bytes, at most 524288/,
  );

  const hangup = await fakeCharon((s) => s.end(Buffer.of(0, 0, 0, 9, 1)));
  t.after(() => hangup.close());
  await assert.rejects(
    (await ViciClient.connect(hangup.path)).request('version'),
    (e: ViciError) => e.kind === 'closed' && /inside a frame/.test(e.message),
  );

  const wrong = await fakeCharon((s) => s.write(encodePacket({ type: PacketType.EventConfirm })));
  t.after(() => wrong.close());
  await assert.rejects((await ViciClient.connect(wrong.path)).request('version'), /unexpected packet type 5/);

  await assert.rejects(
    ViciClient.connect(path.join(os.tmpdir(), 'dvipa-no-such-vici')),
    (e: ViciError) => e.kind === 'connect',
  );
});

const conn = (me: string, them: string, myId: string, theirId: string): ViciMessage => ({
  version: '2',
  local_addrs: [me],
  remote_addrs: [them],
  proposals: ['aes128-sha256-modp2048'],
  childless: 'force',
  local: { auth: 'psk', id: myId },
  remote: { auth: 'psk', id: theirId },
  children: {
    net: { local_ts: [`${me}/32`], remote_ts: [`${them}/32`], esp_proposals: ['aes128-sha256'], mode: 'tunnel' },
  },
});

test('client with real charons: version, connections loaded and read back, an IKE SA negotiated, its event and list-sas', async (t) => {
  requireRoot();
  const topo = new Topology(uniquePrefix('vici'));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvipa-vici-'));
  const charons: Charon[] = [];
  const clients: ViciClient[] = [];
  t.after(async () => {
    for (const c of clients) c.close();
    for (const c of charons) await c.stop();
    topo.teardown();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const [a, b] = [topo.ns('a'), topo.ns('b')];
  topo.veth({ ns: a, name: 'va', addr: '198.18.99.1/24' }, { ns: b, name: 'vb', addr: '198.18.99.2/24' });
  charons.push(
    await Charon.start(a, { dir: path.join(dir, 'a') }),
    await Charon.start(b, { dir: path.join(dir, 'b') }),
  );
  assert.notEqual(
    fs.readFileSync(charons[0].pidFile, 'utf8').trim(),
    fs.readFileSync(charons[1].pidFile, 'utf8').trim(),
    'each its own pid file',
  );
  const [va, vb, events] = [await charons[0].connect(), await charons[1].connect(), await charons[0].connect()];
  clients.push(va, vb, events);

  assert.deepEqual([(await va.request('version')).daemon, (await va.request('version')).version], ['charon', '5.9.8']);
  await assert.rejects(va.request('no-such-command'), (e: ViciError) => e.kind === 'unknown-command');
  await assert.rejects(
    va.listen(['no-such-event'], () => undefined),
    (e: ViciError) => e.kind === 'unknown-event',
  );
  await assert.rejects(
    va.request('load-conn', { broken: { version: 'x' } }),
    (e: ViciError) => e.kind === 'failed' && /load-conn: /.test(e.message),
  );
  for (const [v, me, them, i1, i2] of [
    [va, '198.18.99.1', '198.18.99.2', 'a', 'b'],
    [vb, '198.18.99.2', '198.18.99.1', 'b', 'a'],
  ] as const) {
    await v.request('load-shared', { id: 'k', type: 'IKE', data: 'a lab secret, not a real one', owners: ['a', 'b'] });
    await v.request('load-conn', { dvipa: conn(me, them, i1, i2) });
  }
  assert.deepEqual((await va.request('get-conns')).conns, ['dvipa']);
  const listed = await va.stream('list-conns', 'list-conn');
  assert.deepEqual((listed.items[0].dvipa as ViciMessage).remote_addrs, ['198.18.99.2']);

  const seen: Array<[string, ViciMessage]> = [];
  await events.listen(['ike-updown', 'child-updown'], (e, m) => seen.push([e, m]));
  await va.request('initiate', { ike: 'dvipa', timeout: '10000' });
  const mine = (await va.stream('list-sas', 'list-sa')).items;
  const theirs = (await vb.stream('list-sas', 'list-sa')).items;
  assert.equal(mine.length, 1);
  const sa = mine[0].dvipa as ViciMessage;
  assert.deepEqual(
    [sa.state, sa['local-host'], sa['remote-host'], sa['local-id'], sa['remote-id'], sa.initiator],
    ['ESTABLISHED', '198.18.99.1', '198.18.99.2', 'a', 'b', 'yes'],
  );
  const peer = theirs[0].dvipa as ViciMessage;
  assert.deepEqual(
    [peer['initiator-spi'], peer['responder-spi']],
    [sa['initiator-spi'], sa['responder-spi']],
    'both ends name the IKE SA by the same SPIs',
  );
  assert.match(sa['initiator-spi'] as string, /^[0-9a-f]{16}$/);
  const until = Date.now() + 2000;
  while (!seen.length && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  assert.equal(seen[0][0], 'ike-updown');
  assert.equal(seen[0][1].up, 'yes');
  assert.equal((seen[0][1].dvipa as ViciMessage)['initiator-spi'], sa['initiator-spi']);

  await va.request('terminate', { ike: 'dvipa', timeout: '5000' });
  assert.equal(
    (await vb.stream('list-sas', 'list-sa')).items.length,
    0,
    'terminate sends a DELETE: the peer forgets too',
  );
});
