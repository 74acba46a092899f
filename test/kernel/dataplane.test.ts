/*
 * The typed data-plane API on the real kernel: pinned state survives a reopen, batch
 * operations move a million CRT entries, attach/replace/detach through bpf_links, and
 * failures carry the operation, the map and the errno.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as os from 'node:os';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { FastPath } from '../../src/dataplane/fastpath.js';
import { CrtWalker } from '../../src/dataplane/crt-walk.js';
import { BpfMap } from '../../src/dataplane/map.js';
import { MapCounter } from '../../src/dataplane/map-count.js';
import { SyscallError } from '../../src/kernel/errors.js';
import {
  CrtOrigin,
  CRT_WAYS,
  crtEntry,
  crt6Entry,
  crtKey,
  crtSlot,
  flow as flowCodec,
  flow6,
  u32,
  MAX_SERVICES,
  type CrtEntry,
} from '../../src/dataplane/structs.js';
import { sys } from '../../src/kernel/sys.js';

const BPF_MAP_TYPE_HASH = 1;
const BPF_MAP_TYPE_LRU_HASH = 9;
const BPF_F_NO_PREALLOC = 1;
import type { Flow } from '../../src/net/flow.js';
import { formatIpv4 } from '../../src/net/addr.js';
import { inNetns, nsIp, Topology } from '../../src/lab/netns.js';
import { IN_KERNEL_LAB, requireRoot, scratchPinRoot, uniquePrefix } from '../helpers/env.js';
import { log } from '../../src/log.js';
import { ROOT } from '../../src/kernel/paths.js';

let pins: ReturnType<typeof scratchPinRoot>;
let topo: Topology;
let ns: string;

before(() => {
  requireRoot();
  pins = scratchPinRoot('dp');
  topo = new Topology(uniquePrefix('dp'));
  ns = topo.ns('n');
  topo.veth({ ns, name: 'va', addr: '198.18.5.1/24' }, { ns, name: 'vb', addr: '198.18.5.2/24' });
  nsIp(ns, 'link', 'add', 'br0', 'type', 'bridge');
  nsIp(ns, 'link', 'set', 'br0', 'up');
});

after(() => {
  topo?.teardown();
  pins?.remove();
});

const inNs = <T>(fn: () => T): T => inNetns(ns, fn);

function xdpOf(ifname: string): { mode?: string; progId?: number } {
  const link = JSON.parse(nsIp(ns, '-j', '-d', 'link', 'show', ifname))[0];
  if (!link.xdp) return {};
  return {
    mode: link.xdp.mode === 1 ? 'native' : link.xdp.mode === 2 ? 'generic' : String(link.xdp.mode),
    progId: link.xdp.prog?.id,
  };
}

test('services, targets and CRT entries survive closing and reopening the pinned maps', () => {
  const fp = FastPath.open({ pinRoot: pins.pinRoot, crtMaxEntries: 4096 });
  fp.configure({ clusterAddr: '198.18.1.1' });
  const id = fp.setTargets({ vip: '192.0.2.10', port: 443, protocol: 'tcp' }, [{ addr: '198.18.1.11', weight: 1 }]);
  const key: Flow = { saddr: '198.18.0.1', daddr: '192.0.2.10', sport: 1234, dport: 443, proto: 6 };
  fp.crt.set(key, { target: '198.18.1.11', svcId: id, origin: CrtOrigin.Control, targetIdx: 0, createdNs: 0n });
  fp.close();

  const again = FastPath.open({ pinRoot: pins.pinRoot });
  try {
    assert.deepEqual(again.listServices(), [{ vip: '192.0.2.10', port: 443, protocol: 'tcp', id }]);
    assert.equal(again.nodeConfig().clusterAddr, '198.18.1.1');
    assert.deepEqual(again.crt.get(key), {
      target: '198.18.1.11',
      svcId: id,
      origin: CrtOrigin.Control,
      targetIdx: 0,
      createdNs: 0n,
    });
    assert.throws(() => FastPath.open({ pinRoot: pins.pinRoot, crtMaxEntries: 8192 }), /holds 4096 entries, not 8192/);
    assert.equal(again.removeService({ vip: '192.0.2.10', port: 443, protocol: 'tcp' }), true);
    assert.deepEqual(again.listServices(), []);
    assert.equal(again.routed.get('192.0.2.10'), undefined, 'last service of a DVIPA removes it from routed');
  } finally {
    again.close();
    FastPath.purge(pins.pinRoot);
  }
});

/** Under the kernel lab's emulation a million entries take minutes; the batch API is the same with fewer. */
const CRT_ENTRIES = IN_KERNEL_LAB ? 150_000 : 1_000_000;

