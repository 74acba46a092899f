/*
 * IPsec recovery for real, where the kernel has ESP (the kernel lab: test/kernel-lab.test.ts
 * runs this file there). The HA lab's network: a remote peer (the client namespace) and two
 * routing nodes on a LAN, a real etcd on the core. r1 owns the DVIPA and has ESP tunnel-mode
 * SAs and policies with the peer (installed through XFRM, as an IKE daemon would); pings
 * flow through them. r1 dies (agent killed, link down): r2's agent takes the DVIPA over,
 * re-installs the SAs from etcd with the outbound sequence numbers advanced, and ESP carries
 * on with the same SAs: the peer counts no replayed or failed packet and has negotiated
 * nothing new. Then r1 comes back, takes the DVIPA back and re-installs r2's state; r2 removes
 * its copies. On a kernel without ESP the test is skipped, visibly (a failure in the kernel lab).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { inNetns, netnsPath, nsIp, Topology } from '../../src/lab/netns.js';
import { buildHaTopology, HA, holdsDvipa } from '../../src/lab/ha-topology.js';
import { startEtcd, type EtcdServer } from '../../src/lab/etcd.js';
import {
  addSa,
  ANY_SELECTOR,
  dumpPolicies,
  dumpSas,
  NO_LIMITS,
  putPolicy,
  type Policy,
  type Sa,
} from '../../src/ipsec/xfrm.js';
import { askAgent } from '../../src/cluster/control.js';
import { EMULATED_AGENT_ARGS, EMULATED_ETCD_START_MS, requireRoot, uniquePrefix } from '../helpers/env.js';
import { Agents } from '../helpers/agents.js';
import { startPings } from '../helpers/pings.js';
import { skipWithoutEsp, xfrmStat } from '../helpers/xfrm.js';

const DVIPA = HA.dvipa;
const PEER = HA.client;
const MARGIN = 100000;
/** How long an agent may take to start in the kernel lab (see the setup below). */
const AGENT_START_MS = 420_000;
const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.js');
const [R1, R2] = HA.routers;

const config = [
  `CLUSTER IPSEC SEQMARGIN ${MARGIN} INTERVAL 200`,
  `NODE r1 XCF ${R1.xcf} EXTERNAL ext INTERNAL core0`,
  'VIPADYNAMIC',
  `  VIPADEFINE 255.255.255.255 ${DVIPA}`,
  'ENDVIPADYNAMIC',
  `NODE r2 XCF ${R2.xcf} EXTERNAL ext INTERNAL core0`,
  'VIPADYNAMIC',
  `  VIPABACKUP 100 ${DVIPA}`,
  'ENDVIPADYNAMIC',
  '',
].join('\n');

const sa = (src: string, dst: string, spi: number, key: Buffer): Sa => ({
  src,
  dst,
  spi,
  proto: 'esp',
  mode: 'tunnel',
  reqid: 1,
  flags: 0,
  selector: ANY_SELECTOR,
  lifetime: NO_LIMITS,
  aead: { name: 'rfc4106(gcm(aes))', key, icvBits: 128 },
  replay: { oseq: 0, seq: 0, oseqHi: 0, seqHi: 0, window: 64, bitmap: Buffer.alloc(8), esn: true },
});
/** ICMP between the DVIPA and the peer goes through the tunnel; everything else (the agents, ARP) does not. */
const policy = (dir: 'in' | 'out', from: string, to: string, tunnelSrc: string, tunnelDst: string): Policy => ({
  selector: { ...ANY_SELECTOR, src: from, srcPrefix: 32, dst: to, dstPrefix: 32, proto: 1 },
  dir,
  action: 'allow',
  priority: 100,
  index: 0,
  tmpls: [{ src: tunnelSrc, dst: tunnelDst, spi: 0, proto: 'esp', mode: 'tunnel', reqid: 1, optional: false }],
});

