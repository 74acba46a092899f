/*
 * `dvipa bench ipsec`: a takeover's IPsec work, timed: N SA records (ESP tunnel mode, AES-GCM,
 * one outbound policy each) read from a real etcd and opened, the SAs and policies installed
 * through XFRM netlink, and the records rewritten by the new owner. SAs need a kernel with ESP
 * (scripts/kernel-lab -- node dist/src/cli/main.js bench ipsec); without it the other phases
 * are timed alone, on this kernel. Runs in a namespace of its own.
 */
import { randomBytes } from 'node:crypto';
import { EtcdCoupling } from '../cluster/coupling.js';
import { startEtcd } from '../lab/etcd.js';
import { inNetns, Topology } from '../lab/netns.js';
import { withCleanup } from '../lab/cleanup.js';
import { formatIpv4 } from '../net/addr.js';
import { reinstall, SaRecorder, writeRecords } from '../ipsec/recovery.js';
import { readRecords, storeKey } from '../ipsec/store.js';
import * as xfrm from '../ipsec/xfrm.js';
import { log } from '../log.js';

/**
 * The phases of one re-install (reading and opening the records, installing the SAs, the
 * policies, rewriting the records), its total, and what ESP waits for: SAs and policies in
 * the kernel (`inKernelMs`, from the start: the new owner takes the address then).
 */
/**
 * A coupling-facility member for a benchmark, kept in `members` to be stopped after. A long
 * lease and call deadline: under emulation (the kernel lab) etcd answers slowly, and writing
 * thousands of records outlasts short ones.
 */
export async function joinForBench(url: string, node: string, members: EtcdCoupling[]): Promise<EtcdCoupling> {
  const c = new EtcdCoupling({
    endpoints: [url],
    node,
    xcf: '198.18.0.1',
    ttlSec: 60,
    callTimeoutMs: 60000,
    logger: log,
  });
  await c.start();
  members.push(c);
  return c;
}

export interface IpsecBenchRow {
  sas: number;
  readMs: number;
  saMs: number | null;
  policyMs: number;
  recordMs: number;
  inKernelMs: number | null;
  totalMs: number;
  perSaUs: number;
}

const DVIPA = '192.0.2.10';

function sa(i: number): { sa: xfrm.Sa; policy: xfrm.Policy } {
  // Each SA its own peer and protected subnet, as many remote sites would have.
  const peer = formatIpv4(0xcb000000 + i + 1); // 203.x.y.z
  const subnet = formatIpv4(0x0a000000 + (i << 8)); // 10.i/24
  const s: xfrm.Sa = {
    src: DVIPA,
    dst: peer,
    spi: 0x10000 + i,
    proto: 'esp',
    mode: 'tunnel',
    reqid: i + 1,
    flags: 0,
    selector: xfrm.ANY_SELECTOR,
    aead: { name: 'rfc4106(gcm(aes))', key: randomBytes(20), icvBits: 128 },
    lifetime: xfrm.NO_LIMITS,
    replay: { oseq: 1000 + i, seq: 0, oseqHi: 0, seqHi: 0, window: 32, bitmap: Buffer.alloc(4), esn: false },
  };
  const policy: xfrm.Policy = {
    selector: { ...xfrm.ANY_SELECTOR, src: '198.18.0.0', srcPrefix: 16, dst: subnet, dstPrefix: 24 },
    dir: 'out',
    action: 'allow',
    priority: 100,
    index: 0,
    tmpls: [{ src: DVIPA, dst: peer, spi: 0, proto: 'esp', mode: 'tunnel', reqid: i + 1, optional: false }],
  };
  return { sa: s, policy };
}

/** Whether this kernel installs an ESP SA (AES-GCM) in `ns`. */
export function hasEsp(ns: string): boolean {
  const probe = sa(0).sa;
  return inNetns(ns, () => {
    try {
      xfrm.addSa(probe);
    } catch (e) {
      if (e instanceof xfrm.XfrmError && e.code === 'ENOSYS') return false;
      throw e;
    }
    xfrm.deleteSa(probe);
    return true;
  });
}

