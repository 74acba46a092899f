/*
 * Each BPF object declares only the maps of its role (bpf/maps_node.h, maps_router.h,
 * maps_target.h). Before, every object carried the router's 1M-entry CRT and Maglev
 * tables, and the socket-event loader, which does not resize the CRT, met a pinned CRT of
 * another size: libbpf refused to reuse it and the agent could not start.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FastPath } from '../../src/dataplane/fastpath.js';
import { SockEvents } from '../../src/cluster/sockevents.js';
import { declaredMaps, loadObject, mapRef } from '../../src/kernel/object.js';
import { sys } from '../../src/kernel/sys.js';
import { VerifierError } from '../../src/kernel/errors.js';
import { EXIT } from '../../src/errors.js';
import { CRT_DEFAULT_ENTRIES } from '../../src/dataplane/structs.js';
import { requireRoot, scratchPinRoot } from '../helpers/env.js';

const ROUTER = [
  'services',
  'svc_index',
  'routed',
  'fence',
  'maglev',
  'crt',
  'crt_key',
  'crt_est',
  'flow_rate',
  'affinity',
  'targets',
  'target_stats',
  'tx_ports',
  'svc_stats',
  'via_routes',
  'services6',
  'svc_index6',
  'routed6',
  'fence6',
  'crt6',
  'crt6_est',
  'affinity6',
];
const TARGET = [
  'served',
  'served_stats',
  'sock_events',
  'decap_addrs',
  'decap_routers',
  'decap_services',
  'decap_addrs6',
  'served6',
  'decap_routers6',
  'decap_services6',
  'served_stats6',
];
const NODE = ['node_config', 'reasons'];

// Sections libbpf turns into maps (name.bss, .rodata) are not declared maps.
const names = (obj: string) =>
  new Set(
    declaredMaps(obj)
      .map((m) => m.name)
      .filter((n) => !n.includes('.')),
  );

test('each object declares the maps of its role, and no other', () => {
  assert.deepEqual(names('distributor'), new Set([...NODE, ...ROUTER]));
  assert.deepEqual(names('decap'), new Set([...NODE, ...TARGET]));
  // Plus its own unpinned filter: each agent's copy holds its namespace and lost-event count.
  assert.deepEqual(names('sockstate'), new Set([...TARGET, 'sock_filter']));
});

test('socket events load over the pins of a node whose CRT is not at its default size', (t) => {
  requireRoot();
  const scratch = scratchPinRoot('roles');
  t.after(() => scratch.remove());
  const size = CRT_DEFAULT_ENTRIES / 16;
  const fp = FastPath.open({ pinRoot: scratch.pinRoot, crtMaxEntries: size });
  try {
    const events = new SockEvents(scratch.pinRoot, () => undefined);
    events.close();
    // And the node's data plane still opens over the same pins, the CRT at the size it was given.
    const again = FastPath.open({ pinRoot: scratch.pinRoot });
    assert.equal(again.crt.maxEntries, size);
    again.close();
  } finally {
    fp.close();
  }
});

test("an object that cannot load is a VerifierError with libbpf's log: here, a pinned CRT of another size", (t) => {
  requireRoot();
  const scratch = scratchPinRoot('load');
  t.after(() => scratch.remove());
  const fp = FastPath.open({ pinRoot: scratch.pinRoot, crtMaxEntries: CRT_DEFAULT_ENTRIES / 16 });
  try {
    assert.throws(
      () => loadObject('distributor', { pinRoot: scratch.pinRoot, maxEntries: { crt: CRT_DEFAULT_ENTRIES } }),
      (e: unknown) =>
        e instanceof VerifierError &&
        e.op === 'bpf_object__load' &&
        e.target === 'distributor.bpf.o' &&
        e.exit === EXIT.failed &&
        /couldn't reuse pinned map/.test(e.log) &&
        /couldn't reuse pinned map/.test(e.message),
    );
  } finally {
    fp.close();
  }
});

test('a MapRef: its info read once, buffers still checked against it; any other object is refused', (t) => {
  requireRoot();
  const scratch = scratchPinRoot('ref');
  t.after(() => scratch.remove());
  const fp = FastPath.open({ pinRoot: scratch.pinRoot, crtMaxEntries: 1024 });
  try {
    const fd = sys.objGet('crt_est', `${scratch.pinRoot}/crt_est`);
    try {
      const ref = mapRef('crt_est', fd);
      assert.equal(sys.mapInfo('crt_est', ref).maxEntries, 1024);
      const key = Buffer.alloc(declaredMaps('distributor').find((m) => m.name === 'crt_est')!.keySize);
      assert.throws(
        () => sys.mapLookup('crt_est', ref, key, Buffer.alloc(1)),
        /value buffer holds 1 bytes, the map needs/,
      );
      assert.equal(sys.mapLookup('crt_est', ref, key, Buffer.alloc(64)), false);
      // MapRef has no members TypeScript can see: the addon tells a MapRef from any other object.
      assert.throws(
        () => sys.mapLookup('crt_est', {}, key, Buffer.alloc(64)),
        /expected a map: a MapRef or a file descriptor/,
      );
    } finally {
      sys.closeFd('crt_est', fd);
    }
  } finally {
    fp.close();
  }
});