/** The kernel's counter of these maps; asserted there from Linux 6.6, and absent before (the CRT is walked). */
function kernelCounter(fds: number[]): MapCounter | undefined {
  const [major, minor] = os.release().split('.').map(Number);
  const counter = MapCounter.open(fds);
  if (major < 6 || (major === 6 && minor < 6)) assert.equal(counter, undefined, 'no count before 6.6: walked');
  else assert.ok(counter, `Linux ${os.release()} counts map entries (bpf_map_sum_elem_count)`);
  return counter;
}

test('the kernel counts the confirmed CRT as a walk does; the cache of unconfirmed flows counts its slots', (t) => {
  const p = scratchPinRoot('crtcount');
  const fp = FastPath.open({ pinRoot: p.pinRoot, crtMaxEntries: 1 << 16 });
  const counter = kernelCounter([fp.crtEst.fd]);
  try {
    const entries: Array<[Flow, CrtEntry]> = [];
    // More flows than the cache holds: each set keeps CRT_WAYS of its flows, the last written.
    for (let i = 0; i < 70_000; i++)
      entries.push([
        {
          saddr: formatIpv4(0xc6120000 + (i >>> 8)),
          daddr: '192.0.2.10',
          sport: 1024 + (i & 255),
          dport: 80,
          proto: 6,
        },
        { target: '198.18.1.0', svcId: 0, origin: CrtOrigin.First, targetIdx: 0, createdNs: 0n },
      ]);
    fp.crt.setBatch(entries);
    const cached = fp.crt.count();
    assert.ok(cached < entries.length && cached > 0.75 * fp.crt.maxEntries, `the cache holds ${cached}`);
    assert.equal(cached, [...fp.crt.entries()].length);
    assert.deepEqual(fp.crt.get(entries.at(-1)![0]), entries.at(-1)![1], 'the last flow written is there');
    // Confirmed: into crt_est, out of the cache. Two of the last 100 may share a full set, and
    // then the later took the earlier's slot: which do depends on the cache's key.
    const last = entries.slice(-100);
    const lastCached = last.filter(([k]) => fp.crt.get(k) !== undefined).length;
    assert.ok(lastCached > 90, `${lastCached} of the last 100 flows written are in the cache`);
    assert.deepEqual(fp.confirm(last), []);
    assert.equal(fp.crt.count(), cached - lastCached);
    assert.ok(last.every(([k]) => fp.crt.get(k) === undefined));
    if (!counter) return t.diagnostic(`Linux ${os.release()}: no count by the kernel; walked`);
    assert.equal(counter.count(), fp.crtEst.count());
    assert.equal(counter.count(), 100);
    fp.crtEst.deleteBatch(last.slice(0, 40).map(([k]) => k));
    assert.equal(counter.count(), 60);
  } finally {
    counter?.close();
    fp.close();
    p.remove();
  }
});