test('ESP through a takeover and a takeback: SAs re-installed from etcd, no replay at the peer, nothing renegotiated', async (t) => {
  requireRoot();
  const t0 = Date.now();
  const topo = new Topology(uniquePrefix('ipf'));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvipa-ipf-'));
  let etcd: EtcdServer | undefined;
  let fleet: Agents | undefined;
  t.after(async () => {
    topo.teardown();
    await etcd?.stop();
    fleet?.purge();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const probe = topo.ns('probe');
  try {
    inNetns(probe, () => addSa(sa('192.0.2.1', '192.0.2.2', 0x99, randomBytes(20))));
  } catch (e) {
    return skipWithoutEsp(t, e);
  }

  const ns = buildHaTopology(topo);
  fs.writeFileSync(path.join(dir, 'cluster.key'), randomBytes(32), { mode: 0o600 });
  fs.writeFileSync(path.join(dir, 'cluster.cfg'), config);
  etcd = await startEtcd({ place: { topo, ns: ns.cf, host: HA.cf }, startMs: EMULATED_ETCD_START_MS });
  fleet = new Agents(topo, ns, dir, topo.prefix);
  const agents = fleet;
  // A lab etcd: plain http, no auth (said so).
  const args = ['--etcd', etcd.url, '--insecure-etcd', '--lease-ttl', '2', ...EMULATED_AGENT_ARGS];
  // What `dvipa netstat ipsec --json` shows, asked in-process: a node process per poll is slow under TCG.
  // Under TCG on a busy host an agent in the middle of its start or takeover answered after more
  // than 5 s (the default): what is asked is its state, not how fast it answers.
  const ipsec = async (node: string) => (await askAgent(agents.socket(node), { cmd: 'ipsec' }, 60_000))[0];
  const waitFor = async (what: string, cond: () => Promise<boolean> | boolean, ms = 60000) => {
    const end = Date.now() + ms;
    // An agent that is still starting does not answer yet: not there yet, not a failure.
    while (
      !(await Promise.resolve()
        .then(cond)
        .catch(() => false))
    ) {
      if (Date.now() > end) await agents.until(what, () => false, 0);
      await new Promise((r) => setTimeout(r, 200));
    }
    t.diagnostic(`${((Date.now() - t0) / 1000).toFixed(1)} s: ${what}`);
  };

  // Both at once: an agent's start is most of a minute of emulated CPU, and the lab has two.
  // Whichever claims first, r1 ends up the owner (r2 claims only while r1 is no member yet,
  // and r1, the defining node, then takes the DVIPA back), with no SA anywhere until then.
  agents.start('r1', { args });
  agents.start('r2', { args });
  // Setup waits, not bounds: under TCG on a loaded host an agent's start (node loading its
  // modules over 9p, its threads, etcd, the member record) took 63 s in a quiet run, and on
  // 2026-11-30 evening neither agent logged a line within 60 s (r1 owned after 308 s once).
  await waitFor('r2 to start', () => agents.find('r2', 'agent started') !== undefined, AGENT_START_MS);
  await waitFor('r1 to own the DVIPA, r2 not', () => holdsDvipa(ns.r1) && !holdsDvipa(ns.r2), AGENT_START_MS);

  // What an IKE daemon would have negotiated between the DVIPA (on r1) and the peer.
  const keyOut = randomBytes(20);
  const keyIn = randomBytes(20);
  inNetns(ns.r1, () => {
    addSa(sa(DVIPA, PEER, 0x1001, keyOut));
    addSa(sa(PEER, DVIPA, 0x1002, keyIn));
    putPolicy(policy('out', DVIPA, PEER, DVIPA, PEER));
    putPolicy(policy('in', PEER, DVIPA, PEER, DVIPA));
  });
  inNetns(ns.client, () => {
    addSa(sa(PEER, DVIPA, 0x1002, keyIn));
    addSa(sa(DVIPA, PEER, 0x1001, keyOut));
    putPolicy(policy('out', PEER, DVIPA, PEER, DVIPA));
    putPolicy(policy('in', DVIPA, PEER, DVIPA, PEER));
  });

  // Pings from the peer, through the tunnel, all along.
  const pings = startPings(topo, ns.client, DVIPA, 0.1);
  const repliesSince = pings.since;
  /** The longest time without a reply around an event: how long ESP was interrupted. */
  const outage = (from: number) => pings.gap(from).ms;
  const started = Date.now();

  await waitFor('pings answered through r1', () => repliesSince(0) >= 10);
  await waitFor("r1's SAs recorded with their sequence numbers", async () => {
    const r = await ipsec('r1');
    return r.owner && r.sas.length === 2 && r.sas.every((s) => BigInt(s.seq) >= 10n) && !!r.lastStoreWrite;
  });
  const before = await ipsec('r1');
  assert.deepEqual(before.sas.map((s) => [s.spi, s.dir, s.source]).sort(), [
    ['00001001', 'out', 'negotiated'],
    ['00001002', 'in', 'negotiated'],
  ]);
  const sentByR1 = BigInt(before.sas.find((s) => s.dir === 'out')!.seq);
  // Under emulation on a loaded host the DVIPA may have changed hands already (a late lease
  // keepalive, a claim after 160 ms without a renewal): r2 then kept r1's policies from that
  // ownership (the policies stay with their SAs gone), and its re-install adds only the others.
  const r2Had = inNetns(ns.r2, () => dumpPolicies()).length;
  const acquired = (node: string) => agents.logs[node].filter((l) => l.msg === 'DVIPA acquired').length;
  t.diagnostic(
    `before the drill: DVIPA acquired ${acquired('r1')} time(s) by r1, ${acquired('r2')} by r2; r2 holds ${r2Had} of the policies`,
  );

  // r1 fails.
  await agents.stop('r1', 'SIGKILL');
  nsIp(ns.r1, 'link', 'set', 'ext', 'down');
  const failedAt = Date.now();
  await waitFor(
    'r2 to take over and re-install',
    async () => holdsDvipa(ns.r2) && (await ipsec('r2')).lastReinstall?.installed === 2,
  );
  await waitFor('pings answered through r2', () => repliesSince(Date.now() - 500) >= 3 && repliesSince(failedAt) >= 10);
  const r2 = await ipsec('r2');
  t.diagnostic(
    `takeover: SAs re-installed in ${r2.lastReinstall!.tookMs} ms (TCG: ${JSON.stringify(r2.lastReinstall!.phases)}); pings unanswered for ${outage(failedAt)} ms (lease TTL 2 s included)`,
  );
  const { how, installed, policies, refused, failed } = r2.lastReinstall!;
  assert.deepEqual(
    { how, installed, policies, refused, failed },
    { how: 'takeover', installed: 2, policies: 2 - r2Had, refused: [], failed: [] },
    // Once, with the lab slowed 2 x by other work, r2 reported 0 new policies after 97 s of outage: a
    // re-install that lost its claim would leave them for the next (not seen: its log, next time).
    `r2's ownership and IPsec log: ${JSON.stringify(
      agents.logs.r2
        .filter((l) => /DVIPA|IPsec|claim/.test(String(l.msg)))
        .map((l) => [l.msg, l.dvipa, l.epoch, l.policies]),
    )}`,
  );
  const policiesOf = (node: string) =>
    inNetns(ns[node], () => dumpPolicies())
      .map((p) => JSON.stringify([p.dir, p.selector, p.tmpls]))
      .sort();
  assert.deepEqual(policiesOf('r2'), policiesOf('r1'), "r2's kernel holds r1's two policies, no more");
  assert.deepEqual(r2.sas.map((s) => [s.spi, s.dir, s.source]).sort(), [
    ['00001001', 'out', 'reinstalled'],
    ['00001002', 'in', 'reinstalled'],
  ]);
  assert.ok(
    BigInt(r2.sas.find((s) => s.dir === 'out')!.seq) > sentByR1 + BigInt(MARGIN),
    'r2 sends on from past the margin',
  );

  const metrics = await new Promise<string>((resolve, reject) =>
    execFile(
      'nsenter',
      [
        `--net=${netnsPath(ns.r2)}`,
        process.execPath,
        '-e',
        "fetch('http://127.0.0.1:9741/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))",
      ],
      (err, stdout) => (err ? reject(err) : resolve(stdout)),
    ),
  );
  assert.match(metrics, /dvipa_ipsec_sas\{dvipa="192\.0\.2\.10",source="reinstalled"\} 2\n/);
  assert.match(metrics, /dvipa_ipsec_records_refused\{dvipa="192\.0\.2\.10"\} 0\n/);
  const peer = () =>
    inNetns(ns.client, () => dumpSas())
      .map((s) => [s.spi, s.replay.seq] as const)
      .sort();
  const peerSas = peer();
  assert.deepEqual(
    peerSas.map(([spi]) => spi),
    [0x1001, 0x1002],
    'the peer has the same two SAs: nothing renegotiated',
  );
  assert.ok(peerSas[0][1] > MARGIN, `the peer received r2's packets past the margin (highest ${peerSas[0][1]})`);
  for (const node of ['client', 'r2']) {
    const s = xfrmStat(ns[node]);
    // XfrmInNoStates too: r2 takes the address only once the SAs are in.
    assert.deepEqual(
      [s.XfrmInStateSeqError, s.XfrmInStateProtoError, s.XfrmInNoStates, s.XfrmInTmplMismatch],
      [0, 0, 0, 0],
      `${node}: no replayed, failed or unmatched ESP: ${JSON.stringify(s)}`,
    );
  }

  // r1 returns and takes the DVIPA back: it re-installs r2's state; r2 removes its copies.
  const returnAt = Date.now();
  nsIp(ns.r1, 'link', 'set', 'ext', 'up');
  agents.start('r1', { args });
  // A setup wait too: r1's agent starts again first (at load 14 one logged nothing in the 60 s this allowed).
  await waitFor(
    'r1 to take the DVIPA back and re-install',
    async () => holdsDvipa(ns.r1) && (await ipsec('r1')).lastReinstall?.how === 'takeback',
    AGENT_START_MS,
  );
  const backAt = Date.now();
  await waitFor('pings answered through r1 again', () => repliesSince(backAt) >= 10);
  await waitFor("r2 to remove the DVIPA's SAs", () => inNetns(ns.r2, () => dumpSas()).length === 0);
  t.diagnostic(`takeback: pings unanswered for ${outage(returnAt)} ms`);
  const r1 = await ipsec('r1');
  assert.deepEqual([r1.lastReinstall!.installed, r1.sas.map((s) => s.source)], [2, ['reinstalled', 'reinstalled']]);
  for (const node of ['client', 'r1']) {
    const s = xfrmStat(ns[node]);
    assert.deepEqual(
      [s.XfrmInStateSeqError, s.XfrmInStateProtoError, s.XfrmInNoStates],
      [0, 0, 0],
      `${node} after the takeback: ${JSON.stringify(s)}`,
    );
  }
  assert.deepEqual(
    peer().map(([spi]) => spi),
    [0x1001, 0x1002],
    'still the same two SAs at the peer',
  );
  const shown = await new Promise<string>((resolve, reject) =>
    execFile(process.execPath, [CLI, 'netstat', 'ipsec', '--socket', agents.socket('r1')], (err, stdout) =>
      err ? reject(err) : resolve(stdout),
    ),
  );
  assert.match(shown, /DVIPA: +192\.0\.2\.10 +OWNER +EPOCH: \d+/);
  assert.match(shown, /LAST REINSTALL: .* TAKEBACK +SAS: 2 +POLICIES: 0 +REFUSED: 0 +FAILED: 0/);
  assert.match(shown, /00001001 +ESP +OUT +TUNNEL +REINSTALLED +192\.0\.2\.10 +198\.18\.0\.1 /);
  pings.child.kill('SIGINT');
  t.diagnostic(
    `ESP failover: ${pings.replies.length} replies in ${((Date.now() - started) / 1000).toFixed(0)} s (one ping per 100 ms) through r1, r2 and r1 again; no replay at the peer`,
  );
});
