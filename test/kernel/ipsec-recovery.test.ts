/*
 * IPsec recovery across a takeover, with a real etcd and an in-memory stand-in for the
 * kernel's XFRM tables: this machine's kernel has no ESP, so its SAs cannot exist here (the
 * XFRM netlink itself is tested in xfrm.test.ts, the re-install into a real kernel in
 * ipsec-reinstall.test.ts). The recorder writes the owner's SAs of the
 * DVIPA and only what changed, at most once per interval; a deposed owner's writes fail; the
 * new owner re-installs with the sequence jump, adds only the policies it lacks, refuses
 * foreign records, and replaces the records with its own. The policies also in a real kernel
 * (this one has XFRM policies, not ESP): re-installed once, kept by a node that lost the DVIPA.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { type EtcdCoupling } from '../../src/cluster/coupling.js';
import type { OwnerRecord } from '../../src/net/ownership.js';
import { etcdFixture } from '../helpers/etcd.js';
import { log } from '../../src/log.js';
import { reinstall, SaRecorder, type XfrmOps } from '../../src/ipsec/recovery.js';
import { IpsecRole } from '../../src/ipsec/ipsec-role.js';
import { waitFor } from '../helpers/wait.js';
import { readRecords, recordKey, sealRecord, storeKey } from '../../src/ipsec/store.js';
import {
  ANY_SELECTOR,
  dumpPolicies,
  NO_LIMITS,
  putPolicies,
  putPolicy,
  XfrmError,
  type Policy,
  type Sa,
  type SaId,
} from '../../src/ipsec/xfrm.js';
import { inNetns, Topology } from '../../src/lab/netns.js';
import { requireRoot, uniquePrefix } from '../helpers/env.js';

const DVIPA = '192.0.2.10';
const PEER = '203.0.113.7';
const base = (src: string, dst: string, spi: number): Sa => ({
  src,
  dst,
  spi,
  proto: 'esp',
  mode: 'tunnel',
  reqid: 7,
  flags: 0,
  selector: ANY_SELECTOR,
  aead: { name: 'rfc4106(gcm(aes))', key: randomBytes(20), icvBits: 128 },
  lifetime: NO_LIMITS,
  replay: { oseq: 1000, seq: 0, oseqHi: 0, seqHi: 0, window: 64, bitmap: Buffer.alloc(8), esn: true },
});
const OUT = base(DVIPA, PEER, 0x1001);
const IN = {
  ...base(PEER, DVIPA, 0x1002),
  replay: { oseq: 0, seq: 5000, oseqHi: 0, seqHi: 0, window: 64, bitmap: Buffer.alloc(8, 0xff), esn: true },
};
const OTHER = base('192.0.2.99', PEER, 0x2001);
const policy = (dir: 'in' | 'out', src: string, dst: string): Policy => ({
  selector: { ...ANY_SELECTOR, src: dir === 'out' ? '198.18.20.0' : '198.18.30.0', srcPrefix: 24 },
  dir,
  action: 'allow',
  priority: 10,
  index: 0,
  tmpls: [{ src, dst, spi: 0, proto: 'esp', mode: 'tunnel', reqid: 7, optional: false }],
});
const POL_OUT = policy('out', DVIPA, PEER);
const POL_IN = policy('in', PEER, DVIPA);

/** The kernel's SA and policy tables of one node, in memory. */
class FakeXfrm implements XfrmOps {
  constructor(
    public sas: Sa[] = [],
    public policies: Policy[] = [],
    private readonly refuse?: number,
  ) {}
  dumpSas(): Sa[] {
    return this.sas.map((s) => ({ ...s, replay: { ...s.replay } }));
  }
  dumpPolicies(): Policy[] {
    return [...this.policies];
  }
  addSas(sas: Sa[]): Array<Error | undefined> {
    return sas.map((sa) => {
      if (sa.spi === this.refuse)
        return new XfrmError('XFRM_MSG_NEWSA: ENOSYS: Requested type not found', 'XFRM_MSG_NEWSA', 'ENOSYS', 38);
      this.sas = [...this.sas.filter((s) => s.spi !== sa.spi), sa];
      return undefined;
    });
  }
  putPolicies(ps: Policy[]): Array<Error | undefined> {
    this.policies.push(...ps);
    return ps.map(() => undefined);
  }
  deleteSas(ids: SaId[]): Array<Error | undefined> {
    return ids.map((id) => {
      const before = this.sas.length;
      this.sas = this.sas.filter((s) => !(s.spi === id.spi && s.dst === id.dst));
      return this.sas.length < before
        ? undefined
        : new XfrmError('XFRM_MSG_DELSA: ESRCH', 'XFRM_MSG_DELSA', 'ESRCH', 3);
    });
  }
}