test('pins of older versions: the LRU `crt` is replaced by the cache, `crt_est` and `crt6_est` by preallocated ones; the confirmed connections stay', () => {
  const p = scratchPinRoot('crtold');
  const conn: [Flow, CrtEntry] = [
    { saddr: '198.18.0.7', daddr: '192.0.2.10', sport: 40000, dport: 80, proto: 6 },
    { target: '198.18.1.1', svcId: 0, origin: CrtOrigin.Control, targetIdx: 0, createdNs: 0n },
  ];
  const conn6: [Flow, CrtEntry] = [
    { saddr: '2001:db8::7', daddr: '2001:db8:10::10', sport: 40000, dport: 80, proto: 6 },
    { target: '2001:db8:1::11', svcId: 0, origin: CrtOrigin.Control, targetIdx: 0, createdNs: 0n },
  ];
  try {
    FastPath.open({ pinRoot: p.pinRoot, crtMaxEntries: 1024 }).close();
    // What older versions pinned: `crt` as an LRU hash of flows (before 2026-12-03), `crt_est`
    // not preallocated (before session 26); each holding one connection.
    for (const [name, type, flags, key, value, c] of [
      ['crt', BPF_MAP_TYPE_LRU_HASH, 0, flowCodec, crtEntry, conn],
      ['crt_est', BPF_MAP_TYPE_HASH, BPF_F_NO_PREALLOC, flowCodec, crtEntry, conn],
      ['crt6_est', BPF_MAP_TYPE_HASH, BPF_F_NO_PREALLOC, flow6, crt6Entry, conn6],
    ] as const) {
      const pin = path.join(p.pinRoot, name);
      fs.unlinkSync(pin);
      const old = sys.mapCreate(name, type, name, key.size, value.size, 1024, flags);
      try {
        sys.mapUpdate(name, old, key.encode(c[0]), value.encode(c[1]), 0);
        sys.objPin(name, old, pin);
      } finally {
        sys.closeFd(name, old);
      }
    }
    const fp = FastPath.open({ pinRoot: p.pinRoot });
    try {
      assert.equal(fp.crt.maxEntries, 1024);
      assert.equal(fp.crt.count(), 0, 'the unconfirmed start afresh');
      assert.deepEqual(fp.crtEst.get(conn[0]), conn[1]);
      assert.deepEqual(fp.crt6Est.get(conn6[0]), conn6[1]);
      for (const table of [fp.crtEst, fp.crt6Est]) {
        const info = sys.mapInfo(table.name, table.fd);
        assert.equal(info.flags & BPF_F_NO_PREALLOC, 0, `${table.name} is preallocated now`);
        assert.equal(info.maxEntries, 1024, `${table.name} at the size the older one had`);
        assert.equal(table.count(), 1, table.name);
      }
      fp.configure({ clusterAddr: '198.18.0.1' });
      assert.equal(fp.nodeConfig().crtSets, 1024 / CRT_WAYS, 'the data plane knows the sets once configured');
    } finally {
      fp.close();
    }
  } finally {
    p.remove();
  }
});

test('a cache slot a killed writer left claimed is emptied by the next repair, and takes inserts again', async () => {
  const p = scratchPinRoot('crtclaim');
  const fp = FastPath.open({ pinRoot: p.pinRoot, crtMaxEntries: 64 });
  try {
    const f: Flow = { saddr: '198.18.0.9', daddr: '192.0.2.10', sport: 40000, dport: 80, proto: 6 };
    const e: CrtEntry = { target: '198.18.1.1', svcId: 0, origin: CrtOrigin.First, targetIdx: 0, createdNs: 0n };
    fp.crt.set(f, e);
    assert.equal(await fp.crt.repair(1), 0, 'nothing claimed: nothing emptied');
    // A writer killed between its claim and its release: the slot's word stays odd.
    const mem = Buffer.from(sys.mapMmap('crt', fp.crt.fd));
    const at = [...Array(fp.crt.maxEntries).keys()].map((i) => i * 32).find((o) => mem.readUInt32LE(o + 4) !== 0)!;
    mem.writeUInt32LE(mem.readUInt32LE(at) + 1, at);
    assert.equal(fp.crt.get(f), undefined, 'a claimed slot holds nothing for readers');
    assert.equal(await fp.crt.repair(1), 1);
    assert.equal(mem.readUInt32LE(at) % 2, 0);
    assert.equal(fp.crt.count(), 0, 'emptied');
    fp.crt.set(f, e);
    assert.deepEqual(fp.crt.get(f), e, 'and written again');
  } finally {
    fp.close();
    p.remove();
  }
});

