/*
 * The socket events' ring buffer read on Node's loop (native/ringbuf.cc): a listener that
 * appears is reported; an exception thrown by the handler is the process's uncaught
 * exception, as from any event handler, and does not abort the process from inside libuv.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { requireRoot, scratchPinRoot } from '../helpers/env.js';

const EVENTS = new URL('../../src/cluster/sockevents.js', import.meta.url).href;

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
