/*
 * The agents' transport on loopback: authenticated delivery, and everything a hostile or
 * broken peer can send (wrong key, replayed, reordered, oversized, malformed frames, noise)
 * dropped, counted, logged once, never crashing the agent or stopping its other peers.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import pino from 'pino';
import { Transport, type Peer } from '../src/cluster/transport.js';
import { encodeFrame, FrameReader, sessionKey, MAX_PAYLOAD, HEADER } from '../src/cluster/frame.js';
import { encodeMessage, MsgType, type Message } from '../src/cluster/messages.js';

const KEY = randomBytes(32);
const started: Transport[] = [];
after(async () => {
  for (const t of started) await t.stop();
});

function capture(): { logger: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({ write(chunk, _enc, cb) { lines.push(JSON.parse(String(chunk))); cb(); } });
  return { logger: pino({ level: 'warn' }, stream), lines };
}

async function node(name: string, peers: Peer[], key = KEY, port = 0) {
  const log = capture();
  const t = new Transport({ node: name, key, listen: { host: '127.0.0.1', port }, peers, logger: log.logger });
  await t.start();
  started.push(t);
  const got: Array<[string, Message]> = [];
  t.on('message', (p, m) => got.push([p, m]));
  return { t, got, log };
}

const until = async (cond: () => boolean, ms = 5000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 10));
  }
};

const srvstat: Message = { type: MsgType.SrvStat, body: { full: true, up: [{ dvipa: '192.0.2.10', port: 80, protocol: 'tcp' }], down: [] } };

/** A hand-driven peer "b" that completes the handshake with `port`, then sends raw bytes. */
async function rawPeer(port: number, name = 'b', key = KEY) {
  const socket = net.connect({ host: '127.0.0.1', port });
  let isClosed = false;
  socket.once('close', () => (isClosed = true));
  const nonce = randomBytes(16);
  let session: Buffer | undefined;
  const reader = new FrameReader(() => key, (f) => {
    const their = JSON.parse(f.payload.toString()).nonce as string;
    session = sessionKey(key, nonce, Buffer.from(their, 'hex'));
  });
  socket.on('data', (d: Buffer) => { if (!session) reader.push(d); });
  socket.on('error', () => undefined);
  await new Promise((r) => socket.once('connect', r));
  socket.write(encodeFrame(key, { type: MsgType.Hello, seq: 0n, payload: encodeMessage({ type: MsgType.Hello, body: { node: name, nonce: nonce.toString('hex') } }) }));
  await until(() => session !== undefined);
  return {
    socket,
    /** Resolves when the agent has closed the connection (fails the test after 5 s). */
    closed: () => until(() => isClosed),
    frame: (seq: bigint, m: Message | Buffer, type: number = MsgType.SrvStat) =>
      encodeFrame(session!, { type: Buffer.isBuffer(m) ? type : m.type, seq, payload: Buffer.isBuffer(m) ? m : encodeMessage(m) }),
  };
}

test('two agents: delivery both ways, peerUp on each side', async () => {
  const portA = await freePort();
  const portB = await freePort();
  const upsA: string[] = [];
  const upsB: string[] = [];
  const a = await node('a', [{ name: 'b', host: '127.0.0.1', port: portB }], KEY, portA);
  a.t.on('peerUp', (p) => upsA.push(p));
  const b = await node('b', [{ name: 'a', host: '127.0.0.1', port: portA }], KEY, portB);
  b.t.on('peerUp', (p) => upsB.push(p));
  await until(() => a.t.connected('b') && b.t.connected('a'));
  assert.ok(a.t.send('b', srvstat));
  assert.ok(b.t.send('a', srvstat));
  await until(() => a.got.length === 1 && b.got.length === 1);
  assert.deepEqual(b.got[0], ['a', srvstat]);
  assert.deepEqual(a.got[0], ['b', srvstat]);
  assert.deepEqual(upsA, ['b']);
});

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

test('an agent with the wrong key is rejected and delivers nothing', async () => {
  const portA = await freePort();
  const a = await node('a', [{ name: 'b', host: '127.0.0.1', port: 1 }], KEY, portA);
  const wrong = await node('b', [{ name: 'a', host: '127.0.0.1', port: portA }], randomBytes(32));
  await until(() => (a.t.drops.bad_tag ?? 0) > 0);
  assert.equal(wrong.t.connected('a'), false);
  assert.equal(a.got.length, 0);
  assert.ok(a.log.lines.some((l) => l.reason === 'bad_tag'));
});