test("the cache's key: one per map, the same for every process that opens it, written back if lost", () => {
  const a = scratchPinRoot('crtkeya');
  const b = scratchPinRoot('crtkeyb');
  const opened: FastPath[] = [];
  const open = (pinRoot: string) => opened[opened.push(FastPath.open({ pinRoot, crtMaxEntries: 1024 })) - 1];
  try {
    const fa = open(a.pinRoot);
    const again = open(a.pinRoot);
    const fb = open(b.pinRoot);
    assert.deepEqual(again.crt.key, fa.crt.key, 'the same map: the same key');
    assert.notDeepEqual(fb.crt.key, fa.crt.key, 'another map: another key');
    const inKernel = (fp: FastPath) => new BpfMap('crt_key', fp.crt.keyFd, u32, crtKey);
    assert.deepEqual(inKernel(fa).get(0), fa.crt.key, 'the data plane has the key user space places flows by');
    assert.deepEqual(inKernel(fb).get(0), fb.crt.key);
    // 256 flows over 256 sets under two keys: about one shares its set's index by chance.
    const flows = Array.from({ length: 256 }, (_, i) => ({
      saddr: formatIpv4(0xc6120000 + i),
      daddr: '192.0.2.10',
      sport: 40000,
      dport: 80,
      proto: 6,
    }));
    const same = flows.filter((f) => fa.crt.setIndex(f) === fb.crt.setIndex(f)).length;
    assert.ok(same < 8, `${same} of 256 flows in the same set under both keys`);
    // Lost (a hand edit, pins a version without it left): written back by the next opener.
    inKernel(fa).set(0, { saddrMul: 0, daddrMul: 0, portsMul: 0, salt: 0 });
    open(a.pinRoot);
    assert.deepEqual(inKernel(fa).get(0), fa.crt.key);
  } finally {
    for (const fp of opened) fp.close();
    a.remove();
    b.remove();
  }
});

test('flows an older version placed outside their sets are moved home by rehome(), and found again', () => {
  const p = scratchPinRoot('crthome');
  const fp = FastPath.open({ pinRoot: p.pinRoot, crtMaxEntries: 1024 });
  try {
    const home = (f: Flow) => fp.crt.setIndex(f);
    // Five flows in five sets, none of them the set after another's (where each is put astray
    // below): which flows those are depends on the cache's key.
    const flows: Flow[] = [];
    const taken = new Set<number>();
    for (let i = 0; flows.length < 5; i++) {
      const f = { saddr: `198.18.0.${i + 1}`, daddr: '192.0.2.10', sport: 40000 + i, dport: 80, proto: 17 };
      const h = home(f);
      const next = (h + 1) % fp.crt.sets;
      if (taken.has(h) || taken.has(next)) continue;
      flows.push(f);
      taken.add(h).add(next);
    }
    const e: CrtEntry = { target: '198.18.1.1', svcId: 3, origin: CrtOrigin.First, targetIdx: 2, createdNs: 1n << 40n };
    const setBytes = CRT_WAYS * crtSlot.size;
    // Each flow in slot 0 of the set after its own, as a version that placed by another hash left it.
    const mem = Buffer.from(sys.mapMmap('crt', fp.crt.fd));
    const stray = flows.map((f) => ((home(f) + 1) % fp.crt.sets) * setBytes);
    flows.forEach((f, i) =>
      crtSlot.encode({ ...f, ...e, seq: 0, ref: 0, hand: 0, createdS: Number(e.createdNs >> 30n) }).copy(mem, stray[i]),
    );
    assert.deepEqual(
      flows.map((f) => fp.crt.get(f)),
      flows.map(() => undefined),
      'not found where they lie',
    );
    assert.equal(fp.crt.count(), flows.length);
    assert.equal(fp.crt.rehome(), flows.length);
    assert.deepEqual(
      flows.map((f) => fp.crt.get(f)),
      flows.map(() => e),
      'each found in its set, entry unchanged',
    );
    assert.equal(fp.crt.count(), flows.length, 'moved, not copied');
    assert.equal(fp.crt.rehome(), 0, 'nothing left to move');
  } finally {
    fp.close();
    p.remove();
  }
});

