/*
 * Benchmark generators: the pktgen commands against a scratch directory standing in for
 * /proc/net/pktgen, and the live generator for real (short): frames through the lab's
 * routing node by XDP, by kernel forwarding and by nftables DNAT, side by side.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  configurePktgen,
  parsePktgenResult,
  pktgenCommands,
  PktgenMissing,
  runPktgen,
  runningDevices,
  type PktgenOptions,
} from '../../src/bench/pktgen.js';
import { requireRoot, uniquePrefix } from '../helpers/env.js';
import { formatFailoverBench, type FailoverBench } from '../../src/bench/failover.js';
import { formatAgentBench, type AgentBench } from '../../src/bench/agent.js';
import { CRT_DEFAULT_ENTRIES, CRT_WAYS } from '../../src/dataplane/structs.js';

const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.js');
let dir: string;
const OPTS: PktgenOptions = {
  device: 'eth9',
  threads: 2,
  dst: '192.0.2.10',
  dstMac: '02:00:00:00:00:01',
  dport: 9999,
  srcMin: '198.18.0.1',
  srcMax: '198.18.0.254',
  sportMin: 10000,
  sportMax: 10999,
  flows: 1000,
  flowLen: 8,
  ratePps: 100000,
  size: 64,
  durationS: 3,
};
const RESULT =
  'Params: count 300000\nResult: OK: 3000012(c2999712+d300) usec, 300000 (64byte,0frags)\n  99999pps 51Mb/sec (51199488bps) errors: 0\n';

function dvipa(args: string[], timeout = 120_000): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    env: { ...process.env, DVIPA_LOG_LEVEL: 'warn' },
    timeout,
  });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvipa-bench-'));
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('pktgen: one device per thread, flows over source ports and addresses, a rate; written as pktgen expects', async () => {
  const proc = path.join(dir, 'pktgen');
  fs.mkdirSync(proc);
  for (const f of ['pgctrl', 'kpktgend_0', 'kpktgend_1']) fs.writeFileSync(path.join(proc, f), '');
  configurePktgen(pktgenCommands(OPTS), proc);
  assert.equal(fs.readFileSync(path.join(proc, 'kpktgend_1'), 'utf8'), 'rem_device_all\nadd_device eth9@1\n');
  const dev = fs.readFileSync(path.join(proc, 'eth9@0'), 'utf8').split('\n');
  for (const line of [
    'count 300000',
    'pkt_size 64',
    'dst 192.0.2.10',
    'dst_mac 02:00:00:00:00:01',
    'src_min 198.18.0.1',
    'src_max 198.18.0.254',
    'udp_src_min 10000',
    'udp_src_max 10999',
    'udp_dst_min 9999',
    'udp_dst_max 9999',
    'flag UDPSRC_RND',
    'flag IPSRC_RND',
    'flows 1000',
    'ratep 100000',
    'queue_map_min 0',
  ]) {
    assert.ok(dev.includes(line), `${line} in ${dev.join('|')}`);
  }
  assert.ok(
    !pktgenCommands({ ...OPTS, ratePps: 0 }).some((c) => c.command.startsWith('ratep')),
    'no rate: as fast as it can, count 0',
  );
  assert.ok(pktgenCommands({ ...OPTS, ratePps: 0 }).some((c) => c.command === 'count 0'));

  for (const d of ['eth9@0', 'eth9@1']) fs.appendFileSync(path.join(proc, d), RESULT);
  const results = await runPktgen(proc, { ...OPTS, threads: 2 });
  assert.deepEqual(
    results.map((r) => [r.device, r.packets, r.pps, r.errors]),
    [
      ['eth9@0', 300000, 99999, 0],
      ['eth9@1', 300000, 99999, 0],
    ],
  );
  // A scratch file's write returns at once, as a counted run's does when it ends: no stop after it.
  assert.equal(fs.readFileSync(path.join(proc, 'pgctrl'), 'utf8'), 'start\n');
  assert.deepEqual(runningDevices('Running: eth9@0 eth9@1 \nStopped: \nResult: NA\n'), ['eth9@0', 'eth9@1']);
  assert.deepEqual(runningDevices('Running: \nStopped: eth9@0 \nResult: OK: ...\n'), []);
  assert.equal(parsePktgenResult('x', 'Params: count 5\n'), undefined, 'no result yet');

  assert.throws(
    () => configurePktgen(pktgenCommands(OPTS), path.join(dir, 'nope')),
    (e: Error) => e instanceof PktgenMissing && /modprobe pktgen/.test(e.message) && /--generator live/.test(e.message),
  );
  assert.throws(
    () => configurePktgen(pktgenCommands({ ...OPTS, threads: 3 }), proc),
    /kpktgend_2: no such pktgen thread/,
  );
});

test('dvipa bench traffic: pktgen missing says how to load it; bad arguments exit 2', () => {
  requireRoot();
  const missing = dvipa([
    'bench',
    'traffic',
    '--generator',
    'pktgen',
    '--device',
    'eth9',
    '--dst-mac',
    '02:00:00:00:00:01',
    '--pktgen-dir',
    path.join(dir, 'none'),
  ]);
  assert.equal(missing.code, 1);
  assert.match(missing.err, /pktgen is not available here: .* 'modprobe pktgen'.*--generator live/);
  for (const args of [
    ['--generator', 'pktgen'],
    ['--modes', 'xdp,warp'],
    ['--seconds', '0'],
    ['--rounds', '0'],
    ['--rounds', '1.5'],
    ['--size', '20'],
    ['--generator', 'magic'],
    ['--crt-entries', '0'],
    ['--crt-entries', String(2 ** 28 + 1)],
  ]) {
    const r = dvipa(['bench', 'traffic', ...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
    // The CRT's size has the agent's limits (src/config/settings.ts), and says them.
    if (args[0] === '--crt-entries') assert.match(r.err, /--crt-entries must be a whole number from 1 to 268435456/);
  }
});

test('dvipa bench fastpath --katran: a missing or incomplete checkout exits 2 naming what is missing; katran paths need it', () => {
  requireRoot();
  const missing = dvipa([
    'bench',
    'fastpath',
    '--katran',
    path.join(dir, 'no-katran'),
    '--rounds',
    '1',
    '--repeat',
    '1',
  ]);
  assert.equal(missing.code, 2, missing.err);
  assert.match(missing.err, /--katran .*no-katran: not a directory/);
  const partial = path.join(dir, 'katran-partial');
  fs.mkdirSync(path.join(partial, 'katran/lib/bpf'), { recursive: true });
  fs.writeFileSync(path.join(partial, 'katran/lib/bpf/balancer.bpf.c'), '');
  const incomplete = dvipa(['bench', 'fastpath', '--katran', partial, '--rounds', '1', '--repeat', '1']);
  assert.equal(incomplete.code, 2, incomplete.err);
  assert.match(incomplete.err, /linux_includes\/bpf\.h is missing: an incomplete Katran checkout/);
  const without = dvipa(['bench', 'fastpath', '--paths', 'katran_syn', '--rounds', '1', '--repeat', '1']);
  assert.equal(without.code, 2, without.err);
  assert.match(without.err, /katran_syn need --katran DIR/);
});

test('live generator: real frames through XDP, kernel forwarding and nftables DNAT, with a chart', () => {
  requireRoot();
  const svg = path.join(dir, 'traffic.svg');
  // A CRT smaller than a node's, of a size that is no whole number of sets.
  const r = dvipa([
    'bench',
    'traffic',
    '--seconds',
    '1',
    '--flows',
    '300',
    '--crt-entries',
    '4098',
    '--json',
    '--svg',
    svg,
  ]);
  assert.equal(r.code, 0, r.err);
  const b = JSON.parse(r.out) as {
    crtEntries: number;
    runs: Array<{
      mode: string;
      sent: number;
      delivered: number;
      perTarget: Record<string, number>;
      ratio: number;
      series: unknown[];
    }>;
  };
  assert.equal(b.crtEntries, 1025 * CRT_WAYS, 'the routing node made the cache asked for, rounded up to whole sets');
  assert.deepEqual(
    b.runs.map((x) => x.mode),
    ['xdp', 'kernel', 'nftables'],
  );
  for (const run of b.runs) {
    assert.ok(
      run.sent > 1000 && run.delivered >= run.sent * 0.9,
      `${run.mode}: ${run.delivered} of ${run.sent} delivered`,
    );
    assert.ok(run.series.length >= 3, `${run.mode}: sampled over time`);
    assert.ok(run.ratio > 0);
  }
  const spread = (run: { perTarget: Record<string, number>; delivered: number }) =>
    Object.values(run.perTarget).map((n) => n / run.delivered);
  for (const mode of ['xdp', 'nftables'])
    assert.ok(
      spread(b.runs.find((x) => x.mode === mode)!).every((s) => s > 0.2),
      `${mode} spreads over the three targets`,
    );
  // Interface counters also see a few ARP and IPv6 neighbour frames.
  assert.deepEqual(
    spread(b.runs.find((x) => x.mode === 'kernel')!).map((s) => s > 0.99 || s < 0.01),
    [true, true, true],
    'kernel forwarding: one target',
  );
  assert.equal(b.runs.find((x) => x.mode === 'kernel')!.ratio, 1);
  const chart = fs.readFileSync(svg, 'utf8');
  assert.match(chart, /^<svg /);
  for (const m of ['xdp', 'kernel', 'nftables']) assert.match(chart, new RegExp(`${m}: [\\d,]+ pps`));
});

test('live generator, router only: targets are XDP sinks that count exactly what the routing node forwarded', () => {
  requireRoot();
  // Past 50,000 flows the generator moves to a further source address (its IP checksum
  // updated in place): the kernel's forwarding would drop any frame with a wrong one.
  const r = dvipa([
    'bench',
    'traffic',
    '--router-only',
    '--seconds',
    '1',
    '--flows',
    '60000',
    '--modes',
    'xdp,kernel',
    '--rounds',
    '2',
    '--json',
  ]);
  assert.equal(r.code, 0, r.err);
  const b = JSON.parse(r.out) as {
    routerOnly: boolean;
    generatedAt: string;
    flows: number;
    crtEntries: number;
    rounds: number;
    runs: Array<{
      mode: string;
      sent: number;
      delivered: number;
      deliveredPps: number;
      perTarget: Record<string, number>;
      rounds: number[];
    }>;
    xdpOver: Record<string, { median: number; rounds: number[] }>;
  };
  assert.equal(b.routerOnly, true);
  assert.equal(b.generatedAt, 'router');
  assert.equal(b.flows, 60000);
  assert.equal(b.crtEntries, CRT_DEFAULT_ENTRIES, "a node's CRT: 60,000 flows need no more");
  for (const run of b.runs) {
    assert.ok(
      run.sent > 1000 && run.delivered >= run.sent * 0.97,
      `${run.mode}: ${run.delivered} of ${run.sent} counted by the sinks`,
    );
    assert.ok(run.delivered <= run.sent, `${run.mode}: the sinks count only forwarded IPv4 frames`);
  }
  const xdp = b.runs.find((x) => x.mode === 'xdp')!;
  assert.ok(
    Object.values(xdp.perTarget).every((n) => n / xdp.delivered > 0.2),
    `XDP spreads over the three targets: ${JSON.stringify(xdp.perTarget)}`,
  );
  const kernel = b.runs.find((x) => x.mode === 'kernel')!;
  assert.deepEqual(
    Object.values(kernel.perTarget).filter((n) => n > 0).length,
    1,
    'kernel forwarding: one target, and no stray frame counted',
  );
  // Two rounds, interleaved: each way's rate is the median (of two: their mean), each ratio taken within a round.
  assert.equal(b.rounds, 2);
  for (const run of b.runs) {
    assert.equal(run.rounds.length, 2, run.mode);
    assert.ok(
      Math.abs(run.deliveredPps - (run.rounds[0] + run.rounds[1]) / 2) < 1,
      `${run.mode}: median of its rounds`,
    );
  }
  const within = [0, 1].map((i) => xdp.rounds[i] / kernel.rounds[i]);
  assert.deepEqual(b.xdpOver.kernel.rounds, within);
  assert.ok(Math.abs(b.xdpOver.kernel.median - (within[0] + within[1]) / 2) < 1e-9);
});

test('dvipa bench failover: dvipa and keepalived die and come back, both partition drills; the figures and chart of each', () => {
  requireRoot();
  for (const bad of [
    ['--runs', '0'],
    ['--advert-int', '0.005'],
    ['--systems', 'dvipa,vrrpd'],
    ['--drills', 'freeze,freeze'],
    ['--prefix', 'Bad Prefix'],
  ]) {
    const r = dvipa(['bench', 'failover', ...bad]);
    assert.equal(r.code, 2, `${bad.join(' ')}: ${r.err}`);
  }
  const prefix = uniquePrefix('fb');
  const svg = path.join(dir, 'failover.svg');
  // One run, faults of a second: the structure and the anchors, not the figures (docs/ha.md has those).
  const args = ['bench', 'failover', '--runs', '1', '--freeze-seconds', '1', '--isolate-seconds', '2'];
  const r = dvipa([...args, '--prefix', prefix, '--json', '--svg', svg], 300_000);
  try {
    assert.equal(r.code, 0, r.err);
    const b = JSON.parse(r.out) as FailoverBench;
    assert.deepEqual(
      b.systems.map((s) => s.system),
      ['dvipa', 'keepalived'],
    );
    for (const s of b.systems) {
      assert.equal(s.idle.outageMs.n, 1, s.system);
      for (const e of [s.takeover, s.takeback]) {
        assert.equal(e.outageMs.n, 1, s.system);
        assert.ok(e.outageMs.median <= e.outageMs.p90 && e.outageMs.p90 <= e.outageMs.max, s.system);
      }
      // A takeover the client does not notice is a probe that sees nothing: a death costs some ping replies.
      assert.ok(
        s.takeover.outageMs.max > 10 && s.takeover.outageMs.max < 15000,
        `${s.system} ${s.takeover.outageMs.max}`,
      );
      for (const d of ['freeze', 'isolate'] as const) {
        const f = s.drills[d]!;
        assert.ok(f.requests > 10, `${s.system} ${d}: ${f.requests} ARP requests`);
        // r1 owned the address when each drill began.
        assert.ok((f.answeredByNode.r1 ?? 0) > 0, `${s.system} ${d}: ${JSON.stringify(f.answeredByNode)}`);
        assert.ok(Number.isInteger(f.dualMs) && f.dualMs >= 0 && f.dualAnswered <= f.requests);
        assert.equal(f.dualMs > 0, f.dualAnswered > 0);
      }
    }
    // keepalived: a backup takes over within about 3 advert_int (0.05 s); VRRP has no arbiter, so a frozen or
    // isolated master keeps the address beside it: dual answers the capture must see.
    const k = b.systems[1];
    assert.ok(k.takeover.outageMs.max < 2000, `keepalived outage ${k.takeover.outageMs.max} ms`);
    // Mostly resets (the new owner answers the old one's connections with RST); a request sent
    // before r2 has the address may fail otherwise (a CI-like run at load 7 saw no reset in its one takeover).
    assert.ok(
      k.takeover.httpFailed > 0,
      `keepalived moves the address, not the connections: ${k.takeover.httpFailed} keep-alive requests failed`,
    );
    for (const d of ['freeze', 'isolate'] as const)
      assert.ok(k.drills[d]!.dualAnswered > 0, `keepalived ${d}: ${JSON.stringify(k.drills[d])}`);
    assert.match(fs.readFileSync(svg, 'utf8'), /<svg[\s\S]*keepalived takeover[\s\S]*<\/svg>/);
    assert.match(formatFailoverBench(b), /keepalived\s+takeover\s+\d+ \/ \d+ \/ \d+/);
  } finally {
    assert.deepEqual(
      (fs.existsSync('/run/netns') ? fs.readdirSync('/run/netns') : []).filter((n) => n.startsWith(prefix)),
      [],
      'namespaces left behind',
    );
    assert.deepEqual(
      fs.readdirSync('/sys/fs/bpf').filter((n) => n.startsWith(prefix)),
      [],
      'pins left behind',
    );
  }
});

test('dvipa bench agent: the agent owns its DVIPA through a real etcd; etcd and the agent both say it kept its lease', () => {
  requireRoot();
  for (const bad of [
    ['--lease-ttl', '0'],
    ['--junk', '-1'],
    ['--seconds', '0'],
  ]) {
    const r = dvipa(['bench', 'agent', ...bad]);
    assert.equal(r.code, 2, `${bad.join(' ')}: ${r.err}`);
  }
  const pins = () => fs.readdirSync('/sys/fs/bpf').filter((n) => n.startsWith('dvipa-bench-agent-'));
  const pinsBefore = pins();
  // A small CRT and a short load: the structure and that every figure is measured, not the figures (docs/security.md).
  const r = dvipa(['bench', 'agent', '--crt-entries', '1000', '--seconds', '2', '--junk', '100', '--json']);
  assert.equal(r.code, 0, r.err);
  const b = JSON.parse(r.out) as AgentBench;
  assert.equal(b.leaseTtlSec, 1);
  const { before, after } = b.etcd;
  assert.equal(before?.node, 'r1', 'etcd named r1 the owner as the load began');
  assert.match(before.lease, /^[1-9]\d*$/, 'its owner key bound to a lease');
  assert.deepEqual(after, before, 'the same owner, epoch and lease as the load ended');
  // 50 a second from the renewal thread for over 2 s, every one seen through the watch.
  assert.ok(b.etcd.renewals >= 20, `${b.etcd.renewals} renewals seen in etcd`);
  assert.deepEqual(
    [b.etcd.ownershipChanges, b.etcd.leaseChanges, b.etcd.memberDeletions, b.agentLeasesLost, b.agentOwnershipChanges],
    [0, 0, 0, 0, 0],
  );
  assert.equal(b.ownedThroughout, true);
  assert.equal(b.leaseKept, true);
  assert.ok(Array.isArray(b.etcdWarnings), 'what etcd warned of, read from its log');
  assert.ok(b.resyncs >= 1 && b.targetStayedConnected, `${b.resyncs} resyncs`);
  assert.ok(b.scrapes >= 1, `${b.scrapes} scrapes`);
  assert.ok(b.loopDelayMaxMs > 0 && b.idleLoopDelayMaxMs > 0 && b.rssPeakMb >= b.rssBeforeMb);
  assert.match(formatAgentBench(b), /lease: +kept; owner key before: r1, epoch \d+, lease \d+/);
  assert.match(formatAgentBench({ ...b, leaseKept: false }), /lease: +LOST/);
  assert.deepEqual(pins(), pinsBefore, 'pins left behind');
});
