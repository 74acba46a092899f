/*
 * XFRM netlink through the addon, on the real kernel: the UAPI layouts against the running
 * kernel's BTF; policies added, replaced, dumped and deleted in a network namespace of the
 * test's own; SAs encoded and decoded; ESP SAs installed and dumped back where the kernel has
 * ESP (the kernel lab); on a kernel without (this machine) the install fails with the operation,
 * the errno and the kernel's own explanation, and the ESP test is skipped, visibly.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inNetns, nsIp } from '../../src/lab/netns.js';
import {
  addSa,
  addSas,
  ANY_SELECTOR,
  decodeSa,
  putPolicies,
  XfrmError,
  deletePolicy,
  deleteSa,
  dumpPolicies,
  dumpSas,
  encodeSa,
  LAYOUT,
  putPolicy,
  type Policy,
  type Sa,
} from '../../src/ipsec/xfrm.js';
import { kernelStruct } from '../helpers/env.js';
import { sys } from '../../src/kernel/sys.js';
import { bitmapWords, ESP_SA, ipXfrmPolicies, ipXfrmState, skipWithoutEsp, xfrmNamespace } from '../helpers/xfrm.js';

const NS = xfrmNamespace('xf');

// A replay bitmap with a pattern (not all ones or zeros): a byte-order or length slip shows.
const SA: Sa = {
  ...ESP_SA,
  encap: { type: 2, sport: 4500, dport: 4500 },
  mark: { value: 0x10, mask: 0xff },
  replay: { ...ESP_SA.replay, seqHi: 1, bitmap: Buffer.from('0f0f0f0f00ff00ffa5a5a5a5deadbeef', 'hex') },
};

test('the UAPI layouts match the running kernel (BTF)', () => {
  for (const [name, fields] of Object.entries(LAYOUT)) {
    const btf = kernelStruct(name);
    assert.equal(fields.size, btf.size, `${name}: size`);
    for (const [field, offset] of Object.entries(fields)) {
      if (field === 'size') continue;
      const m = btf.members.find((x) => x.name === field);
      assert.ok(m, `${name}.${field} exists`);
      assert.equal(offset, m.offset, `${name}.${field}: offset`);
    }
  }
});

test('SAs: encode and decode round-trip every field dvipa keeps', () => {
  const back = decodeSa(encodeSa(SA));
  delete back.current;
  assert.deepEqual(back, SA);
  const { aead: _a, encap: _e, mark: _m, ...plain } = SA;
  const legacy: Sa = {
    ...plain,
    enc: { name: 'cbc(aes)', key: Buffer.alloc(16, 1) },
    auth: { name: 'hmac(sha256)', key: Buffer.alloc(32, 2), truncBits: 128 },
    replay: { oseq: 5, seq: 4, oseqHi: 0, seqHi: 0, window: 32, bitmap: Buffer.from([0xf, 0, 0, 0]), esn: false },
  };
  const l = decodeSa(encodeSa(legacy));
  delete l.current;
  assert.deepEqual(l, legacy);
  assert.throws(() => decodeSa(Buffer.alloc(10)), /at least 224 expected/);
});

test('policies: put (twice: replaced, not duplicated), dump, delete; deleting one that is gone names the operation and errno', () => {
  inNetns(NS.name, () => {
    const out: Policy = {
      selector: SA.selector,
      dir: 'out',
      action: 'allow',
      priority: 100,
      index: 0,
      tmpls: [{ src: SA.src, dst: SA.dst, spi: 0, proto: 'esp', mode: 'tunnel', reqid: 7, optional: false }],
    };
    const inbound: Policy = {
      ...out,
      dir: 'in',
      selector: { ...SA.selector, src: SA.selector.dst, dst: SA.selector.src },
      tmpls: [{ ...out.tmpls[0], src: SA.dst, dst: SA.src }],
    };
    putPolicy(out);
    putPolicy(inbound);
    putPolicy({ ...out, priority: 50 });
    const dumped = dumpPolicies();
    assert.equal(dumped.length, 2, 'one per selector and direction');
    // iproute2 decodes the kernel's dump on its own: the same policies.
    const sel = (x: string, n: number) => `${x}/${n}`;
    assert.deepEqual(
      ipXfrmPolicies(NS.name).sort((a, b) => a.dir.localeCompare(b.dir)),
      [inbound, { ...out, priority: 50 }].map((p) => ({
        src: sel(p.selector.src, p.selector.srcPrefix),
        dst: sel(p.selector.dst, p.selector.dstPrefix),
        dir: p.dir,
        priority: p.priority,
        tmpls: p.tmpls.map((x) => ({ src: x.src, dst: x.dst, proto: x.proto, reqid: x.reqid, mode: x.mode })),
      })),
    );
    const o = dumped.find((p) => p.dir === 'out')!;
    assert.deepEqual({ ...o, index: 0 }, { ...out, priority: 50 });
    assert.deepEqual({ ...dumped.find((p) => p.dir === 'in')!, index: 0 }, inbound);
    deletePolicy(out);
    deletePolicy(inbound);
    assert.deepEqual(dumpPolicies(), []);
    assert.throws(
      () => deletePolicy(out),
      (e: Error) =>
        e instanceof XfrmError &&
        e.op === 'XFRM_MSG_DELPOLICY' &&
        e.code === 'ENOENT' &&
        /^XFRM_MSG_DELPOLICY: ENOENT/.test(e.message),
    );
  });
});

test("IPv6 policies are not dvipa's: dumps leave them out instead of misreading them as IPv4", () => {
  nsIp(
    NS.name,
    'xfrm',
    'policy',
    'add',
    'src',
    '2001:db8::1/128',
    'dst',
    '2001:db8::2/128',
    'dir',
    'out',
    'tmpl',
    'src',
    '2001:db8::1',
    'dst',
    '2001:db8::2',
    'proto',
    'esp',
    'mode',
    'tunnel',
  );
  try {
    assert.equal(nsIp(NS.name, 'xfrm', 'policy', 'list').includes('2001:db8::2'), true, 'the kernel has it');
    assert.deepEqual(
      inNetns(NS.name, () => dumpPolicies()),
      [],
    );
  } finally {
    nsIp(NS.name, 'xfrm', 'policy', 'flush');
  }
});

test('ESP SAs: installed and dumped back field for field (skipped where the kernel has no ESP; a clear error says why)', (t) => {
  inNetns(NS.name, () => {
    try {
      addSa(SA);
    } catch (e) {
      assert.ok(e instanceof XfrmError && e.code && e.errno, 'with its errno');
      assert.match(
        e.message,
        /^XFRM_MSG_NEWSA: E[A-Z]+ \(.*\): .*not found/,
        "and the kernel's reason (which type or algorithm is missing)",
      );
      assert.deepEqual(dumpSas(), []);
      return skipWithoutEsp(t, e);
    }
    try {
      const [back] = dumpSas();
      delete back.current;
      assert.deepEqual(back, SA, 'every field, the replay bitmap included, as the kernel holds it');
      // iproute2's own decoding of the same dump: keys, replay counters and bitmap words.
      const ip = ipXfrmState(NS.name, SA.spi);
      assert.deepEqual(
        ip.aead,
        { name: SA.aead!.name, key: SA.aead!.key.toString('hex'), icvBits: SA.aead!.icvBits },
        ip.text,
      );
      const r = SA.replay;
      assert.deepEqual(
        ip.replay,
        { seqHi: r.seqHi, seq: r.seq, oseqHi: r.oseqHi, oseq: r.oseq, window: r.window, bitmap: bitmapWords(r.bitmap) },
        ip.text,
      );
    } finally {
      deleteSa(SA);
    }
    t.diagnostic('ESP SA installed through XFRM netlink and dumped back field for field');
    assert.deepEqual(dumpSas(), []);
  });
});

test("batches: many policies on one socket, off the event loop, in the caller's namespace; many SAs each with its own outcome", async () => {
  // Each call enters the namespace; a batch's socket is opened there at the call, and its
  // work finishes on a worker thread after this thread has left it.
  const inNs = <T>(f: () => T) => inNetns(NS.name, f);
  const policies = (n: number, tag: number): Policy[] =>
    Array.from({ length: n }, (_, i) => ({
      selector: {
        ...ANY_SELECTOR,
        src: '198.18.0.0',
        srcPrefix: 16,
        dst: `10.${tag + (i >> 8)}.${i & 255}.0`,
        dstPrefix: 24,
      },
      dir: 'out',
      action: 'allow',
      priority: 100,
      index: 0,
      tmpls: [{ src: SA.src, dst: SA.dst, spi: 0, proto: 'esp', mode: 'tunnel', reqid: i + 1, optional: false }],
    }));
  const many = policies(300, 0);
  assert.deepEqual((await inNs(() => putPolicies(many))).filter(Boolean), []);
  assert.equal(inNs(dumpPolicies).length, 300);
  inNs(() => many.forEach(deletePolicy));

  // The event loop turns while a large batch runs (it renews the lease): timers fire before it is done.
  const large = policies(3000, 100);
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const done = await inNs(() => putPolicies(large));
  clearInterval(timer);
  assert.deepEqual(done.filter(Boolean), []);
  assert.ok(ticks > 0, 'no timer fired while 3000 policies went in: the batch held the event loop');
  assert.equal(inNs(dumpPolicies).length, 3000);
  inNs(() => large.forEach(deletePolicy));

  const sas = [1, 2, 3].map((i) => ({ ...SA, spi: 0xd000 + i, mark: undefined }));
  const first = await inNs(() => addSas(sas));
  if (first.every((e) => e === undefined)) {
    assert.equal(inNs(dumpSas).length, 3);
    const moved = sas.map((s) => ({ ...s, replay: { ...s.replay, oseq: s.replay.oseq + 1000 } }));
    assert.deepEqual(await inNs(() => addSas(moved, { replace: true })), [undefined, undefined, undefined]);
    assert.deepEqual(
      inNs(dumpSas)
        .map((s) => s.replay.oseq)
        .sort(),
      moved.map((s) => s.replay.oseq),
      'existing SAs are replaced, replay state included (UPDSA would keep the old)',
    );
    assert.ok(
      (await inNs(() => addSas(sas))).every((e) => e?.code === 'EEXIST'),
      'without replace, they are refused',
    );
    inNs(() => sas.forEach((s) => deleteSa(s)));
  } else
    assert.ok(
      first.every((e) => e instanceof XfrmError && e.op === 'XFRM_MSG_NEWSA' && /not found/.test(e.message)),
      String(first),
    );
});

test('a malformed batch is a TypeError naming the request, thrown before anything is sent', () => {
  const fd = sys.xfrmOpen('xfrm');
  try {
    const bad = [
      [[{ type: 'x', flags: 0, payload: Buffer.alloc(0) }], /request 0: type and flags must be numbers/],
      [
        [
          { type: 1, flags: 0, payload: Buffer.alloc(0) },
          { type: 1, flags: 0, payload: 'no' },
        ],
        /request 1: payload must be a Buffer/,
      ],
      [[{ type: 70000, flags: 0, payload: Buffer.alloc(0) }], /request 0: type and flags are 16-bit/],
      [[null], /request 0: expected \{type, flags, payload\}/],
      ['all', /expected a list of requests/],
    ] as const;
    for (const [reqs, why] of bad) {
      assert.throws(
        () => sys.xfrmBatch('xfrm', fd, reqs as never),
        (e: unknown) => e instanceof TypeError && why.test(e.message),
        String(why),
      );
    }
  } finally {
    sys.closeFd('xfrm', fd);
  }
});
