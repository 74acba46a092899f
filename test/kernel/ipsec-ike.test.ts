/*
 * IKE continuity for real, where the kernel has ESP (the kernel lab: test/kernel-lab.test.ts
 * runs this file there). The HA lab's network, a real etcd, the two agents with
 * `--ipsec-vici`, and three real charons (r1, r2, the peer in the client namespace), each with
 * its own configuration, VICI socket and pid file. r1 owns the DVIPA and its charon
 * negotiates an IKE SA and an ESP tunnel with the peer; the peer pings the DVIPA through it
 * every 50 ms. r1 dies (agent and charon killed, link down): r2 re-installs the SAs from
 * etcd, takes the address, and its charon renegotiates with the peer; then the peer's
 * `swanctl --list-sas` shows exactly one IKE SA for the DVIPA, r2's; re-keys from the peer
 * and from r2 succeed; DPD is answered; the peer counts no replayed or state-less ESP. r1
 * comes back: the same checks with r1, and r2's charon holds nothing for the DVIPA.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { inNetns, netnsPath, nsIp, Topology } from '../../src/lab/netns.js';
import { buildHaTopology, HA, holdsDvipa } from '../../src/lab/ha-topology.js';
import { startEtcd, type EtcdServer } from '../../src/lab/etcd.js';
import { Charon, type LabConn } from '../../src/lab/charon.js';
import { addSa } from '../../src/ipsec/xfrm.js';
import { parseListSas, type IkeSa } from '../../src/ipsec/ike.js';
import { askAgent } from '../../src/cluster/control.js';
import {
  EMULATED_AGENT_ARGS,
  EMULATED_CHARON_START_MS,
  EMULATED_ETCD_START_MS,
  requireRoot,
  uniquePrefix,
} from '../helpers/env.js';
import { Agents } from '../helpers/agents.js';
import { startPings } from '../helpers/pings.js';
import { ESP_SA, skipWithoutEsp, xfrmStat } from '../helpers/xfrm.js';

const DVIPA = HA.dvipa;
const PEER = HA.client;
const [R1, R2] = HA.routers;
const TTL_S = 2;
const run = async (cmd: string, args: string[]) => (await promisify(execFile)(cmd, args, { encoding: 'utf8' })).stdout;
const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.js');

const config = [
  'CLUSTER IPSEC SEQMARGIN 100000 INTERVAL 200',
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

/** The same connection on both routing nodes: the DVIPA is the local address (mobike off: the path is static). */
const ROUTER: LabConn = {
  name: 'peer',
  local: DVIPA,
  remote: PEER,
  localId: 'dvipa.example',
  remoteId: 'peer.example',
  child: 'net',
  extra: { mobike: 'no' },
};
const PEER_CONN: LabConn = {
  name: 'dvipa',
  local: PEER,
  remote: DVIPA,
  localId: 'peer.example',
  remoteId: 'dvipa.example',
  child: 'net',
  extra: { mobike: 'no', dpd_delay: '1s' },
};