test("user space's writes into a set's way 0 keep the set's CLOCK hand, which lives there", () => {
  const p = scratchPinRoot('crthand');
  const fp = FastPath.open({ pinRoot: p.pinRoot, crtMaxEntries: 1024 });
  try {
    const f: Flow = { saddr: '198.18.0.1', daddr: '192.0.2.10', sport: 40000, dport: 80, proto: 6 };
    const e: CrtEntry = { target: '198.18.1.1', svcId: 3, origin: CrtOrigin.First, targetIdx: 2, createdNs: 1n << 40n };
    const mem = Buffer.from(sys.mapMmap('crt', fp.crt.fd));
    const hand = fp.crt.setIndex(f) * CRT_WAYS * crtSlot.size + crtSlot.fields.find((x) => x.name === 'hand')!.offset;
    mem[hand] = 2;
    fp.crt.set(f, e); // the set is empty: into way 0
    assert.deepEqual([fp.crt.get(f), mem[hand]], [e, 2], 'written, the hand kept');
    fp.crt.set(f, { ...e, target: '198.18.1.2' });
    assert.equal(mem[hand], 2, 'overwritten, the hand kept');
    assert.ok(fp.crt.delete(f));
    assert.equal(mem[hand], 2, 'emptied, the hand kept');
  } finally {
    fp.close();
    p.remove();
  }
});

