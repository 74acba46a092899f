/*
 * What the XFRM test files share: a network namespace of their own for the file's tests
 * (the kernel's SA and policy tables are per namespace), and an ESP tunnel-mode SA.
 */
import { after, before } from 'node:test';
import { Topology } from '../../src/lab/netns.js';
import { ANY_SELECTOR, NO_LIMITS, type Sa } from '../../src/ipsec/xfrm.js';
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
