/*
 * IPsec recovery into a real kernel, where it has ESP (the kernel lab; skipped, visibly, on a
 * kernel without): SAs recorded from one namespace's XFRM tables and re-installed into
 * another's, compared as the two kernels dump them, through dvipa's codec and through
 * iproute2's. The store is in memory: what is checked here is the kernel's state, not etcd
 * (ipsec-recovery.test.ts has the store on a real etcd, with an in-memory kernel).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { OwnerRecord } from '../../src/net/ownership.js';
import { reinstall, SaRecorder, type RecordStore, type XfrmOps } from '../../src/ipsec/recovery.js';
import { storeKey } from '../../src/ipsec/store.js';
import * as xfrm from '../../src/ipsec/xfrm.js';
import { ANY_SELECTOR, NO_LIMITS, type Sa } from '../../src/ipsec/xfrm.js';
import { inNetns, Topology } from '../../src/lab/netns.js';
import { requireRoot, uniquePrefix } from '../helpers/env.js';
import { bitmapWords, ipXfrmState, skipWithoutEsp } from '../helpers/xfrm.js';

const KEY = storeKey(randomBytes(32));
const ANY6 = { ...ANY_SELECTOR, src: '::', dst: '::' };
const sa = (src: string, dst: string, spi: number, replay: Sa['replay']): Sa => ({
  src,
  dst,
  spi,
  proto: 'esp',
  mode: 'tunnel',
  reqid: 7,
  flags: 0,
  selector: src.includes(':') ? ANY6 : ANY_SELECTOR,
  aead: { name: 'rfc4106(gcm(aes))', key: randomBytes(20), icvBits: 128 },
  lifetime: NO_LIMITS,
  replay,
});

/** The records in memory; every write is the owner's (fencing is tested on etcd elsewhere). */
class MemoryStore implements RecordStore {
  readonly blobs = new Map<string, Buffer>();
  async putBlobsFenced(entries: Array<[string, Buffer]>): Promise<boolean> {
    for (const [k, v] of entries) this.blobs.set(k, v);
    return true;
  }
  async getBlobs(keyPrefix: string): Promise<Map<string, Buffer>> {
    return new Map([...this.blobs].filter(([k]) => k.startsWith(keyPrefix)));
  }
  async deleteBlobsFenced(keyPrefix: string): Promise<boolean> {
    for (const k of [...this.blobs.keys()]) if (k.startsWith(keyPrefix)) this.blobs.delete(k);
    return true;
  }
}

/** A namespace's own XFRM tables, through dvipa's netlink. */
const kernelXfrm = (ns: string): XfrmOps => ({
  dumpSas: () => inNetns(ns, () => xfrm.dumpSas()),
  dumpPolicies: () => inNetns(ns, () => xfrm.dumpPolicies()),
  addSas: (sas, opts) => inNetns(ns, () => xfrm.addSas(sas, opts)),
  putPolicies: (ps) => inNetns(ns, () => xfrm.putPolicies(ps)),
  deleteSas: (ids) => inNetns(ns, () => xfrm.deleteSas(ids)),
});

/** SAs of DVIPA `d` with `PEER` recorded from one kernel and re-installed into another. */
async function reinstalledIntoKernel(t: TestContext, d: string, PEER: string): Promise<void> {
  requireRoot();
  const topo = new Topology(uniquePrefix('iprk'));
  t.after(() => topo.teardown());
  const [oldNs, newNs] = [topo.ns('old'), topo.ns('new')];
  // Counters in both ESN halves and a bitmap with a pattern: a slip of either shows.
  const inb = sa(PEER, d, 0x6002, {
    oseq: 0,
    seq: 123456,
    oseqHi: 0,
    seqHi: 3,
    window: 128,
    bitmap: Buffer.from('0f0f0f0f00ff00ffa5a5a5a5deadbeef', 'hex'),
    esn: true,
  });
  const out = sa(d, PEER, 0x6001, {
    oseq: 0xfffff000,
    seq: 0,
    oseqHi: 2,
    seqHi: 0,
    window: 64,
    bitmap: Buffer.alloc(8),
    esn: true,
  });
  try {
    inNetns(oldNs, () => xfrm.addSa(inb));
  } catch (e) {
    return skipWithoutEsp(t, e);
  }
  inNetns(oldNs, () => xfrm.addSa(out));
  const c = new MemoryStore();
  const owner: OwnerRecord = { node: 'k1', rank: 256, epoch: 1 };
  assert.equal((await new SaRecorder(kernelXfrm(oldNs), c, KEY, 'k1', 0).sync(d, owner)).written, 2);
  const r = await reinstall(kernelXfrm(newNs), c, KEY, 'k1', d, owner, 0x2000);
  assert.deepEqual([r.installed.length, r.failed, r.refused], [2, [], []]);
  const held = (ns: string, spi: number) => inNetns(ns, () => xfrm.dumpSas()).find((s) => s.spi === spi)!;
  assert.deepEqual(
    held(newNs, inb.spi).replay,
    held(oldNs, inb.spi).replay,
    'inbound: sequence numbers, window and bitmap as the old kernel had them',
  );
  assert.deepEqual(held(newNs, inb.spi).aead, inb.aead);
  const o = held(newNs, out.spi).replay;
  assert.deepEqual([o.oseqHi, o.oseq], [3, 0x1000], 'outbound: advanced by the margin, carried into the high half');
  // iproute2, reading the new kernel on its own, agrees.
  const ip = ipXfrmState(newNs, inb.spi);
  const want = inb.replay;
  assert.deepEqual(
    ip.replay,
    { seqHi: want.seqHi, seq: want.seq, oseqHi: 0, oseq: 0, window: want.window, bitmap: bitmapWords(want.bitmap) },
    ip.text,
  );
  assert.equal(ipXfrmState(newNs, out.spi).replay?.oseqHi, 3);
  t.diagnostic(
    `re-installed SAs of ${d} compared as the kernels dump them: replay state kept inbound, advanced outbound`,
  );
}

test("re-installed into the kernel: the new owner's kernel holds the inbound replay state the old owner's held (skipped without ESP)", (t) =>
  reinstalledIntoKernel(t, '192.0.2.14', '203.0.113.7'));

test("IPv6: an IPv6 DVIPA's SAs recorded, sealed and re-installed the same way (skipped without ESP)", (t) =>
  reinstalledIntoKernel(t, '2001:db8:100::14', '2001:db8:ffff::7'));
