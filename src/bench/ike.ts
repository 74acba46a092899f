/*
 * `dvipa bench ipsec --peers N,...`: IKE continuity timed with real charons. An old owner's
 * charon holds an IKE SA with each of N peers (one peer charon with N addresses and N
 * connections stands for N remote sites), recorded in a real etcd; it dies, the address moves,
 * and the new owner's charon renegotiates every recorded connection. Timed: from winning the
 * DVIPA (records read) to every peer's IKE SA and CHILD SA established, records rewritten;
 * counted: the IKE messages the new owner sent and received per peer (its charon's log).
 * With ESP (the kernel lab: emulated, so slow) each IKE SA carries one CHILD SA; without it
 * (this machine) the IKE SAs are childless.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { EtcdCoupling } from '../cluster/coupling.js';
import { startEtcd } from '../lab/etcd.js';
import { nsIp, Topology } from '../lab/netns.js';
import { withCleanup } from '../lab/cleanup.js';
import { Charon, type LabConn } from '../lab/charon.js';
import { hasAddress } from '../net/iproute.js';
import { IkeContinuity, ViciDaemon, type IkeSa } from '../ipsec/ike.js';
import { storeKey } from '../ipsec/store.js';
import { hasEsp, joinForBench } from './ipsec.js';
import { log } from '../log.js';

export interface IkeBenchRow {
  peers: number;
  /** Whether each IKE SA carried a CHILD SA (ESP in this kernel). */
  child: boolean;
  renegotiated: number;
  /** From the win (records read) to all peers renegotiated and the records rewritten. */
  totalMs: number;
  perPeerMs: number;
  messagesPerPeer: number;
}

const DVIPA = '198.18.97.10';
const peerAddr = (i: number) => `198.18.96.${i + 1}`;

const countIn = (file: string, re: RegExp) => (fs.readFileSync(file, 'utf8').match(re) ?? []).length;