export async function benchIpsec(counts: number[]): Promise<IpsecBenchRow[]> {
  const topo = new Topology(`dvbi${process.pid % 100000}-`);
  const etcd = await startEtcd();
  const cfs: EtcdCoupling[] = [];
  return withCleanup(
    () => topo.teardown(),
    async () => {
      try {
        const rows: IpsecBenchRow[] = [];
        const key = storeKey(randomBytes(32));
        for (const n of counts) {
          const fresh = topo.ns(`new${n}`);
          const dvipa = `192.0.2.${rows.length + 10}`;
          const make = (node: string) => joinForBench(etcd.url, node, cfs);
          // The old owner: its SAs in the kernel, recorded in etcd.
          const a = await make(`old${n}`);
          const ownerA = (await a.claim(dvipa, 256, a.view(dvipa)))!;
          const items = Array.from({ length: n }, (_, i) => sa(i));
          // Its kernel's tables, as the recorder reads them (what the recorder writes is what matters here).
          const kernel = {
            dumpSas: () => items.map((x) => ({ ...x.sa, src: dvipa })),
            dumpPolicies: () => items.map((x) => ({ ...x.policy, tmpls: [{ ...x.policy.tmpls[0], src: dvipa }] })),
            addSas: () => [],
            putPolicies: () => [],
            deleteSas: () => [],
          };
          const recorded = await new SaRecorder(kernel, a, key, `old${n}`, 0).sync(dvipa, ownerA);
          if (recorded.written !== n)
            throw new Error(
              `the old owner recorded ${recorded.written} of ${n} SAs${recorded.fenced ? ' (fenced: its lease ended)' : ''}`,
            );
          await a.stop(0);
          // The new owner: claim, then the timed part.
          const b = await make(`new${n}`);
          const ownerB = (await b.claim(dvipa, 100, b.view(dvipa)))!;
          const inside = <T>(f: () => T) => inNetns(fresh, f);
          const ops = {
            dumpSas: () => inside(xfrm.dumpSas),
            dumpPolicies: () => inside(xfrm.dumpPolicies),
            addSas: (x: xfrm.Sa[], o?: { replace?: boolean }) => inside(() => xfrm.addSas(x, o)),
            putPolicies: (p: xfrm.Policy[]) => inside(() => xfrm.putPolicies(p)),
            deleteSas: (s: xfrm.SaId[]) => inside(() => xfrm.deleteSas(s)),
          };
          if (!hasEsp(fresh)) {
            // No ESP here: the phases that do not need it, one by one, on this kernel.
            let at = performance.now();
            const lap = () => Math.round(-at + (at = performance.now()));
            const { records } = readRecords(key, await b.getBlobs(`ipsec/${dvipa}/`), ownerB.epoch);
            const readMs = lap();
            const refused = (await inside(() => xfrm.putPolicies(records.flatMap((r) => r.policies)))).filter(Boolean);
            const policyMs = lap();
            let recorded = 0;
            await writeRecords(b, key, `new${n}`, dvipa, ownerB, records, () => recorded++);
            const recordMs = lap();
            if (records.length !== n || refused.length || recorded !== n)
              throw new Error(`read ${records.length}, recorded ${recorded} of ${n}; ${refused[0]?.message ?? ''}`);
            const totalMs = readMs + policyMs + recordMs;
            rows.push({
              sas: n,
              readMs,
              saMs: null,
              policyMs,
              recordMs,
              inKernelMs: null,
              totalMs,
              perSaUs: Math.round((totalMs * 1000) / n),
            });
            continue;
          }
          const t0 = performance.now();
          let inKernelMs = 0;
          const r = await reinstall(
            ops,
            b,
            key,
            `new${n}`,
            dvipa,
            ownerB,
            100000,
            undefined,
            () => (inKernelMs = performance.now() - t0),
          );
          const totalMs = performance.now() - t0;
          if (r.installed.length !== n || r.failed.length)
            throw new Error(`installed ${r.installed.length} of ${n}: ${r.failed[0]?.error ?? ''}`);
          rows.push({
            sas: n,
            ...r.phases,
            inKernelMs: Math.round(inKernelMs),
            totalMs: Math.round(totalMs),
            perSaUs: Math.round((totalMs * 1000) / n),
          });
        }
        return rows;
      } finally {
        for (const c of cfs) await c.stop(0).catch(() => undefined);
        await etcd.stop();
      }
    },
  );
}

export function formatIpsecBench(rows: IpsecBenchRow[]): string {
  return [
    'dvipa bench ipsec: a takeover re-installs N SAs (ESP tunnel, AES-GCM) and one policy each, from etcd',
    '',
    `${'SAs'.padStart(6)} ${'read ms'.padStart(8)} ${'SAs ms'.padStart(8)} ${'policies ms'.padStart(12)} ${'in kernel ms'.padStart(13)} ${'records ms'.padStart(11)} ${'total ms'.padStart(9)} ${'µs/SA'.padStart(7)}`,
    ...rows.map((r) =>
      [
        [r.sas, 6],
        [r.readMs, 8],
        [r.saMs ?? '-', 8],
        [r.policyMs, 12],
        [r.inKernelMs ?? '-', 13],
        [r.recordMs, 11],
        [r.totalMs, 9],
        [r.perSaUs, 7],
      ]
        .map(([v, w]) => String(v).padStart(Number(w)))
        .join(' '),
    ),
    '',
    'in kernel: from the start until the SAs and policies are in (the new owner takes the address then); records: the new owner rewriting them, after that.',
    ...(rows.some((r) => r.saMs === null)
      ? ['SAs -: this kernel has no ESP; run it in scripts/kernel-lab for them.']
      : []),
  ].join('\n');
}