test('IKE continuity: the new owner renegotiates; the peer holds exactly one IKE SA, re-keys and DPD work, no replay', async (t) => {
  requireRoot();
  const t0 = Date.now();
  /** DVIPA_TEST_LOGS=dir keeps the agents' logs there (test/helpers/agents.ts), and the charons' and XFRM's. */
  const keep = process.env.DVIPA_TEST_LOGS;
  const topo = new Topology(uniquePrefix('ike'));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvipa-ikl-'));
  let etcd: EtcdServer | undefined;
  let fleet: Agents | undefined;
  const charons = new Set<Charon>();
  t.after(async () => {
    await fleet?.stop('r1', 'SIGKILL');
    await fleet?.stop('r2', 'SIGKILL');
    if (keep) for (const c of charons) fs.copyFileSync(c.log, path.join(keep, `charon-${path.basename(c.dir)}.log`));
    for (const c of charons) await c.stop('SIGKILL');
    topo.teardown();
    await etcd?.stop();
    fleet?.purge();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  try {
    inNetns(topo.ns('probe'), () => addSa(ESP_SA));
  } catch (e) {
    return skipWithoutEsp(t, e);
  }

  const ns = buildHaTopology(topo);
  // The routers' and the peer's XFRM changes too (ip xfrm monitor), to read after a failure.
  if (keep)
    for (const n of ['r1', 'r2', 'client'] as const)
      topo.spawn(ns[n], 'ip', ['-t', 'xfrm', 'monitor'], {
        stdio: ['ignore', fs.openSync(path.join(keep, `xfrm-${n}.txt`), 'a'), 'ignore'],
      });
  fs.writeFileSync(path.join(dir, 'cluster.key'), randomBytes(32), { mode: 0o600 });
  fs.writeFileSync(path.join(dir, 'cluster.cfg'), config);
  // Kept as soon as it is up, for the cleanup, whatever else failed meanwhile.
  const etcdUp = startEtcd({ place: { topo, ns: ns.cf, host: HA.cf }, startMs: EMULATED_ETCD_START_MS }).then(
    (e) => (etcd = e),
  );
  fleet = new Agents(topo, ns, dir, topo.prefix);
  const agents = fleet;
  const psk = randomBytes(24).toString('base64');
  const charonOf: Record<string, Charon> = {};
  const startCharon = async (node: 'r1' | 'r2' | 'client') => {
    const c = await Charon.start(ns[node], {
      dir: path.join(dir, `charon-${node}-${Date.now()}`),
      startMs: EMULATED_CHARON_START_MS,
    });
    charons.add(c);
    await c.load([node === 'client' ? PEER_CONN : ROUTER], psk);
    charonOf[node] = c;
    return c;
  };
  const killCharon = async (node: string) => {
    if (keep) fs.copyFileSync(charonOf[node].log, path.join(keep, `charon-${path.basename(charonOf[node].dir)}.log`));
    await charonOf[node].stop('SIGKILL');
    charons.delete(charonOf[node]);
  };
  const sas = async (node: string): Promise<IkeSa[]> => {
    const v = await charonOf[node].connect();
    try {
      return parseListSas((await v.stream('list-sas', 'list-sa')).items);
    } finally {
      v.close();
    }
  };
  // swanctl warns on stderr about plugins Debian does not ship: kept out of the test's output.
  const swanctl = (node: string, ...args: string[]) =>
    execFileSync('swanctl', [...args, '--uri', `unix://${charonOf[node].vici}`], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  // Under TCG on a busy host an agent in the middle of its start or takeover answered after more
  // than 5 s (the default): what is asked is its state, not how fast it answers.
  const ipsec = async (node: string) => (await askAgent(agents.socket(node), { cmd: 'ipsec' }, 60_000))[0];
  const waitFor = async (what: string, cond: () => Promise<boolean> | boolean, ms = 180000) => {
    const end = Date.now() + ms;
    while (
      !(await Promise.resolve()
        .then(cond)
        .catch(() => false))
    ) {
      if (Date.now() > end) {
        const logs = Object.entries(charonOf)
          .map(([n, c]) => `charon ${n}:\n${c.tail(15)}`)
          .join('\n');
        await agents.until(`${what}\n${logs}`, () => false, 0);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    t.diagnostic(`${((Date.now() - t0) / 1000).toFixed(1)} s: ${what}`);
  };
  /** The peer's IKE SAs, as `swanctl --list-sas` shows them: name, state and SPIs of each. */
  const peerListed = () =>
    [
      ...swanctl('client', '--list-sas').matchAll(/^(\S+): #\d+, (\w+), IKEv2, ([0-9a-f]{16})_i\*? ([0-9a-f]{16})_r/gm),
    ].map((m) => ({ name: m[1], state: m[2], spis: `${m[3]} ${m[4]}` }));
  const spisOf = (s: IkeSa) => `${s.initiatorSpi} ${s.responderSpi}`;

  // etcd and the three charons start together (each is seconds of emulated CPU), then the agents.
  // All settled before a failure is thrown: the cleanup then finds every one that started.
  const up = await Promise.allSettled([etcdUp, startCharon('client'), startCharon('r1'), startCharon('r2')]);
  for (const r of up) if (r.status === 'rejected') throw r.reason;
  const { url } = await etcdUp;
  const args = (node: string) => [
    '--etcd',
    url,
    '--insecure-etcd',
    '--lease-ttl',
    String(TTL_S),
    '--ipsec-vici',
    charonOf[node].vici,
    ...EMULATED_AGENT_ARGS,
  ];
  // Both agents at once, as in ipsec-failover.test.ts: r1 ends up the owner either way, before any IKE SA.
  agents.start('r1', { args: args('r1') });
  agents.start('r2', { args: args('r2') });
  // Setup waits, not bounds: an agent's start under TCG on a loaded host (see ipsec-failover.test.ts).
  await waitFor('r2 to start', () => agents.find('r2', 'agent started') !== undefined, 420_000);
  await waitFor('r1 to own the DVIPA, r2 not', () => holdsDvipa(ns.r1) && !holdsDvipa(ns.r2), 420_000);
  // r1's charon negotiates with the peer (its start_action would). A setup wait: under TCG on a loaded host
  // each side's Diffie-Hellman took 5 to 8 s, and charon's retransmissions (4, 7, 13 s) outlasted 20 s.
  swanctl('r1', '--initiate', '--child', 'net', '--timeout', '120');

  const pings = startPings(topo, ns.client, DVIPA, 0.05);
  const repliesSince = pings.since;
  const gap = pings.gap;
  const outage = (from: number) => gap(from).ms;
  await waitFor('pings answered through the tunnel with r1', () => repliesSince(0) >= 10);
  await waitFor("r1's IKE SA and CHILD SAs recorded", async () => {
    const r = await ipsec('r1');
    return r.ike?.length === 1 && r.ike[0].children.length === 1 && r.sas.length === 2 && !!r.lastStoreWrite;
  });
  const before = (await ipsec('r1')).ike![0];
  assert.deepEqual(
    [before.conn, before.remote, before.source, before.state],
    ['peer', PEER, 'negotiated', 'ESTABLISHED'],
  );
  const statsBefore = xfrmStat(ns.client);

  // r1 fails: its agent and charon die, its link goes down.
  await agents.stop('r1', 'SIGKILL');
  await killCharon('r1');
  nsIp(ns.r1, 'link', 'set', 'ext', 'down');
  const failedAt = Date.now();
  // The anchor: when the address is on r2, as the fast-path failover (no IKE) would have it.
  await waitFor('r2 to hold the DVIPA', () => holdsDvipa(ns.r2));
  const movedMs = Date.now() - failedAt;
  await waitFor(
    'r2 to take over and renegotiate',
    async () => (await ipsec('r2'))?.lastRenegotiation?.renegotiated === 1,
  );
  const renegotiatedAt = Date.now();
  await waitFor('pings answered through r2', () => repliesSince(renegotiatedAt) >= 10);
  const r2 = await ipsec('r2');
  const { tookMs: reinstallMs } = r2.lastReinstall!;
  const renegotiateMs = r2.lastRenegotiation!.tookMs;
  t.diagnostic(
    `takeover: SAs re-installed in ${reinstallMs} ms, the peer renegotiated in ${renegotiateMs} ms after that; ` +
      `address on r2 ${movedMs} ms after the failure; pings unanswered for ${outage(failedAt)} ms (lease TTL ${TTL_S} s included)`,
  );
  assert.deepEqual(
    r2.ike!.map((p) => [p.source, p.state, p.children.length]),
    [['renegotiated', 'ESTABLISHED', 1]],
  );
  assert.ok(
    r2.sas.length >= 2 && r2.sas.every((s) => s.source === 'renegotiated'),
    `only renegotiated CHILD SAs at r2: ${JSON.stringify(r2.sas)}`,
  );
  const [atR2] = await sas('r2');
  let listed = peerListed();
  assert.deepEqual(
    listed,
    [{ name: 'dvipa', state: 'ESTABLISHED', spis: spisOf(atR2) }],
    'exactly one IKE SA at the peer, established with r2',
  );
  // The renegotiation adds no outage: pings resume within a second and a half of the address move (ARP, the ping interval).
  assert.ok(
    outage(failedAt) <= movedMs + 1500,
    `pings unanswered for ${outage(failedAt)} ms, the address moved after ${movedMs} ms`,
  );

  // Re-keys from both ends, and DPD (pings paused: DPD runs only on a quiet tunnel).
  const rekeyed = async (what: string, from: string, args: string[]) => {
    const was = listed[0].spis;
    swanctl(from, '--rekey', ...args);
    await waitFor(
      what,
      () => {
        listed = peerListed();
        return listed.length === 1 && listed[0].state === 'ESTABLISHED' && listed[0].spis !== was;
      },
      20000,
    );
  };
  await rekeyed('an IKE re-key from the peer', 'client', ['--ike', 'dvipa']);
  await rekeyed('an IKE re-key from r2', 'r2', ['--ike', 'peer']);
  const childBefore = (await sas('client'))[0].children[0].spiIn;
  swanctl('client', '--rekey', '--child', 'net');
  await waitFor(
    'a CHILD re-key from the peer',
    async () => {
      const c = (await sas('client'))[0]?.children ?? [];
      return c.length === 1 && c[0].state === 'INSTALLED' && c[0].spiIn !== childBefore;
    },
    20000,
  );
  const dpds = () =>
    (fs.readFileSync(charonOf.client.log, 'utf8').match(/parsed INFORMATIONAL response \d+ \[ \]/g) ?? []).length;
  const dpdBefore = dpds();
  pings.child.kill('SIGSTOP');
  await waitFor('DPD answered by r2', () => dpds() > dpdBefore, 10000);
  pings.child.kill('SIGCONT');
  await waitFor('pings answered after the DPD pause', () => repliesSince(Date.now() - 500) >= 3);
  const stats = xfrmStat(ns.client);
  /** What the peer counted since the tunnel came up: replayed, state-less and failed ESP. */
  const counted = (s: Record<string, number>) => ({
    replay: s.XfrmInStateSeqError - statsBefore.XfrmInStateSeqError,
    noState: s.XfrmInNoStates - statsBefore.XfrmInNoStates,
    proto: s.XfrmInStateProtoError - statsBefore.XfrmInStateProtoError,
  });
  // The routers' side, printed only: ESP the peer sent on the new SA before the router had it (one trip of the answer).
  const routerStat = (n: 'r1' | 'r2') => {
    const s = xfrmStat(ns[n]);
    return `${n} noState in ${s.XfrmInNoStates}, out ${s.XfrmOutNoStates}`;
  };
  t.diagnostic(`peer xfrm_stat after the takeover: ${JSON.stringify(counted(stats))}; ${routerStat('r2')}`);
  // INITIAL_CONTACT makes the peer drop the old SAs as it answers IKE_AUTH, a trip before r2 learns the new
  // ones: r2 held its re-installed outbound SA from before it initiated, so nothing reached the peer on a dead SA.
  assert.deepEqual(
    counted(stats),
    { replay: 0, noState: 0, proto: 0 },
    'the peer saw replayed, state-less or failed ESP',
  );

  // r1 comes back and takes the DVIPA back; r2's charon forgets.
  const returnAt = Date.now();
  nsIp(ns.r1, 'link', 'set', 'ext', 'up');
  await startCharon('r1');
  agents.start('r1', { args: args('r1') });
  // A setup wait too, as the first start's: r1's agent starts again first (at load 9 to 14 it logged nothing in 180 s).
  await waitFor(
    'r1 to take the DVIPA back and renegotiate',
    async () => holdsDvipa(ns.r1) && (await ipsec('r1'))?.lastRenegotiation?.renegotiated === 1,
    420_000,
  );
  await waitFor("r2's charon to hold nothing for the DVIPA", async () => (await sas('r2')).length === 0);
  const backAt = Date.now();
  await waitFor('pings answered through r1 again', () => repliesSince(backAt) >= 10);
  t.diagnostic(
    `takeback: pings unanswered for ${outage(returnAt)} ms (from ${gap(returnAt).at} ms after r1's return; taken back and renegotiated by ${backAt - returnAt} ms)`,
  );
  const [atR1] = await sas('r1');
  assert.deepEqual(
    peerListed(),
    [{ name: 'dvipa', state: 'ESTABLISHED', spis: spisOf(atR1) }],
    'exactly one IKE SA at the peer, established with r1',
  );
  const r1 = await ipsec('r1');
  assert.deepEqual(
    r1.ike!.map((p) => [p.source, p.state]),
    [['renegotiated', 'ESTABLISHED']],
  );
  const after = xfrmStat(ns.client);
  t.diagnostic(`peer xfrm_stat after the takeback: ${JSON.stringify(counted(after))}; ${routerStat('r1')}`);
  assert.deepEqual(counted(after), { replay: 0, noState: 0, proto: 0 }, 'after the takeback');
  // The operator's view and the metrics, each a node process (many seconds under TCG): both at once.
  const [shown, metrics] = await Promise.all([
    run(process.execPath, [CLI, 'netstat', 'ipsec', '--socket', agents.socket('r1')]),
    run('nsenter', [
      `--net=${netnsPath(ns.r1)}`,
      process.execPath,
      '-e',
      "fetch('http://127.0.0.1:9741/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))",
    ]),
  ]);
  assert.match(shown, /LAST RENEGOTIATION: .* PEERS: 1 +RENEGOTIATED: 1 +FAILED: 0/);
  assert.match(
    shown,
    /198\.18\.0\.1 +peer +RENEGOTIATED +ESTABLISHED +\d+S +peer\.example +[0-9a-f]{16}_i [0-9a-f]{16}_r/,
  );
  assert.match(shown, /CHILD net +REQID: \d+ +SPI IN: [0-9a-f]{8} +OUT: [0-9a-f]{8} +INSTALLED/);
  assert.match(shown, / ESP +OUT +TUNNEL +RENEGOTIATED +192\.0\.2\.10 +198\.18\.0\.1 /);
  assert.match(metrics, /dvipa_ipsec_ike_sas\{dvipa="192\.0\.2\.10",source="renegotiated"\} 1\n/);
  assert.match(metrics, /dvipa_ipsec_renegotiations_total\{dvipa="192\.0\.2\.10",result="renegotiated"\} 1\n/);
  assert.match(metrics, /dvipa_ipsec_last_renegotiation_seconds\{dvipa="192\.0\.2\.10"\} [\d.]+\n/);
  pings.child.kill('SIGINT');
  t.diagnostic(
    `IKE continuity: ${pings.replies.length} replies in ${((Date.now() - t0) / 1000).toFixed(0)} s through r1, r2 and r1 again; one IKE SA at the peer throughout`,
  );
});