/** SAs in memory (no ESP here), policies in the real kernel of namespace `ns`. */
const kernelPolicies = (ns: string, sas: Sa[] = []): XfrmOps & { sas: FakeXfrm } => {
  const fake = new FakeXfrm(sas);
  return {
    sas: fake,
    dumpSas: () => fake.dumpSas(),
    addSas: (x) => fake.addSas(x),
    deleteSas: (x) => fake.deleteSas(x),
    dumpPolicies: () => inNetns(ns, () => dumpPolicies()),
    putPolicies: (ps) => inNetns(ns, () => putPolicies(ps)),
  };
};

const KEY = storeKey(randomBytes(32));
const etcd = etcdFixture();
const node = (name: string) => etcd.join(name);

test('record on the owner, fence the deposed, re-install on the new owner', async () => {
  const r1 = await node('r1');
  const owner1 = (await r1.claim(DVIPA, 256, r1.view(DVIPA)))!;
  const x1 = new FakeXfrm([OUT, IN, OTHER], [POL_OUT, POL_IN]);
  const rec = new SaRecorder(x1, r1, KEY, 'r1', 1000);
  assert.deepEqual(
    await rec.sync(DVIPA, owner1, 0),
    { written: 2, unchanged: 0, deferred: 0, removed: 0, fenced: false },
    "the DVIPA's two SAs, not the other address's",
  );
  assert.deepEqual(await rec.sync(DVIPA, owner1, 100), {
    written: 0,
    unchanged: 2,
    deferred: 0,
    removed: 0,
    fenced: false,
  });
  x1.sas[0] = { ...OUT, replay: { ...OUT.replay, oseq: 9000 } };
  assert.deepEqual(
    await rec.sync(DVIPA, owner1, 500),
    { written: 0, unchanged: 1, deferred: 1, removed: 0, fenced: false },
    'at most one write per SA per interval',
  );
  assert.deepEqual(await rec.sync(DVIPA, owner1, 1100), {
    written: 1,
    unchanged: 1,
    deferred: 0,
    removed: 0,
    fenced: false,
  });
  const stored = readRecords(KEY, await r1.getBlobs(`ipsec/${DVIPA}/`), owner1.epoch);
  assert.deepEqual(stored.records.map((r) => [r.sa.spi, r.sa.replay.oseq, r.policies.length]).sort(), [
    [OUT.spi, 9000, 1],
    [IN.spi, 0, 1],
  ]);

  // r1 fails: r2 takes over with the next epoch; r1's late writes are fenced off.
  const r2 = await node('r2');
  await r1.stop(0);
  const owner2 = (await r2.claim(DVIPA, 100, r2.view(DVIPA)))!;
  assert.equal(owner2.epoch, owner1.epoch + 1);
  const late = await node('r1');
  x1.sas[0] = { ...OUT, replay: { ...OUT.replay, oseq: 9500 } };
  assert.equal(
    (await new SaRecorder(x1, late, KEY, 'r1', 0).sync(DVIPA, owner1, 5000)).fenced,
    true,
    "the deposed owner's write is refused by etcd",
  );

  // A record nobody of ours sealed sits among them: refused, never installed.
  const junkAt = recordKey(DVIPA, { ...OUT, spi: 0x9999 });
  await r2.putBlobsFenced(
    [
      [
        junkAt,
        sealRecord(storeKey(randomBytes(32)), junkAt, {
          dvipa: DVIPA,
          epoch: owner1.epoch,
          owner: 'mallory',
          savedAt: '',
          sa: { ...OUT, spi: 0x9999 },
          policies: [],
        }),
      ],
    ],
    DVIPA,
    owner2,
  );

  const x2 = new FakeXfrm([], [POL_IN]);
  const r = await reinstall(x2, r2, KEY, 'r2', DVIPA, owner2, 100000);
  assert.equal(r.installed.length, 2);
  assert.equal(r.policies, 1, 'only the policy r2 lacked');
  assert.deepEqual(
    r.refused.map((e) => e.key),
    [junkAt],
  );
  assert.match(r.refused[0].message, /does not open/);
  const out2 = x2.sas.find((s) => s.spi === OUT.spi)!;
  assert.equal(out2.replay.oseq, 9000 + 100000, 'outbound sequence numbers jump by the margin');
  assert.deepEqual(out2.aead, OUT.aead, 'same keys: the peer sees no change');
  const in2 = x2.sas.find((s) => s.spi === IN.spi)!;
  assert.deepEqual([in2.replay.seq, in2.replay.bitmap], [IN.replay.seq, IN.replay.bitmap], 'inbound replay state kept');
  assert.equal(x2.policies.length, 2);
  const after = readRecords(KEY, await r2.getBlobs(`ipsec/${DVIPA}/`), owner2.epoch);
  assert.deepEqual(
    [after.refused.length, after.records.length, ...new Set(after.records.map((x) => `${x.owner}@${x.epoch}`))],
    [0, 2, `r2@${owner2.epoch}`],
    "r2's records replace r1's",
  );
});

