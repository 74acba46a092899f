/*
 * The user-space codecs must match the C structs byte for byte. The compiled objects carry
 * BTF for every struct and enum of bpf/dvipa.h: compare sizes, field names and offsets,
 * and the reason numbering, so neither side can drift without this failing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { declaredMaps } from '../../src/kernel/object.js';
import { sys } from '../../src/kernel/sys.js';
import type { Struct } from '../../src/dataplane/codec.js';
import { mapCount } from '../../src/dataplane/map-count.js';
import {
  affinity,
  affinity6,
  affinity6Key,
  affinityKey,
  crt6Entry,
  crtEntry,
  crtSlot,
  crtKey,
  CRT_DEFAULT_ENTRIES,
  CRT_WAYS,
  CRT6_DEFAULT_ENTRIES,
  flow,
  flowRate,
  flow6,
  MAX_SERVICES,
  nodeConfig,
  targetEntry,
  targetStats,
  REASONS,
  servedStats,
  svc,
  svc6Key,
  svcKey,
  svcStats,
  CrtOrigin,
} from '../../src/dataplane/structs.js';
import { xdpMd } from '../../src/dataplane/testrun.js';
import { sockEvent, sockFilter } from '../../src/cluster/sockevents.js';
import { objectPath } from '../helpers/env.js';

const camel = (s: string) => s.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());

function assertMatchesBtf(obj: string, s: Struct<unknown>): void {
  const btf = sys.btfStruct(obj, obj, s.cName);
  assert.equal(s.size, btf.size, `${s.cName}: size`);
  const fromC = btf.members
    .filter((m) => !m.name.startsWith('pad'))
    .map((m) => ({ name: camel(m.name), offset: m.offset, size: m.size }));
  const fromTs = s.fields
    .filter((f) => !f.name.startsWith('pad'))
    .map((f) => ({ name: f.name, offset: f.offset, size: f.size }));
  assert.deepEqual(fromTs, fromC, `${s.cName}: fields`);
}

for (const s of [
  svcKey,
  svc,
  flow,
  crtEntry,
  crtSlot,
  crtKey,
  nodeConfig,
  flowRate,
  svcStats,
  targetEntry,
  targetStats,
  affinityKey,
  affinity,
  svc6Key,
  flow6,
  crt6Entry,
  affinity6Key,
  affinity6,
]) {
  test(`${s.cName} matches the BTF of distributor.bpf.o`, () => assertMatchesBtf(objectPath('distributor'), s));
}

test('dvipa_served_stats matches the BTF of decap.bpf.o', () => assertMatchesBtf(objectPath('decap'), servedStats));

test('dvipa_sock_event matches the BTF of sockstate.bpf.o', () => assertMatchesBtf(objectPath('sockstate'), sockEvent));
test('dvipa_sock_filter matches the BTF of sockstate.bpf.o', () =>
  assertMatchesBtf(objectPath('sockstate'), sockFilter));

test('dvipa_map_count matches the BTF of mapcount.bpf.o', () => assertMatchesBtf(objectPath('mapcount'), mapCount));

test('struct xdp_md matches the BTF of the kernel build', () => {
  assertMatchesBtf(objectPath('distributor'), xdpMd);
});

test('enum dvipa_reason numbering matches REASONS', () => {
  const e = sys.btfEnum('distributor', objectPath('distributor'), 'dvipa_reason');
  const expected: Record<string, number> = {};
  REASONS.forEach((r, i) => (expected[`DVIPA_R_${r.toUpperCase()}`] = i));
  expected.DVIPA_R_COUNT = REASONS.length;
  assert.deepEqual(e, expected);
});

test('enum dvipa_crt_origin matches CrtOrigin', () => {
  assert.deepEqual(sys.btfEnum('distributor', objectPath('distributor'), 'dvipa_crt_origin'), {
    DVIPA_CRT_FIRST: CrtOrigin.First,
    DVIPA_CRT_RECOVERED: CrtOrigin.Recovered,
    DVIPA_CRT_CONTROL: CrtOrigin.Control,
  });
});

test('map definitions carry the sizes user space assumes', () => {
  const router = new Map(declaredMaps('distributor').map((m) => [m.name, m]));
  assert.equal(router.get('maglev')?.maxEntries, MAX_SERVICES);
  assert.equal(router.get('services')?.maxEntries, MAX_SERVICES);
  assert.equal(router.get('svc_stats')?.maxEntries, MAX_SERVICES);
  // The cache of unconfirmed flows: sets of CRT_WAYS slots, as many as the default CRT's entries fill.
  assert.equal(router.get('crt')?.valueSize, CRT_WAYS * crtSlot.size);
  assert.equal(router.get('crt')?.maxEntries, CRT_DEFAULT_ENTRIES / CRT_WAYS);
  assert.equal(sys.btfStruct('distributor', objectPath('distributor'), 'dvipa_crt_set').size, CRT_WAYS * crtSlot.size);
  assert.equal(router.get('crt_est')?.keySize, flow.size);
  assert.equal(router.get('crt_est')?.valueSize, crtEntry.size);
  assert.equal(router.get('services')?.keySize, svcKey.size);
  for (const name of ['distributor', 'decap']) {
    assert.equal(declaredMaps(name).find((m) => m.name === 'reasons')?.maxEntries, REASONS.length);
  }
  assert.equal(declaredMaps('decap').find((m) => m.name === 'served_stats')?.keySize, svcKey.size);
  // IPv6: keys and values of the maps beside the IPv4 ones.
  assert.equal(router.get('crt6')?.keySize, flow6.size);
  assert.equal(router.get('crt6')?.valueSize, crt6Entry.size);
  assert.equal(router.get('crt6')?.maxEntries, CRT6_DEFAULT_ENTRIES);
  assert.equal(router.get('crt6_est')?.keySize, flow6.size);
  assert.equal(router.get('crt6_est')?.valueSize, crt6Entry.size);
  assert.equal(router.get('crt6_est')?.maxEntries, CRT6_DEFAULT_ENTRIES);
  assert.equal(router.get('services6')?.keySize, svc6Key.size);
  assert.equal(router.get('affinity6')?.keySize, affinity6Key.size);
  assert.equal(router.get('affinity6')?.valueSize, affinity6.size);
  for (const name of ['routed6', 'fence6']) assert.equal(router.get(name)?.keySize, 16, name);
  const target = new Map(declaredMaps('decap').map((m) => [m.name, m]));
  for (const name of ['decap_services6', 'served_stats6']) assert.equal(target.get(name)?.keySize, svc6Key.size, name);
  for (const name of ['served6', 'decap_routers6', 'decap_addrs6']) assert.equal(target.get(name)?.keySize, 16, name);
});
