/*
 * What the XFRM test files share: a network namespace of their own for the file's tests
 * (the kernel's SA and policy tables are per namespace), and an ESP tunnel-mode SA.
 */
import { after, before, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { inNetns, nsIp, Topology } from '../../src/lab/netns.js';
import { ANY_SELECTOR, NO_LIMITS, XfrmError, type Sa } from '../../src/ipsec/xfrm.js';
import { IN_KERNEL_LAB, requireRoot, uniquePrefix } from './env.js';

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
  src: '192.0.2.10',
  dst: '203.0.113.7',
  spi: 0xc0ffee01,
  proto: 'esp',
  mode: 'tunnel',
  reqid: 7,
  flags: 0,
  selector: { ...ANY_SELECTOR, src: '198.18.10.0', srcPrefix: 24, dst: '198.18.20.0', dstPrefix: 24 },
  aead: { name: 'rfc4106(gcm(aes))', key: Buffer.alloc(20, 0x42), icvBits: 128 },
  lifetime: NO_LIMITS,
  replay: { oseq: 1000, seq: 990, oseqHi: 0, seqHi: 0, window: 128, bitmap: Buffer.alloc(16, 0xff), esn: true },
};

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
  t.skip(
    `this kernel has no ESP (${e.message}): scripts/kernel-lab runs this test where it has (test/kernel-lab.test.ts)`,
  );
}

/**
 * What iproute2 (an independent decoder of the kernel's XFRM dump) shows of a namespace's SA
 * `spi`, with `ip -s xfrm state` (iproute2 has no JSON for XFRM): enough to cross-check dvipa's codec.
 */
export function ipXfrmState(
  ns: string,
  spi: number,
): {
  text: string;
  aead?: { name: string; key: string; icvBits: number };
  replay?: { seqHi: number; seq: number; oseqHi: number; oseq: number; window: number; bitmap: number[] };
} {
  const text = nsIp(ns, '-s', 'xfrm', 'state', 'list', 'spi', `0x${spi.toString(16).padStart(8, '0')}`);
  const aead = /aead (\S+) 0x([0-9a-f]+) (?:\(\d+ bits\) )?(\d+)/.exec(text);
  const esn =
    /seq-hi 0x([0-9a-f]+), seq 0x([0-9a-f]+), oseq-hi 0x([0-9a-f]+), oseq 0x([0-9a-f]+)\s+replay_window (\d+), bitmap-length (\d+)\s+((?:[0-9a-f]{8}\s*)*)/.exec(
      text,
    );
  return {
    text,
    aead: aead ? { name: aead[1], key: aead[2], icvBits: Number(aead[3]) } : undefined,
    replay: esn
      ? {
          seqHi: parseInt(esn[1], 16),
          seq: parseInt(esn[2], 16),
          oseqHi: parseInt(esn[3], 16),
          oseq: parseInt(esn[4], 16),
          window: Number(esn[5]),
          bitmap: esn[7]
            .trim()
            .split(/\s+/)
            .filter(Boolean)
            .map((w) => parseInt(w, 16))
            .slice(0, Number(esn[6])),
        }
      : undefined,
  };
}

/** The replay bitmap as iproute2 prints it: 32-bit words in host (little-endian) order, the last word first. */
export const bitmapWords = (b: Buffer) =>
  Array.from({ length: b.length / 4 }, (_, i) => b.readUInt32LE(4 * i)).reverse();

/** `ip xfrm policy` of a namespace, one entry per policy: selector, direction, priority, templates. */
export function ipXfrmPolicies(ns: string): Array<{
  src: string;
  dst: string;
  dir: string;
  priority: number;
  tmpls: Array<{ src: string; dst: string; proto: string; reqid: number; mode: string }>;
}> {
  const text = nsIp(ns, 'xfrm', 'policy', 'list');
  return text
    .split(/\n(?=src )/)
    .filter((e) => e.startsWith('src '))
    .map((e) => {
      const sel = /^src (\S+) dst (\S+)/.exec(e)!;
      const tmpls = [...e.matchAll(/tmpl src (\S+) dst (\S+)\s+proto (\S+) reqid (\d+) mode (\S+)/g)].map((m) => ({
        src: m[1],
        dst: m[2],
        proto: m[3],
        reqid: Number(m[4]),
        mode: m[5],
      }));
      return {
        src: sel[1],
        dst: sel[2],
        dir: /dir (\S+)/.exec(e)![1],
        priority: Number(/priority (\d+)/.exec(e)![1]),
        tmpls,
      };
    });
}

/** The kernel's XFRM counters of a namespace (/proc/net/xfrm_stat): XfrmInStateSeqError counts replays. */
export function xfrmStat(ns: string): Record<string, number> {
  const text = inNetns(ns, () => fs.readFileSync('/proc/thread-self/net/xfrm_stat', 'utf8'));
  return Object.fromEntries(
    text
      .trim()
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .map(([k, v]) => [k, Number(v)]),
  );
}