test('an SA the kernel refuses is reported, not recorded; the others still go in', async () => {
  const c = await node('r3');
  const d = '192.0.2.11';
  const owner: OwnerRecord = (await c.claim(d, 256, c.view(d)))!;
  const a = { ...OUT, src: d, spi: 0x3001 };
  const b = { ...OUT, src: d, spi: 0x3002 };
  await new SaRecorder(new FakeXfrm([a, b]), c, KEY, 'r3', 0).sync(d, owner);
  const r = await reinstall(new FakeXfrm([], [], 0x3002), c, KEY, 'r3', d, owner, 10);
  assert.equal(r.installed.length, 1);
  assert.deepEqual(
    r.failed.map((f) => [f.spi, /Requested type not found/.test(f.error)]),
    [[0x3002, true]],
  );
  assert.equal(r.recorded, 1);
});

test("records of SAs that are gone are removed, also a predecessor's stale ones; a deposed owner's removal is fenced", async () => {
  const c = await node('r4');
  const d = '192.0.2.12';
  const owner = (await c.claim(d, 256, c.view(d)))!;
  const a = { ...OUT, src: d, spi: 0x4001 };
  const b = { ...OUT, src: d, spi: 0x4002 };
  // A record this recorder never wrote (this node's before a restart): gone from the kernel, so removed.
  const staleAt = recordKey(d, { ...a, spi: 0x4003 });
  await c.putBlobsFenced(
    [
      [
        staleAt,
        sealRecord(KEY, staleAt, {
          dvipa: d,
          epoch: owner.epoch,
          owner: 'r4',
          savedAt: '',
          sa: { ...a, spi: 0x4003 },
          policies: [],
        }),
      ],
    ],
    d,
    owner,
  );
  const x = new FakeXfrm([a, b]);
  const rec = new SaRecorder(x, c, KEY, 'r4', 0);
  assert.deepEqual(await rec.sync(d, owner), { written: 2, unchanged: 0, deferred: 0, removed: 1, fenced: false });
  x.sas = [a]; // b re-keyed away
  assert.deepEqual(await rec.sync(d, owner), { written: 0, unchanged: 1, deferred: 0, removed: 1, fenced: false });
  assert.deepEqual([...(await c.getBlobs(`ipsec/${d}/`)).keys()], [recordKey(d, a)]);
  x.sas = [];
  const deposed = { ...owner, epoch: owner.epoch - 1 };
  assert.equal((await new SaRecorder(new FakeXfrm([]), c, KEY, 'r4', 0).sync(d, deposed)).fenced, true);
  assert.equal((await c.getBlobs(`ipsec/${d}/`)).size, 1, "a deposed owner's removal changes nothing");
});

