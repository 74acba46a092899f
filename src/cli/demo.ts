/*
 * `dvipa demo`: the fast path at work on one machine. It builds the lab (a client, a
 * routing node, three targets with real servers), opens real TCP connections to the
 * DVIPA, changes weights, takes a target out of the DPT, swaps the program under UDP
 * traffic, and reports what happened. Everything it creates is removed at the end.
 */
import { createFastpathLab, LAB, type FastpathLab } from '../lab/fastpath-lab.js';
import { FastPath } from '../dataplane/fastpath.js';
import type { ConnResult } from '../lab/procs.js';
import { command } from './command.js';
import { requireRoot } from './errors.js';
import { withCleanup } from '../lab/cleanup.js';

interface Step {
  step: string;
  spread?: Record<string, number>;
  detail: string;
  ok: boolean;
}

function tally(rs: ConnResult[]): { spread: Record<string, number>; failed: number } {
  const spread: Record<string, number> = {};
  let failed = 0;
  for (const r of rs) {
    if (r.name) spread[r.name] = (spread[r.name] ?? 0) + 1;
    else failed++;
  }
  return { spread, failed };
}

const same = (a: ConnResult[], b: ConnResult[]) => a.every((r, i) => r.name !== undefined && r.name === b[i]?.name);

async function datagramsPerTarget(lab: FastpathLab): Promise<number[]> {
  const counts: number[] = [];
  for (const t of lab.targets) {
    const local = lab.clientIn(t.ns);
    try {
      const [conn] = await local.open('127.0.0.1', LAB.tcpPort, 1);
      counts.push(Number((await local.ask([conn.id], 'udpcount'))[0].name));
    } finally {
      local.stop();
    }
  }
  return counts;
}

export async function runDemo(log: (line: string) => void): Promise<Step[]> {
  const steps: Step[] = [];
  const record = (s: Step) => {
    steps.push(s);
    log(`${s.ok ? 'ok  ' : 'FAIL'} ${s.step}: ${s.detail}${s.spread ? ` ${JSON.stringify(s.spread)}` : ''}`);
  };
  log(
    `building the lab: client ${LAB.client}, routing node (distributor on its external veth), targets t1 t2 t3; DVIPA ${LAB.dvipa}:${LAB.tcpPort}`,
  );
  const lab = await createFastpathLab(`dvipa-demo-${process.pid}-`);
  return withCleanup(
    () => {
      lab.teardown();
      log('lab removed');
    },
    async () => {
      const { client, router, tcpService } = lab;
      const first = await client.open(LAB.dvipa, LAB.tcpPort, 30);
      const t1 = tally(first);
      record({
        step: '30 connections, equal weights',
        spread: t1.spread,
        detail: `${t1.failed} failed`,
        ok: t1.failed === 0 && Object.keys(t1.spread).length === 3,
      });

      lab.setWeights(tcpService, { t1: 3, t2: 1, t3: 1 });
      const weighted = await client.open(LAB.dvipa, LAB.tcpPort, 30);
      const again = await client.ask(first.map((r) => r.id));
      record({
        step: 'weights 3:1:1, 30 more',
        spread: tally(weighted).spread,
        detail: `the first 30 ${same(first, again) ? 'kept' : 'LOST'} their targets`,
        ok: same(first, again),
      });

      lab.setWeights(tcpService, { t1: 1, t2: 1 });
      const withoutT3 = await client.open(LAB.dvipa, LAB.tcpPort, 30);
      const old = await client.ask([...first, ...weighted].map((r) => r.id));
      const t3new = withoutT3.filter((r) => r.name === 't3').length;
      const oldOk = same([...first, ...weighted], old);
      record({
        step: 't3 leaves the DPT, 30 more',
        spread: tally(withoutT3).spread,
        detail: `${t3new} new on t3; open connections ${oldOk ? 'all still answered by their targets' : 'BROKEN'}`,
        ok: t3new === 0 && oldOk,
      });

      const sending = client.udp(LAB.dvipa, LAB.udpPort, 2000, 250);
      let swaps = 0;
      while (swaps < 10) {
        const next = FastPath.open({ pinRoot: router.pinRoot });
        try {
          lab.inside(lab.routerNs, () => next.attach('distributor', 'ext'));
        } finally {
          next.close();
        }
        swaps++;
        await new Promise((r) => setTimeout(r, 30));
      }
      const sent = await sending;
      const received = (await datagramsPerTarget(lab)).reduce((a, b) => a + b, 0);
      record({
        step: `program replaced ${swaps} times under UDP traffic`,
        detail: `${sent} datagrams sent, ${received} received`,
        ok: received === sent,
      });

      const st = router.serviceStats(router.serviceId(tcpService)!);
      const reasons = Object.entries(router.reasonCounts())
        .filter(([, n]) => n > 0n)
        .map(([r, n]) => `${r} ${n}`)
        .join(', ');
      record({
        step: 'counters',
        detail: `TCP service: packets ${st.packets}, CRT hits ${st.crtHit}, new ${st.crtNew}, dropped ${st.dropped}; CRT entries ${router.crt.count()}; reasons: ${reasons}`,
        ok: st.dropped === 0n,
      });
      return steps;
    },
  );
}

export const demoCommand = command({
  command: 'demo',
  describe:
    'the fast path at work in namespaces on this machine: distribution, weights, DPT changes, hitless program swap',
  builder: (y) => y.option('json', { type: 'boolean', default: false }),
  handler: async (a) => {
    requireRoot('dvipa demo');
    const steps = await runDemo((l) => (a.json ? process.stderr : process.stdout).write(`${l}\n`));
    if (a.json) process.stdout.write(`${JSON.stringify({ steps }, null, 2)}\n`);
    if (steps.some((s) => !s.ok)) process.exitCode = 1;
  },
});
