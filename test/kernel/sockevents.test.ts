/*
 * The socket events' ring buffer read on Node's loop (native/ringbuf.cc): a listener that
 * appears is reported; an exception thrown by the handler is the process's uncaught
 * exception, as from any event handler, and does not abort the process from inside libuv.
 * IPv6: listeners and connections on a served IPv6 DVIPA, from the events and from the scan.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { requireRoot, scratchPinRoot, uniquePrefix } from '../helpers/env.js';

const EVENTS = new URL('../../src/cluster/sockevents.js', import.meta.url).href;
const FASTPATH = new URL('../../src/dataplane/fastpath.js', import.meta.url).href;
const SOCKETS = new URL('../../src/cluster/sockets.js', import.meta.url).href;

test('a listener is reported; a throwing handler is an uncaught exception, not an abort', (t) => {
  requireRoot();
  const pins = scratchPinRoot('sev');
  t.after(() => pins.remove());
  const script = `
    import * as net from 'node:net';
    const { SockEvents } = await import(${JSON.stringify(EVENTS)});
    const server = net.createServer();
    process.on('uncaughtException', (e) => {
      console.log('uncaught: ' + e.message);
      process.exit(0);
    });
    new SockEvents(${JSON.stringify(pins.pinRoot)}, (events) => {
      if (events.some((e) => e.localPort === server.address()?.port && e.newstate === 10)) throw new Error('handler failed on the listener');
    });
    server.listen(0, '127.0.0.1');
    setTimeout(() => { console.log('no event'); process.exit(1); }, 5000);
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    encoding: 'utf8',
    cwd: fileURLToPath(new URL('.', import.meta.url)),
  });
  assert.equal(r.signal, null, `killed by ${r.signal}: ${r.stderr}`);
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
  assert.match(r.stdout, /^uncaught: handler failed on the listener$/m);
});

test('IPv6: a listener and a connection on a served IPv6 DVIPA are reported with their addresses; the scan agrees', (t) => {
  requireRoot();
  const pins = scratchPinRoot('sev6');
  const ns = `${uniquePrefix('sev6')}ns`;
  t.after(() => {
    spawnSync('ip', ['netns', 'del', ns]);
    pins.remove();
  });
  const DVIPA = '2001:db8:9::10';
  const CLIENT = '2001:db8:9::1';
  const OTHER = '2001:db8:9::20'; // on the node, not served: its connections are not reported
  for (const args of [
    ['netns', 'add', ns],
    ['-n', ns, 'link', 'set', 'lo', 'up'],
    ...[DVIPA, CLIENT, OTHER].map((a) => ['-n', ns, 'addr', 'add', `${a}/128`, 'nodad', 'dev', 'lo']),
  ]) {
    const r = spawnSync('ip', args, { encoding: 'utf8' });
    assert.equal(r.status, 0, `ip ${args.join(' ')}: ${r.stderr}`);
  }
  const script = `
    import * as net from 'node:net';
    const { SockEvents } = await import(${JSON.stringify(EVENTS)});
    const { FastPath } = await import(${JSON.stringify(FASTPATH)});
    const { readSockets, listensOn, connectionsOn } = await import(${JSON.stringify(SOCKETS)});
    const fp = FastPath.open({ pinRoot: ${JSON.stringify(pins.pinRoot)} });
    fp.serve(${JSON.stringify(DVIPA)});
    const seen = [];
    const events = new SockEvents(${JSON.stringify(pins.pinRoot)}, (e) => seen.push(...e));
    const connect = (host) => new Promise((resolve) => {
      const c = net.connect({ port: 8080, host, localAddress: ${JSON.stringify(CLIENT)} }, () => resolve(c));
    });
    const server = net.createServer(() => {}).listen(8080, '::', async () => {
      const clients = [await connect(${JSON.stringify(DVIPA)}), await connect(${JSON.stringify(OTHER)})];
      setTimeout(() => {
        const socks = readSockets();
        console.log(JSON.stringify({
          seen,
          listens: [listensOn(socks, ${JSON.stringify(DVIPA)}, 8080), listensOn(socks, '192.0.2.1', 8080),
            listensOn(socks, ${JSON.stringify(DVIPA)}, 8081)],
          conns: connectionsOn(socks, new Set([${JSON.stringify(DVIPA)}])),
        }));
        for (const c of clients) c.destroy();
        server.close();
        events.close();
        fp.close();
      }, 300);
    });
  `;
  const r = spawnSync('nsenter', [`--net=/run/netns/${ns}`, process.execPath, '--input-type=module', '-e', script], {
    encoding: 'utf8',
    timeout: 20000,
  });
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as {
    seen: Array<{ local: string; remote: string; localPort: number; remotePort: number; newstate: number }>;
    listens: boolean[];
    conns: Array<{ saddr: string; daddr: string; sport: number; dport: number }>;
  };
  assert.ok(
    out.seen.some((e) => e.local === '::' && e.localPort === 8080 && e.newstate === 10),
    `the IPv6 wildcard listener: ${JSON.stringify(out.seen)}`,
  );
  const established = out.seen.filter((e) => e.newstate === 1);
  assert.deepEqual(
    established.map((e) => [e.local, e.localPort, e.remote]),
    [[DVIPA, 8080, CLIENT]],
    'the served DVIPA connection only (not the client side, not the unserved address)',
  );
  assert.deepEqual(out.listens, [true, true, false], ':: serves the IPv6 DVIPA and, dual-stack, an IPv4 one');
  assert.deepEqual(
    out.conns.map((c) => [c.saddr, c.daddr, c.dport]),
    [[CLIENT, DVIPA, 8080]],
  );
  assert.equal(out.conns[0].sport, established[0].remotePort);
});