test("the agent's IPsec side: re-install on takeover, record while owner, remove on loss, retry a failed step", async (t) => {
  const roles: IpsecRole[] = [];
  t.after(() => roles.forEach((r) => r.stop()));
  const d = '192.0.2.13';
  const clusterKey = randomBytes(32);
  const c1 = await node('a1');
  const c2 = await node('a2');
  const out = { ...OUT, src: d, spi: 0x5001 };
  const inb = { ...IN, dst: d, spi: 0x5002 };
  const x1 = new FakeXfrm([out, inb], [{ ...POL_OUT, tmpls: [{ ...POL_OUT.tmpls[0], src: d }] }]);
  const role = (x: FakeXfrm, c: EtcdCoupling, name: string) => {
    const r = new IpsecRole(x, c, clusterKey, name, { seqMargin: 500, intervalMs: 100 }, log);
    roles.push(r);
    r.watch(d);
    r.start();
    return r;
  };
  const role1 = role(x1, c1, 'a1');
  const o1 = (await c1.claim(d, 256, c1.view(d)))!;
  await role1.acquired(d, o1, 'takeback');
  assert.deepEqual(
    x1.sas.map((s) => s.spi),
    [0x5001, 0x5002],
    'nothing in the store: nothing re-installed, nothing lost',
  );
  await waitFor(
    'a1 to record both SAs',
    async () => (await c1.getBlobs(`ipsec/${d}/`)).size === 2 && role1.rows()[0].lastStoreWrite !== undefined,
    5000,
    () => role1.rows(),
  );
  const rows1 = role1.rows();
  assert.deepEqual(
    rows1[0].sas.map((r) => [r.spi, r.dir, r.source, r.seq]),
    [
      ['00005001', 'out', 'negotiated', '1000'],
      ['00005002', 'in', 'negotiated', '5000'],
    ],
  );
  assert.ok(rows1[0].lastStoreWrite, 'the owner wrote its records');

  // a1 fails; a2 takes over. Its first attempt fails (the kernel refuses a dump): retried, and the records stay.
  const x2 = new FakeXfrm([], []);
  let refuse = 1;
  const dump = x2.dumpPolicies.bind(x2);
  x2.dumpPolicies = () => {
    if (refuse-- > 0)
      throw new XfrmError('XFRM_MSG_GETPOLICY(dump): ENOBUFS', 'XFRM_MSG_GETPOLICY(dump)', 'ENOBUFS', 105);
    return dump();
  };
  role1.stop();
  await c1.stop(0);
  const role2 = role(x2, c2, 'a2');
  const o2 = (await c2.claim(d, 100, c2.view(d)))!;
  await role2.acquired(d, o2, 'takeover');
  assert.equal(x2.sas.length, 0, 'first attempt failed');
  assert.equal((await c2.getBlobs(`ipsec/${d}/`)).size, 2, "the predecessor's records are kept for the retry");
  await waitFor(
    'the retry at the next interval to re-install both SAs',
    () => x2.sas.length === 2,
    5000,
    () => role2.rows(),
  );
  await role2.idle(d);
  assert.deepEqual(
    x2.sas.map((s) => [s.spi, s.replay.oseq]).sort(),
    [
      [0x5001, 1500],
      [0x5002, 0],
    ],
    're-installed at the next interval, outbound sequence + margin',
  );
  assert.equal(x2.policies.length, 1);
  const rows2 = role2.rows();
  assert.deepEqual(
    rows2[0].sas.map((r) => r.source),
    ['reinstalled', 'reinstalled'],
  );
  assert.equal(rows2[0].lastReinstall?.installed, 2);
  assert.equal(rows2[0].lastReinstall?.how, 'takeover');

  // a2 loses the DVIPA: its SAs go (they are the new owner's), its policies stay.
  await role2.lost(d);
  assert.deepEqual([x2.sas.length, x2.policies.length], [0, 1]);
  assert.deepEqual(role2.rows()[0], { ...role2.rows()[0], owner: false, epoch: 0, sas: [] });
});