test(`${CRT_ENTRIES.toLocaleString('en')} confirmed CRT entries go in and out through the batch API; walks in a worker leave the loop free`, async (t) => {
  const p = scratchPinRoot('crt');
  const fp = FastPath.open({ pinRoot: p.pinRoot, crtMaxEntries: 2_000_000 });
  try {
    const n = CRT_ENTRIES;
    const entries: Array<[Flow, CrtEntry]> = [];
    for (let i = 0; i < n; i++) {
      entries.push([
        { saddr: formatIpv4(0xc6120000 + (i >>> 16)), daddr: '192.0.2.10', sport: i & 0xffff, dport: 80, proto: 6 },
        { target: formatIpv4(0xc6120100 + (i % 3)), svcId: 0, origin: CrtOrigin.Control, targetIdx: 0, createdNs: 0n },
      ]);
    }
    const t0 = process.hrtime.bigint();
    fp.crtEst.setBatch(entries);
    const t1 = process.hrtime.bigint();
    let seen = 0;
    const perTarget = new Map<string, number>();
    for (const [, v] of fp.crtEst.entries()) {
      seen++;
      perTarget.set(v.target, (perTarget.get(v.target) ?? 0) + 1);
    }
    const t2 = process.hrtime.bigint();
    t.diagnostic(`insert ${Number(t1 - t0) / 1e6} ms, dump ${Number(t2 - t1) / 1e6} ms (encode/decode in JS included)`);
    assert.equal(seen, n);
    assert.deepEqual(
      [...perTarget.values()].sort(),
      [0, 1, 2].map((r) => Math.floor(n / 3) + (r < n % 3 ? 1 : 0)).sort(),
    );
    const gone = fp.crtEst.deleteBatch(entries.slice(0, 1000).map(([k]) => k));
    assert.equal(gone, 1000);
    // Keys already gone are skipped, not an end: the ones after them go too.
    const mixed = [entries[5], entries[n - 1], entries[6], entries[n - 2]].map(([k]) => k);
    assert.equal(fp.crtEst.deleteBatch(mixed), 2);
    entries.splice(n - 2, 2);
    const t3 = process.hrtime.bigint();
    assert.equal(fp.crtEst.count(), n - 1002);
    const syncMs = Number(process.hrtime.bigint() - t3) / 1e6;
    // Counted by the kernel (Linux 6.6+): no entry is read, so a small fraction of the walk.
    const counter = kernelCounter([fp.crtEst.fd]);
    if (counter) {
      try {
        const tk = process.hrtime.bigint();
        assert.equal(counter.count(), n - 1002);
        const kernelMs = Number(process.hrtime.bigint() - tk) / 1e6;
        t.diagnostic(`count by the kernel ${kernelMs.toFixed(2)} ms`);
        assert.ok(kernelMs < syncMs / 10, `counted by the kernel in ${kernelMs} ms, walked in ${syncMs} ms`);
      } finally {
        counter.close();
      }
    }
    // The same count and a listing in the worker: the loop keeps turning meanwhile.
    const walker = new CrtWalker(fp.crtTables());
    try {
      const h = monitorEventLoopDelay({ resolution: 5 });
      h.enable();
      const t4 = process.hrtime.bigint();
      assert.equal(await walker.count(), n - 1002);
      const found = await walker.select({ client: formatIpv4(0xc6120000 + 1) }, 10);
      const workerMs = Number(process.hrtime.bigint() - t4) / 1e6;
      h.disable();
      assert.equal(found.total, 65536);
      assert.equal(found.entries.length, 10);
      assert.ok(found.entries.every(([k]) => k.saddr === formatIpv4(0xc6120000 + 1)));
      const maxMs = h.max / 1e6;
      t.diagnostic(
        `count on the loop ${syncMs.toFixed(0)} ms; count + listing in the worker ${workerMs.toFixed(0)} ms, loop delay max ${maxMs.toFixed(1)} ms`,
      );
      // A walk on the loop would hold it for the whole count at least. Below that, other stalls
      // show too: in the kernel lab (TCG, the host at load 14) one of 177 ms, with the count on
      // the loop taking 296 ms, failed the half of it this asserted before.
      assert.ok(maxMs < syncMs, `the loop was held ${maxMs} ms (a count on it: ${syncMs} ms)`);
      // A restarted agent's sweep: confirmed entries stamped before its start go, later ones stay.
      const startNs = process.hrtime.bigint();
      const later = entries.slice(1010, 1013).map(([k, v]): [Flow, CrtEntry] => [k, { ...v, createdNs: startNs + 1n }]);
      assert.deepEqual(fp.confirm(later), []);
      assert.equal(await walker.sweep(startNs), n - 1005);
      assert.deepEqual(
        [...fp.crtEst.keys()].sort((a, b) => a.sport - b.sport),
        later.map(([k]) => k),
      );
    } finally {
      await walker.close();
    }
  } finally {
    fp.close();
    p.remove();
  }
});