test('replayed, reordered, oversized, unknown and malformed frames are dropped and counted', async () => {
  const portA = await freePort();
  const a = await node('a', [{ name: 'b', host: '127.0.0.1', port: 1 }], KEY, portA);

  // Replay: the same authentic frame twice. Delivered once; the copy closes the connection.
  let p = await rawPeer(portA);
  const f1 = p.frame(1n, srvstat);
  p.socket.write(f1);
  await until(() => a.got.length === 1);
  p.socket.write(f1);
  await p.closed();
  assert.equal(a.t.drops.replayed, 1);
  assert.equal(a.got.length, 1);

  // A gap in the sequence.
  p = await rawPeer(portA);
  p.socket.write(p.frame(2n, srvstat));
  await p.closed();
  assert.equal(a.t.drops.out_of_order, 1);

  // A valid frame with an invalid message: dropped alone, the connection carries on.
  p = await rawPeer(portA);
  p.socket.write(p.frame(1n, Buffer.from('{"full": "yes"}')));
  p.socket.write(p.frame(2n, Buffer.from('not json')));
  p.socket.write(p.frame(3n, srvstat));
  await until(() => a.got.length === 2);
  assert.equal(a.t.drops.malformed, 2);
  p.socket.destroy();

  // An announced payload beyond the limit is refused before it is read.
  p = await rawPeer(portA);
  const huge = Buffer.alloc(HEADER);
  huge.writeUInt32BE(0x44565041, 0);
  huge.writeUInt8(1, 4);
  huge.writeUInt8(MsgType.SrvStat, 5);
  huge.writeUInt32BE(MAX_PAYLOAD + 1, 16);
  p.socket.write(huge);
  await p.closed();
  assert.equal(a.t.drops.oversized, 1);

  // A node that is not a peer.
  p = await rawPeer(portA, 'intruder');
  await p.closed();
  assert.equal(a.t.drops.unknown_peer, 1);

  // Logged once per peer and reason per minute, however often it happens.
  for (let i = 0; i < 3; i++) {
    p = await rawPeer(portA);
    p.socket.write(p.frame(5n, srvstat));
    await p.closed();
  }
  assert.equal(a.t.drops.out_of_order, 4);
  assert.equal(a.log.lines.filter((l) => l.reason === 'out_of_order' && l.peer === 'b').length, 1);
});

test('noise from anywhere never stops an agent serving its peers', async () => {
  const portA = await freePort();
  const portB = await freePort();
  const a = await node('a', [{ name: 'b', host: '127.0.0.1', port: portB }], KEY, portA);
  let seed = 5;
  const rand = (n: number) => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n;
  for (let i = 0; i < 200; i++) {
    const s = net.connect({ host: '127.0.0.1', port: portA });
    s.on('error', () => undefined);
    await new Promise((r) => s.once('connect', r));
    // Random bytes, or a real header with random contents after it.
    const junk = randomBytes(4 + rand(200));
    if (i % 2) junk.writeUInt32BE(0x44565041, 0);
    s.end(junk);
  }
  const b = await node('b', [{ name: 'a', host: '127.0.0.1', port: portA }], KEY, portB);
  await until(() => b.t.connected('a'));
  b.t.send('a', srvstat);
  await until(() => a.got.length === 1);
  const total = Object.values(a.t.drops).reduce((x, y) => x + y, 0);
  assert.ok(total >= 100, `drops counted: ${JSON.stringify(a.t.drops)}`);
});

test('a peer that goes away and comes back is announced again (resynchronisation)', async () => {
  const portA = await freePort();
  const portB = await freePort();
  const a = await node('a', [{ name: 'b', host: '127.0.0.1', port: portB }], KEY, portA);
  const ups: string[] = [];
  const downs: string[] = [];
  a.t.on('peerUp', (p) => ups.push(p));
  a.t.on('peerDown', (p) => downs.push(p));
  const b = await node('b', [{ name: 'a', host: '127.0.0.1', port: portA }], KEY, portB);
  await until(() => ups.length === 1);
  await b.t.stop();
  await until(() => downs.length === 1);
  // The same node again (stopped with the others after the test).
  await node('b', [{ name: 'a', host: '127.0.0.1', port: portA }], KEY, portB);
  await until(() => ups.length === 2);
  assert.deepEqual(ups, ['b', 'b']);
});