/**
 * The policies of `dvipa` with `peer`, recorded from one namespace's kernel and sealed in etcd,
 * re-installed into another's: exactly once, however often the DVIPA comes back.
 */
async function policiesInKernel(t: TestContext, dvipa: string, peer: string, lans: [string, string]): Promise<void> {
  requireRoot();
  const topo = new Topology(uniquePrefix('ipr'));
  t.after(() => topo.teardown());
  const [a, b] = [topo.ns('a'), topo.ns('b')];
  const v6 = dvipa.includes(':');
  const sel = (src: string) => ({
    ...ANY_SELECTOR,
    ...(v6 ? { dst: '::' } : {}),
    src,
    srcPrefix: v6 ? 48 : 24,
  });
  const pol = (dir: 'in' | 'out', src: string, dst: string): Policy => ({
    ...policy(dir, src, dst),
    selector: sel(lans[dir === 'out' ? 0 : 1]),
  });
  const [polOut, polIn] = [pol('out', dvipa, peer), pol('in', peer, dvipa)];
  const [out, inb] = [base(dvipa, peer, 0x1001), { ...base(peer, dvipa, 0x1002), replay: IN.replay }];
  const inKernel = (ns: string) =>
    inNetns(ns, () => dumpPolicies())
      .map((p) => JSON.stringify([p.dir, p.selector, p.tmpls]))
      .sort();
  // Nodes of their own per family: one etcd serves every test of this file.
  const [n1, n2] = v6 ? ['k3', 'k4'] : ['k1', 'k2'];
  const k1 = await node(n1);
  const owner1 = (await k1.claim(dvipa, 256, k1.view(dvipa)))!;
  const xa = kernelPolicies(a, [out, inb]);
  inNetns(a, () => [polOut, polIn].forEach((p) => putPolicy(p)));
  assert.equal(inKernel(a).length, 2);
  await new SaRecorder(xa, k1, KEY, n1, 0).sync(dvipa, owner1, 0);

  const k2 = await node(n2);
  await k1.stop(0);
  const owner2 = (await k2.claim(dvipa, 100, k2.view(dvipa)))!;
  const xb = kernelPolicies(b);
  const first = await reinstall(xb, k2, KEY, n2, dvipa, owner2, 1000);
  assert.deepEqual([first.installed.length, first.policies], [2, 2]);
  assert.deepEqual(inKernel(b), inKernel(a), "k1's two policies, as k1's kernel dumps them");
  assert.ok(
    inNetns(b, () => dumpPolicies()).every(
      (p) => p.selector.src.includes(':') === v6 && p.tmpls[0].src.includes(':') === v6,
    ),
    'of the family they were recorded in',
  );

  // k2 loses the DVIPA (its SAs go, the policies stay) and gets it again: the SAs come back,
  // the policies are there already (the ESP failover test's "policies: 0" after a flap).
  await xb.deleteSas(xb.dumpSas());
  const again = await reinstall(xb, k2, KEY, n2, dvipa, owner2, 1000);
  assert.deepEqual([again.installed.length, again.policies, again.failed], [2, 0, []]);
  assert.deepEqual(inKernel(b), inKernel(a), 'still exactly the two, none duplicated');
}

test('policies in a real kernel: the new owner puts the recorded ones in; having lost the DVIPA it keeps them, and regaining it adds none and duplicates none', (t) =>
  policiesInKernel(t, DVIPA, PEER, ['198.18.20.0', '198.18.30.0']));

test("IPv6 policies in a real kernel: an IPv6 DVIPA's recorded, sealed and put in once the same way", (t) =>
  policiesInKernel(t, '2001:db8:100::10', '2001:db8:ffff::7', ['2001:db8:20::', '2001:db8:30::']));