test('errors name the operation, the map and the errno', () => {
  const p = scratchPinRoot('err');
  const fp = FastPath.open({ pinRoot: p.pinRoot, crtMaxEntries: 1024 });
  try {
    // The services hash holds MAX_SERVICES entries: one more is E2BIG.
    for (let i = 0; i < MAX_SERVICES; i++)
      fp.services.set(
        { vip: formatIpv4(0xc0000200 + (i >> 8)), port: (i & 0xff) + 1, proto: 6 },
        { id: i, affinityS: 0, flags: 0 },
      );
    assert.throws(
      () => fp.services.set({ vip: '192.0.2.250', port: 1, proto: 6 }, { id: 0, affinityS: 0, flags: 0 }),
      (e: unknown) =>
        e instanceof SyscallError &&
        e.code === 'E2BIG' &&
        e.errno === 7 &&
        /^bpf_map_update_elem\(services\): E2BIG/.test(e.message),
    );
    assert.throws(() => fp.setTargets({ vip: '192.0.2.9', port: 1, protocol: 'tcp' }, []), /no free service id/);
    assert.throws(
      () => fp.enableEgress('nosuchif0'),
      (e: unknown) => e instanceof SyscallError && e.code === 'ENODEV' && /nosuchif0/.test(e.message),
    );
    assert.throws(
      () =>
        fp.crt.set(
          { saddr: '1.2.3', daddr: '192.0.2.1', sport: 1, dport: 1, proto: 6 },
          { target: '198.18.1.1', svcId: 0, origin: 1, targetIdx: 0, createdNs: 0n },
        ),
      /1\.2\.3/,
    );
    assert.throws(
      () =>
        fp.crt.set(
          { saddr: '198.18.0.1', daddr: '192.0.2.1', sport: 70000, dport: 1, proto: 6 },
          { target: '198.18.1.1', svcId: 0, origin: 1, targetIdx: 0, createdNs: 0n },
        ),
      /sport: 70000 does not fit be16/,
    );
  } finally {
    fp.close();
    p.remove();
  }
});