export async function benchIke(counts: number[]): Promise<IkeBenchRow[]> {
  if (counts.some((n) => n > 200)) throw new RangeError('at most 200 peers (one /24 of peer addresses)');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvipa-bike-'));
  const charons: Charon[] = [];
  let topo: Topology | undefined;
  return withCleanup(
    () => {
      for (const c of charons) c.kill();
      topo?.teardown();
      fs.rmSync(dir, { recursive: true, force: true });
    },
    async () => {
      const etcd = await startEtcd();
      const members: EtcdCoupling[] = [];
      const rows: IkeBenchRow[] = [];
      try {
        for (const n of counts) {
          topo?.teardown();
          for (const c of charons.splice(0)) await c.stop('SIGKILL');
          topo = new Topology(`dvbk${process.pid % 100000}-`);
          const sw = topo.ns('sw');
          topo.bridge(sw, 'bridge0');
          const ns = { r1: topo.ns('r1'), r2: topo.ns('r2'), peer: topo.ns('peer') };
          topo.veth({ ns: ns.r1, name: 'eth', addr: '198.18.96.201/24' }, { ns: sw, name: 'pr1', master: 'bridge0' });
          topo.veth({ ns: ns.r2, name: 'eth', addr: '198.18.96.202/24' }, { ns: sw, name: 'pr2', master: 'bridge0' });
          topo.veth({ ns: ns.peer, name: 'eth' }, { ns: sw, name: 'ppeer', master: 'bridge0' });
          for (let i = 0; i < n; i++) nsIp(ns.peer, 'addr', 'add', `${peerAddr(i)}/24`, 'dev', 'eth');
          nsIp(ns.peer, 'route', 'add', `${DVIPA}/32`, 'dev', 'eth');
          nsIp(ns.r1, 'addr', 'add', `${DVIPA}/32`, 'dev', 'eth');
          const child = hasEsp(ns.peer);
          const psk = randomBytes(24).toString('base64');
          const common = { extra: { mobike: 'no' }, ...(child ? { child: 'net' } : {}) };
          const conns = (side: 'router' | 'peer'): LabConn[] =>
            Array.from({ length: n }, (_, i) =>
              side === 'router'
                ? {
                    name: `site${i}`,
                    local: DVIPA,
                    remote: peerAddr(i),
                    localId: 'dvipa.example',
                    remoteId: `site${i}.example`,
                    ...common,
                  }
                : {
                    name: `dvipa${i}`,
                    local: peerAddr(i),
                    remote: DVIPA,
                    localId: `site${i}.example`,
                    remoteId: 'dvipa.example',
                    ...common,
                  },
            );
          const start = async (node: 'r1' | 'r2' | 'peer') => {
            // One charon stands for N peers: its per-source limits on half-open IKE SAs (all come from the
            // DVIPA here) would throttle what N separate peers each see once.
            const limits =
              node === 'peer'
                ? ['block_threshold', 'cookie_threshold', 'cookie_threshold_ip'].map((k) => `${k} = 100000`)
                : [];
            const c = await Charon.start(ns[node], { dir: path.join(dir, `${node}-${n}`), settings: limits });
            charons.push(c);
            await c.load(conns(node === 'peer' ? 'peer' : 'router'), psk);
            return c;
          };
          const peer = await start('peer');
          const c1 = await start('r1');
          const c2 = await start('r2');
          void peer;
          const key = storeKey(randomBytes(32));
          const join = (node: string) => joinForBench(etcd.url, node, members);
          // The old owner: its charon negotiates with every peer; its records go to etcd.
          const m1 = await join(`old${n}`);
          const o1 = (await m1.claim(DVIPA, 256, m1.view(DVIPA)))!;
          const d1 = new ViciDaemon(c1.vici, () => undefined, log, 120_000);
          const ike1 = new IkeContinuity(d1, m1, key, `old${n}`, log);
          for (let i = 0; i < n; i++) await d1.initiate(`site${i}`, child ? 'net' : undefined);
          const end = Date.now() + 60_000 + n * 2000;
          const up = (s: IkeSa) => s.state === 'ESTABLISHED' && s.children.length === (child ? 1 : 0);
          while ((await d1.listSas()).filter(up).length < n) {
            if (Date.now() > end) throw new Error(`the old owner established fewer than ${n} IKE SAs: ${c1.tail(5)}`);
            await new Promise((r) => setTimeout(r, 100));
          }
          if (!(await ike1.sync(DVIPA, o1))) throw new Error('the old owner could not write its records');
          d1.close();
          // It dies; the address moves; the new owner wins and renegotiates (timed).
          await c1.stop('SIGKILL');
          await m1.stop(0);
          nsIp(ns.r1, 'addr', 'del', `${DVIPA}/32`, 'dev', 'eth');
          nsIp(ns.r2, 'addr', 'add', `${DVIPA}/32`, 'dev', 'eth');
          nsIp(ns.peer, 'neigh', 'flush', 'dev', 'eth');
          const m2 = await join(`new${n}`);
          const o2 = (await m2.claim(DVIPA, 100, m2.view(DVIPA)))!;
          const d2 = new ViciDaemon(c2.vici, () => undefined, log, 120_000);
          const addressHere = (a: string) => hasAddress('eth', a, ns.r2);
          const ike2 = new IkeContinuity(d2, m2, key, `new${n}`, log, {
            renegotiateMs: 60_000 + n * 2000,
            addressHere,
          });
          const sentBefore = countIn(c2.log, /sending packet/g);
          const receivedBefore = countIn(c2.log, /received packet/g);
          const t0 = performance.now();
          // No ESP re-installed here: nothing to hold or remove around the renegotiation.
          const none = () => Promise.resolve();
          const r = await ike2.takeover(DVIPA, o2, { hold: none, resume: none, replaced: none });
          const totalMs = Math.round(performance.now() - t0);
          d2.close();
          if (r.renegotiated !== n)
            throw new Error(`renegotiated ${r.renegotiated} of ${n}: ${r.failed[0]?.error ?? ''}`);
          const messages =
            countIn(c2.log, /sending packet/g) - sentBefore + countIn(c2.log, /received packet/g) - receivedBefore;
          const messagesPerPeer = Math.round((messages / n) * 10) / 10;
          rows.push({
            peers: n,
            child,
            renegotiated: r.renegotiated,
            totalMs,
            perPeerMs: Math.round(totalMs / n),
            messagesPerPeer,
          });
        }
        return rows;
      } finally {
        for (const m of members) await m.stop(0).catch(() => undefined);
        await etcd.stop();
      }
    },
  );
}

const WIDTHS = [6, 6, 9, 8, 14];

export function formatIkeBench(rows: IkeBenchRow[]): string {
  return [
    'dvipa bench ipsec --peers: a new owner renegotiates the IKE SAs of N peers with its charon',
    '(real charons, real etcd)',
    '',
    ['peers', 'CHILD', 'total ms', 'ms/peer', 'IKE msgs/peer'].map((h, i) => h.padStart(WIDTHS[i])).join(' '),
    ...rows.map((r) =>
      [r.peers, r.child ? 'yes' : 'no', r.totalMs, r.perPeerMs, r.messagesPerPeer]
        .map((v, i) => String(v).padStart(WIDTHS[i]))
        .join(' '),
    ),
    '',
    "total: from winning the DVIPA (records read) to every peer's IKE SA (and CHILD SA) established, records rewritten.",
    'IKE msgs: sent and received by the new owner (IKE_SA_INIT and IKE_AUTH: 4 per peer).',
    ...(rows.some((r) => !r.child)
      ? ['CHILD no: this kernel has no ESP, the IKE SAs are childless; scripts/kernel-lab (emulated) has CHILD SAs.']
      : []),
  ].join('\n');
}
