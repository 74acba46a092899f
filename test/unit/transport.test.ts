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
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import { Transport, type Peer, type TransportOptions } from '../../src/cluster/transport.js';
import { encodeFrame, FrameReader, MAX_PAYLOAD, HEADER, VERSION } from '../../src/cluster/frame.js';
import { decodeMessage, encodeMessage, MsgType, type Hello, type Message } from '../../src/cluster/messages.js';
import { measureProcess } from '../../src/bench/transport.js';
import { Handshake, loadIdentities, newIdentity, type Identities } from '../../src/cluster/handshake.js';

const KEY = randomBytes(32);
const started: Transport[] = [];
after(async () => {
  for (const t of started) await t.stop();
});

function capture(): { logger: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      lines.push(JSON.parse(String(chunk)));
      cb();
    },
  });
  return { logger: pino({ level: 'warn' }, stream), lines };
}

async function node(name: string, peers: Peer[], key = KEY, port = 0, more: Partial<TransportOptions> = {}) {
  const log = capture();
  const t = new Transport({ node: name, key, listen: { host: '127.0.0.1', port }, peers, logger: log.logger, ...more });
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

const srvstat: Message = {
  type: MsgType.SrvStat,
  body: { full: true, up: [{ dvipa: '192.0.2.10', port: 80, protocol: 'tcp' }], down: [] },
};

/** A hand-driven dialer "b" that completes the handshake with `port`, then sends raw bytes. */
async function rawPeer(port: number, name = 'b', key = KEY, ids?: Identities) {
  const socket = net.connect({ host: '127.0.0.1', port });
  let isClosed = false;
  socket.once('close', () => (isClosed = true));
  const hs = new Handshake(key, name, ids);
  let theirs: Hello | undefined;
  let session: Buffer | undefined;
  let seq = 0n;
  const reader = new FrameReader(
    () => key,
    (f) => {
      const m = decodeMessage(f.type, f.payload);
      if (m.type === MsgType.Hello) theirs = m.body;
      if (m.type !== MsgType.Auth || !theirs) return;
      const t = Handshake.transcript(hs.hello, theirs);
      socket.write(
        encodeFrame(key, {
          type: MsgType.Auth,
          seq: ++seq,
          payload: encodeMessage({ type: MsgType.Auth, body: { proof: hs.prove('dialer', t) } }),
        }),
      );
      session = hs.sessionKey(theirs.eph, t);
    },
  );
  socket.on('data', (d: Buffer) => {
    if (!session) reader.push(d);
  });
  socket.on('error', () => undefined);
  await new Promise((r) => socket.once('connect', r));
  socket.write(
    encodeFrame(key, {
      type: MsgType.Hello,
      seq: ++seq,
      payload: encodeMessage({ type: MsgType.Hello, body: hs.hello }),
    }),
  );
  await until(() => session !== undefined || isClosed);
  return {
    socket,
    authenticated: session !== undefined,
    /** Resolves when the agent has closed the connection (fails the test after 5 s). */
    closed: () => until(() => isClosed),
    isClosed: () => isClosed,
    frame: (seq: bigint, m: Message | Buffer, type: number = MsgType.SrvStat) =>
      encodeFrame(session!, {
        type: Buffer.isBuffer(m) ? type : m.type,
        seq,
        payload: Buffer.isBuffer(m) ? m : encodeMessage(m),
      }),
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
  huge.writeUInt8(VERSION, 4);
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

test('a HELLO and AUTH recorded from a real handshake, replayed, authenticate nothing', async () => {
  const portA = await freePort();
  const a = await node('a', [{ name: 'b', host: '127.0.0.1', port: 1 }], KEY, portA);
  // b dials a through a recording proxy: the first 2 frames b sends are its HELLO and AUTH.
  const recorded: Buffer[] = [];
  const proxy = net.createServer((inbound) => {
    const out = net.connect({ host: '127.0.0.1', port: portA });
    inbound.on('data', (d) => {
      recorded.push(d);
      out.write(d);
    });
    out.on('data', (d) => inbound.write(d));
    for (const x of [inbound, out]) x.on('error', () => undefined);
    inbound.on('close', () => out.destroy());
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
  const b = await node('b', [{ name: 'a', host: '127.0.0.1', port: (proxy.address() as net.AddressInfo).port }]);
  await until(() => b.t.connected('a'));
  b.t.send('a', srvstat);
  await until(() => a.got.length === 1);
  await b.t.stop();
  proxy.close();

  const replay = net.connect({ host: '127.0.0.1', port: portA });
  replay.on('error', () => undefined);
  replay.resume();
  let closed = false;
  replay.once('close', () => (closed = true));
  await new Promise((r) => replay.once('connect', r));
  replay.write(Buffer.concat(recorded));
  await until(() => closed);
  assert.equal(a.t.drops.bad_proof, 1, JSON.stringify(a.t.drops));
  assert.equal(a.got.length, 1, 'nothing delivered from the replay');
});

test('before authentication: frames over 1 KiB and slow handshakes are cut off at once', async () => {
  const portA = await freePort();
  const a = await node('a', [{ name: 'b', host: '127.0.0.1', port: 1 }], KEY, portA, { limits: { handshakeMs: 300 } });
  const header = (length: number) => {
    const h = Buffer.alloc(HEADER);
    h.writeUInt32BE(0x44565041, 0);
    h.writeUInt8(VERSION, 4);
    h.writeUInt32BE(length, 16);
    return h;
  };
  const open = async (bytes: Buffer) => {
    const s = net.connect({ host: '127.0.0.1', port: portA });
    s.on('error', () => undefined);
    let closed = false;
    s.once('close', () => (closed = true));
    await new Promise((r) => s.once('connect', r));
    s.write(bytes);
    return { s, closed: () => closed };
  };
  // A 1 MiB frame announced before any HELLO (what a stranger used to park).
  const big = await open(header(MAX_PAYLOAD));
  await until(big.closed, 1000);
  assert.equal(a.t.drops.oversized, 1);
  // Silence after connecting: closed by the handshake deadline.
  const t0 = Date.now();
  const silent = await open(Buffer.alloc(0));
  await until(silent.closed, 2000);
  assert.ok(Date.now() - t0 < 1500, `closed after ${Date.now() - t0} ms`);
  assert.equal(a.t.drops.hello_timeout, 1);
});

test("connections only from peers' addresses, handshakes capped per source and in all; peers still get through", async () => {
  const portA = await freePort();
  const portB = await freePort();
  const limits = { handshakeMs: 1000, perSource: 4, pending: 16 };
  const a = await node('a', [{ name: 'b', host: '127.0.0.1', port: portB }], KEY, portA, { limits });
  const flood = async (from: string, n: number) => {
    const sockets: net.Socket[] = [];
    for (let i = 0; i < n; i++) {
      const s = net.connect({ host: '127.0.0.1', port: portA, localAddress: from });
      s.on('error', () => undefined);
      sockets.push(s);
    }
    await Promise.all(
      sockets.map(
        (s) =>
          new Promise((r) => {
            s.once('connect', r);
            s.once('close', r);
          }),
      ),
    );
    return sockets;
  };
  const m = await measureProcess(async () => {
    // A stranger (not a peer's address): every connection closed at once.
    const stranger = await flood('127.0.0.2', 500);
    await until(() => (a.t.drops.unknown_source ?? 0) === 500);
    // From a peer's address: 4 may wait in the handshake, the rest are refused.
    const near = await flood('127.0.0.1', 500);
    await until(() => (a.t.drops.too_many ?? 0) >= 496);
    await until(() => (a.t.drops.hello_timeout ?? 0) === 4, 3000);
    for (const s of [...stranger, ...near]) s.destroy();
  });
  const rssMb = m.rssPeakMb - m.rssBeforeMb;
  console.log(
    `flood of 1000 connections (attacker in this process): loop delay max ${m.loopDelayMaxMs.toFixed(1)} ms, RSS +${rssMb.toFixed(1)} MB`,
  );
  assert.equal(a.t.drops.too_many, 496);
  assert.ok(rssMb < 50, `RSS grew ${rssMb} MB`);
  const b = await node('b', [{ name: 'a', host: '127.0.0.1', port: portA }], KEY, portB);
  await until(() => b.t.connected('a'));
  b.t.send('a', srvstat);
  await until(() => a.got.length === 1);
});

test('idle: a silent authenticated connection is closed, a quiet peer is not (it pings)', async () => {
  const portA = await freePort();
  const portB = await freePort();
  const limits = { idleMs: 600 };
  const a = await node('a', [{ name: 'b', host: '127.0.0.1', port: portB }], KEY, portA, { limits });
  const p = await rawPeer(portA);
  assert.ok(p.authenticated);
  await p.closed();
  assert.equal(a.t.drops.idle, 1);
  const ups: string[] = [];
  const b = await node('b', [{ name: 'a', host: '127.0.0.1', port: portA }], KEY, portB, { limits });
  b.t.on('peerUp', (x) => ups.push(x));
  await until(() => b.t.connected('a'));
  await new Promise((r) => setTimeout(r, 2000));
  assert.ok(b.t.connected('a'));
  assert.equal(a.t.drops.idle, 1, 'the pinging peer was not closed');
  assert.deepEqual(ups, ['a']);
});

test('a peer whose host died (no FIN) and came back: its new run dialling in replaces the connection to the old', async () => {
  const portA = await freePort();
  const portB = await freePort();
  const a = await node('a', [{ name: 'b', host: '127.0.0.1', port: portB }], KEY, portA);
  const events: string[] = [];
  a.t.on('peerUp', (p) => events.push(`up ${p}`));
  a.t.on('peerDown', (p) => events.push(`down ${p}`));
  const b = await node('b', [{ name: 'a', host: '127.0.0.1', port: portA }], KEY, portB);
  await until(() => events.length === 1);
  // b's host dies: its sockets say nothing more, not even a FIN (kept out of its stop, paused).
  const dead = [...(b.t as unknown as { sockets: Set<net.Socket> }).sockets];
  for (const s of dead) s.pause();
  (b.t as unknown as { sockets: Set<net.Socket> }).sockets.clear();
  // Its listener closes at once; the close's promise waits for the dead connections.
  const stopped = b.t.stop();
  try {
    // b's next run: a still holds a connection to the old one, which its writes reach without error.
    const b2 = await node('b', [{ name: 'a', host: '127.0.0.1', port: portA }], KEY, portB);
    await until(() => events.length === 3, 3000);
    assert.deepEqual(events, ['up b', 'down b', 'up b'], 'dialled anew as soon as the new run dialled in');
    assert.ok(a.t.send('b', srvstat));
    await until(() => b2.got.length === 1, 3000);
    assert.deepEqual(b2.got, [['a', srvstat]]);
    // A reconnection of the same run is no restart: nothing more happens.
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(events.length, 3);
  } finally {
    for (const s of dead) s.destroy();
    // Bounded: a stop left waiting on a connection nobody holds any more fails here, not by the file's timeout.
    const servers = (b.t as unknown as { servers: net.Server[] }).servers;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      stopped,
      new Promise((_, reject) => {
        timer = setTimeout(() => {
          void Promise.all(servers.map((x) => new Promise((r) => x.getConnections((_e, n) => r(n))))).then((open) =>
            reject(new Error(`b's stop still waits after 5 s; its servers' open connections: ${open.join(', ')}`)),
          );
        }, 5000);
      }),
    ]).finally(() => clearTimeout(timer));
  }
});

test('a peer that stops reading is cut off at the send queue bound, then resynchronised', async () => {
  const portA = await freePort();
  // "b" completes the handshake as listener... by being a real transport that is then paused.
  const portB = await freePort();
  const b = await node('b', [{ name: 'a', host: '127.0.0.1', port: portA }], KEY, portB);
  const a = await node('a', [{ name: 'b', host: '127.0.0.1', port: portB }], KEY, portA, {
    limits: { sendQueueBytes: 1 << 20 },
  });
  const ups: string[] = [];
  a.t.on('peerUp', (x) => ups.push(x));
  await until(() => a.t.connected('b'));
  // b stops reading: its sockets are paused.
  const server = (b.t as unknown as { sockets: Set<net.Socket> }).sockets;
  for (const s of server) s.pause();
  const added = Array.from({ length: 8000 }, (_, i) => ({
    saddr: '198.18.0.1',
    daddr: '192.0.2.10',
    sport: 1 + (i % 60000),
    dport: 80,
    protocol: 'tcp' as const,
  }));
  const conns: Message = { type: MsgType.Conns, body: { full: false, added, removed: [] } };
  let sent = 0;
  while (a.t.send('b', conns) && sent < 1000) sent++;
  assert.ok(sent < 1000, 'the queue is bounded');
  assert.equal(a.t.drops.send_queue_full, 1);
  await until(() => ups.length === 2, 5000);
});

test('a listener that throws (E2BIG, EMFILE...) is a logged refusal, not a crash', async () => {
  const portA = await freePort();
  const portB = await freePort();
  const a = await node('a', [{ name: 'b', host: '127.0.0.1', port: portB }], KEY, portA);
  let n = 0;
  a.t.on('message', () => {
    if (n++ === 0) throw Object.assign(new Error('spawnSync ip E2BIG'), { code: 'E2BIG' });
  });
  const b = await node('b', [{ name: 'a', host: '127.0.0.1', port: portA }], KEY, portB);
  await until(() => b.t.connected('a'));
  b.t.send('a', srvstat);
  b.t.send('a', srvstat);
  await until(() => n === 2);
  assert.equal(a.t.drops.handler_error, 1);
  assert.ok(a.log.lines.some((l) => l.reason === 'handler_error' && String(l.detail).includes('E2BIG')));
});

test('per-node identities: a node holding the cluster key still cannot speak as another node', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvipa-ids-'));
  try {
    for (const n of ['a', 'b', 't']) newIdentity(dir, n);
    const portA = await freePort();
    const portB = await freePort();
    const a = await node(
      'a',
      [
        { name: 'b', host: '127.0.0.1', port: portB },
        { name: 't', host: '127.0.0.1', port: 1 },
      ],
      KEY,
      portA,
      { identities: loadIdentities(dir, 'a', ['b', 't']) },
    );
    const b = await node('b', [{ name: 'a', host: '127.0.0.1', port: portA }], KEY, portB, {
      identities: loadIdentities(dir, 'b', ['a']),
    });
    await until(() => b.t.connected('a'));
    // t, with the cluster key and its own private key, claims to be b.
    const forged = await rawPeer(portA, 'b', KEY, loadIdentities(dir, 't', ['a']));
    await forged.closed();
    assert.equal(a.t.drops.bad_proof, 1);
    // As itself it gets in.
    const honest = await rawPeer(portA, 't', KEY, loadIdentities(dir, 't', ['a']));
    assert.ok(honest.authenticated);
    honest.socket.write(honest.frame(1n, srvstat));
    await until(() => a.got.some(([p]) => p === 't'));
    honest.socket.destroy();
    // A private key others may read is refused.
    fs.chmodSync(path.join(dir, 'a.key'), 0o644);
    assert.throws(() => loadIdentities(dir, 'a', ['b']), /a\.key.*open to group or others/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('IPv6 cluster addresses: a dual-stack node listens on both and each pair connects over a family it shares', async () => {
  const [portA, portB, portC] = [await freePort(), await freePort(), await freePort()];
  // a: 127.0.0.1 and ::1; b: ::1 only (its peers know it by IPv6); c: 127.0.0.1 only.
  const a = await node(
    'a',
    [
      { name: 'b', host: '0:0::1', port: portB },
      { name: 'c', host: '127.0.0.1', port: portC },
    ],
    KEY,
    portA,
    { listen: { host: '127.0.0.1', host6: '::1', port: portA } },
  );
  const b = await node('b', [{ name: 'a', host: '127.0.0.1', host6: '::1', port: portA }], KEY, portB, {
    listen: { host: '::1', port: portB },
  });
  const c = await node('c', [{ name: 'a', host: '127.0.0.1', host6: '::1', port: portA }], KEY, portC);
  await until(() => a.t.connected('b') && a.t.connected('c') && b.t.connected('a') && c.t.connected('a'));
  assert.ok(b.t.send('a', srvstat));
  assert.ok(c.t.send('a', srvstat));
  assert.ok(a.t.send('b', srvstat));
  await until(() => a.got.length === 2 && b.got.length === 1);
  assert.deepEqual(a.got.map(([p]) => p).sort(), ['b', 'c']);
  assert.deepEqual(b.got[0], ['a', srvstat]);
  assert.deepEqual(a.t.drops, {}, 'the IPv6 source is known as b, in whichever spelling it was configured');
  // a's IPv6 listener takes only its peers' addresses: b's is ::1, so a stranger on ::1 is
  // refused by its handshake, never by its family.
  const stranger = net.connect({ host: '::1', port: portA });
  stranger.on('error', () => undefined);
  await new Promise((r) => stranger.once('close', r));
});