test("a signal storm does not stop a load: the data path loads under V8's profiler (SIGPROF every millisecond)", () => {
  // The verifier gives up on a pending signal; before the addon held signals for the load,
  // libbpf's retries met the next SIGPROF and this failed every time with EAGAIN.
  const p = scratchPinRoot('sigprof');
  const prof = fs.mkdtempSync(path.join(os.tmpdir(), 'dvipa-prof-'));
  const fastpath = pathToFileURL(path.join(ROOT, 'dist', 'src', 'dataplane', 'fastpath.js')).href;
  const script = `const { FastPath } = await import(${JSON.stringify(fastpath)});
    FastPath.open({ pinRoot: ${JSON.stringify(p.pinRoot)}, crtMaxEntries: 1024 }).close();
    console.log('loaded');`;
  try {
    const r = spawnSync(process.execPath, ['--cpu-prof', '--cpu-prof-dir', prof, '--input-type=module', '-e', script], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    assert.equal(r.status, 0, r.stderr.slice(-1500));
    assert.match(r.stdout, /^loaded$/m);
    assert.ok(
      fs.readdirSync(prof).some((f) => f.endsWith('.cpuprofile')),
      'the profiler ran',
    );
  } finally {
    p.remove();
    fs.rmSync(prof, { recursive: true, force: true });
  }
});

test('attach is native on veth, replaces in place keeping the link, detaches cleanly', () => {
  const fp = FastPath.open({ pinRoot: pins.pinRoot, crtMaxEntries: 1024 });
  try {
    const first = inNs(() => fp.attach('distributor', 'va', 'auto'));
    assert.equal(first.mode, 'native');
    assert.equal(first.replaced, false);
    const progBefore = xdpOf('va');
    assert.equal(progBefore.mode, 'native');

    // A second agent generation: fresh programs, same pins. The link is updated in place.
    fp.close();
    const next = FastPath.open({ pinRoot: pins.pinRoot });
    try {
      const second = inNs(() => next.attach('distributor', 'va', 'auto'));
      assert.equal(second.replaced, true);
      assert.equal(second.linkId, first.linkId);
      const progAfter = xdpOf('va');
      assert.notEqual(progAfter.progId, progBefore.progId, 'the new program is the one attached');

      assert.equal(next.detach('distributor', 'va'), true);
      assert.deepEqual(xdpOf('va'), {});
      assert.equal(next.detach('distributor', 'va'), false);
    } finally {
      next.close();
    }
  } finally {
    FastPath.purge(pins.pinRoot);
  }
});

test('generic XDP is the fallback where native is missing; asking for native there fails naming the interface', () => {
  const fp = FastPath.open({ pinRoot: pins.pinRoot, crtMaxEntries: 1024 });
  const warnings: string[] = [];
  const origWarn = log.warn.bind(log);
  try {
    (log as unknown as { warn: (...a: unknown[]) => void }).warn = (...a: unknown[]) =>
      warnings.push(JSON.stringify(a));
    const r = inNs(() => fp.attach('distributor', 'br0', 'auto'));
    assert.equal(r.mode, 'generic');
    assert.equal(xdpOf('br0').mode, 'generic');
    assert.ok(
      warnings.some((w) => /falling back to generic/.test(w)),
      'the fallback is logged as a warning',
    );
    fp.detach('distributor', 'br0');

    assert.throws(
      () => inNs(() => fp.attach('distributor', 'br0', 'native')),
      (e: unknown) => e instanceof SyscallError && e.target === 'br0' && e.errno > 0,
    );
    assert.throws(() => inNs(() => fp.attach('distributor', 'nosuch0', 'auto')), /nosuch0.*ENODEV/);
  } finally {
    (log as unknown as { warn: typeof origWarn }).warn = origWarn;
    fp.close();
    FastPath.purge(pins.pinRoot);
  }
});

test("an interface holding someone else's XDP program is refused with advice", () => {
  const fp = FastPath.open({ pinRoot: pins.pinRoot, crtMaxEntries: 1024 });
  // Another owner's program: a link made from a different pin root is not ours.
  try {
    const holder = FastPath.open({ pinRoot: `${pins.pinRoot}-other`, crtMaxEntries: 1024 });
    try {
      inNs(() => holder.attach('decap', 'vb', 'native'));
      assert.throws(() => inNs(() => fp.attach('distributor', 'vb', 'native')), /already has an XDP program/);
    } finally {
      holder.close();
      FastPath.purge(`${pins.pinRoot}-other`);
    }
  } finally {
    fp.close();
    FastPath.purge(pins.pinRoot);
  }
});

test('the CRT walker lists and counts both CRTs, the IPv6 one beside the IPv4 one', async (t) => {
  const p = scratchPinRoot('walk6');
  t.after(() => p.remove());
  const fp = FastPath.open({ pinRoot: p.pinRoot, crtMaxEntries: 4096 });
  const walker = new CrtWalker([
    { fd: fp.crt.fd, keyFd: fp.crt.keyFd },
    { fd: fp.crt6.fd, v6: true },
  ]);
  try {
    const entry = (target: string): CrtEntry => ({
      target,
      svcId: 1,
      origin: CrtOrigin.Control,
      targetIdx: 0,
      createdNs: 0n,
    });
    fp.crt.set({ saddr: '198.18.0.1', daddr: '192.0.2.10', sport: 1234, dport: 80, proto: 6 }, entry('198.18.1.11'));
    const flow6: Flow = { saddr: '2001:db8:c::1', daddr: '2001:db8:100::10', sport: 4321, dport: 80, proto: 6 };
    fp.crt6.set(flow6, entry('2001:db8:1::11'));
    fp.crt6.set({ ...flow6, sport: 4322 }, entry('198.18.1.11')); // IPv6 to an IPv4 cluster address
    assert.equal(await walker.count(), 3);
    const v6 = await walker.select({ dvipa: '2001:db8:100::10' }, 10);
    assert.equal(v6.total, 2);
    assert.deepEqual(v6.entries.map(([k, v]) => [k.saddr, k.sport, v.target]).sort(), [
      ['2001:db8:c::1', 4321, '2001:db8:1::11'],
      ['2001:db8:c::1', 4322, '198.18.1.11'],
    ]);
    assert.equal((await walker.select({ client: '198.18.0.1' }, 10)).total, 1);
  } finally {
    await walker.close();
    fp.close();
  }
});
