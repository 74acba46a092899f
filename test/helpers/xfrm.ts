/*
 * What the XFRM test files share: a network namespace of their own for the file's tests
 * (the kernel's SA and policy tables are per namespace), and an ESP tunnel-mode SA.
 */
import { after, before, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { Topology } from '../../src/lab/netns.js';
import { ANY_SELECTOR, NO_LIMITS, XfrmError, type Sa } from '../../src/ipsec/xfrm.js';
import { requireRoot, uniquePrefix } from './env.js';

/** A namespace made before the file's tests and removed after them (with its links); set once made. */
export function xfrmNamespace(tag: string): { name: string; topo: Topology } {
  const ns = { name: '', topo: new Topology(uniquePrefix(tag)) };
  before(() => {
    requireRoot();
    ns.name = ns.topo.ns('node');
  });
  after(() => ns.topo.teardown());
  return ns;
}

/** An ESP tunnel-mode SA with AES-GCM and ESN, as an IKE daemon installs them. */
export const ESP_SA: Sa = {
  src: '192.0.2.10', dst: '203.0.113.7', spi: 0xc0ffee01, proto: 'esp', mode: 'tunnel', reqid: 7, flags: 0,
  selector: { ...ANY_SELECTOR, src: '198.18.10.0', srcPrefix: 24, dst: '198.18.20.0', dstPrefix: 24 },
  aead: { name: 'rfc4106(gcm(aes))', key: Buffer.alloc(20, 0x42), icvBits: 128 },
  lifetime: NO_LIMITS,
  replay: { oseq: 1000, seq: 990, oseqHi: 0, seqHi: 0, window: 128, bitmap: Buffer.alloc(16, 0xff), esn: true },
};

/** scripts/kernel-lab sets this: the kernel there has ESP, so a test that cannot install an ESP SA fails. */
export const IN_KERNEL_LAB = process.env.DVIPA_KERNEL_LAB === '1';

/**
 * A test whose ESP SA install failed with `e`: inside the kernel lab, a failure (rethrown);
 * elsewhere the error must be the kernel's "no ESP" (an XFRM_MSG_NEWSA naming what it lacks),
 * and the test is skipped, visibly: the caller returns at once.
 */
export function skipWithoutEsp(t: TestContext, e: unknown): void {
  if (IN_KERNEL_LAB) throw e;
  assert.ok(e instanceof XfrmError, String(e));
  assert.equal(e.op, 'XFRM_MSG_NEWSA');
  assert.match(e.message, /not found/, 'the kernel says which type or algorithm it lacks');
  t.skip(`this kernel has no ESP (${e.message}): scripts/kernel-lab runs this test where it has (test/kernel-lab.test.ts)`);
}
