/*
 * High availability for real: a client and two routing nodes on one LAN (a bridge), the
 * routing nodes, three targets, a plain return gateway and a real etcd on the core (another
 * bridge). r1 defines the DVIPA, r2 backs it up with a distribution of its own (t1 and t2
 * only); an IPv6 DVIPA beside it the same way. Under a load of 200 long-lived connections to
 * each (IPv4 and IPv6) exchanging data every 100 ms and a stream of new connections to each:
 * an agent restart on the owner, etcd unreachable, a takeover
 * (agent killed, external link down), the takeback, the owner cut off from etcd, operator moves.
 * Every window of the client is checked, in both families: no connection reset, no new
 * connection failed or left pending (each counts in the window it started in, whenever it
 * ends), and where docs/ha.md says so, no TCP segment lost: none retransmitted without its
 * receiver's D-SACK (the client's TCP counters count both families: one lost in either fails it;
 * a retransmission whose original arrived late is a delay, and the waits measure those).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFile, execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { netnsPath, nsIp, Topology } from '../../src/lab/netns.js';
import { buildHaTopology, haConfig, HA, HA_DVIPAS, holdsDvipa } from '../../src/lab/ha-topology.js';
import { LoadClient, loadProblems, OutageProbe, startNameServer, type LoadReport } from '../../src/lab/procs.js';
import { ArpWatch } from '../../src/lab/arp-watch.js';
import { reasonsAt } from '../../src/lab/ha-lab.js';
import { FastPath } from '../../src/dataplane/fastpath.js';
import { HANDOVER_DRAIN_MS } from '../../src/cluster/router.js';
import { startEtcd, type EtcdServer } from '../../src/lab/etcd.js';
import { requireRoot, uniquePrefix } from '../helpers/env.js';
import { Agents, sleep } from '../helpers/agents.js';
import { BOUND, LOADED_MACHINE_MARGIN_MS } from '../helpers/ha-figures.js';

const DVIPA = HA.dvipa;
const DVIPA6 = HA.dvipa6;
const PORT = 8080;
const CF = HA.cf;
const TARGETS = HA.targets;
const LONG = 200;
const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.js');

/** The owner cut off from etcd keeps the address until it hears the new owner's DVIPA message (README, Known limits). */
const OVERLAP_BOUND_MS = 1000;

let topo: Topology;
let dir: string;
let etcd: EtcdServer;
let fleet: Agents;
/** The client's load on each DVIPA: 200 long-lived connections and 20 new ones a second each. */
const loads: Partial<Record<Family, LoadClient>> = {};
type Family = 'IPv4' | 'IPv6';
const FAMILIES: Array<[Family, string]> = [
  ['IPv4', DVIPA],
  ['IPv6', DVIPA6],
];
/** The IPv4 load: the one whose new connections the waits count. */
let load: LoadClient;
const ns: Record<string, string> = {};

// A test etcd: plain http, no auth (said so).
const haArgs = () => ['--etcd', etcd.url, '--insecure-etcd'];
const holds = (router: string) => holdsDvipa(ns[router]);
/** Whether `router` holds both DVIPAs (`false`: neither). */
const holdsBoth = (router: string, held = true) => HA_DVIPAS.every((d) => holdsDvipa(ns[router], d) === held);
const acquired = (router: string, how?: string, dvipa: string = DVIPA) =>
  fleet.find(router, 'DVIPA acquired', how ? { how, dvipa } : { dvipa });
/** Starts a window of both loads. */
const mark = (label: string) => Promise.all(Object.values(loads).map((l) => l.mark(label)));

function show(t: { diagnostic(m: string): void }, what: string, r: LoadReport): void {
  t.diagnostic(`${what}: ${JSON.stringify(r)}`);
}

/**
 * Closes the client's window once every long-lived connection has answered in it, waits for its
 * new connections to end, and asserts nothing was lost: no reset, no silent connection, no new
 * connection failed or pending, and (`lossless`) not one TCP segment lost (retransmitted without
 * its receiver's D-SACK).
 */
async function closeWindow(
  t: { diagnostic(m: string): void },
  what: string,
  o: { lossless?: true } = {},
): Promise<Record<Family, LoadReport>> {
  const r = {} as Record<Family, LoadReport>;
  await Promise.all(
    FAMILIES.map(async ([family]) => {
      await loads[family]!.allAnswering(15000);
      r[family] = await loads[family]!.close();
    }),
  );
  for (const [family] of FAMILIES) show(t, `${what} (${family})`, r[family]);
  // Where packets were dropped so far (counted since each node's maps were made): a loss says where.
  const drops = JSON.stringify(Object.fromEntries(['r1', 'r2'].map((n) => [n, routerDrops(n)])));
  t.diagnostic(`${what}: routing nodes' drop verdicts so far ${drops}`);
  for (const [family] of FAMILIES) {
    assert.deepEqual(
      loadProblems(r[family], { long: LONG, lossless: o.lossless }),
      [],
      `${what} (${family}): ${JSON.stringify(r[family])}; drops ${drops}`,
    );
  }
  return r;
}

function routerDrops(node: string): Record<string, number> {
  if (!fs.existsSync(fleet.pinRoot(node))) return {};
  const dropped = Object.entries(reasonsAt(fleet.pinRoot(node))).filter(([r, n]) => r.startsWith('drop_') && n > 0n);
  return Object.fromEntries(dropped.map(([r, n]) => [r, Number(n)]));
}

/** Until the client's current window has served `n` new connections (traffic through whatever the event left). */
async function served(n: number, ms = 10000): Promise<void> {
  const end = Date.now() + ms;
  while ((await load.report()).fresh.ok < n) {
    if (Date.now() > end) assert.fail(`fewer than ${n} new connections served within ${ms} ms`);
    await sleep(100);
  }
}

before(async () => {
  requireRoot();
  const prefix = uniquePrefix('ha');
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvipa-ha-'));
  fs.writeFileSync(path.join(dir, 'cluster.key'), randomBytes(32), { mode: 0o600 });
  fs.writeFileSync(path.join(dir, 'cluster.cfg'), haConfig([PORT]));
  topo = new Topology(prefix);
  fleet = new Agents(topo, ns, dir, prefix);
  Object.assign(ns, buildHaTopology(topo));
  for (const t of TARGETS) await startNameServer(topo, ns[t.name], t.name, PORT, 9999);

  etcd = await startEtcd({ place: { topo, ns: ns.cf, host: CF } });
  for (const t of TARGETS) fleet.start(t.name);
  fleet.start('r1', { args: haArgs() });
  await fleet.until(
    'r1 to own both DVIPAs',
    () => HA_DVIPAS.every((d) => acquired('r1', undefined, d) !== undefined) && holdsBoth('r1'),
  );
  fleet.start('r2', { args: haArgs() });
  const ready = (router: string, targets: string[]) =>
    targets.every((t) => fleet.logs[router].some((l) => l.msg === 'DPT changed' && l.target === t && l.ready === true));
  await fleet.until(
    "both routing nodes' DPTs to be complete",
    () => ready('r1', ['t1', 't2', 't3']) && ready('r2', ['t1', 't2']),
  );
  await fleet.until("r2 to know the targets' connections", () => fleet.find('r2', 'agent started') !== undefined);
  for (const [family, host] of FAMILIES)
    loads[family] = await LoadClient.start(topo, ns.client, {
      host,
      port: PORT,
      long: LONG,
      intervalMs: 100,
      newPerSec: 20,
    });
  load = loads.IPv4!;
});

after(async () => {
  for (const l of Object.values(loads)) l.stop();
  topo?.teardown();
  await etcd?.stop();
  fleet?.purge();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('steady state: every connection of both families served through r1, over all three targets, nothing lost', async (t) => {
  await mark('steady');
  await served(20);
  const r = await closeWindow(t, 'steady', { lossless: true });
  for (const [family] of FAMILIES) {
    assert.deepEqual(Object.keys(r[family].long.perTarget).sort(), ['t1', 't2', 't3'], `${family} long-lived`);
    assert.deepEqual(Object.keys(r[family].fresh.names).sort(), ['t1', 't2', 't3'], `${family} new connections`);
  }
  assert.ok(holdsBoth('r2', false));
});

/** The agent's Prometheus metrics, scraped from inside its namespace. */
function metrics(node: string): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(
      'nsenter',
      [
        `--net=${netnsPath(ns[node])}`,
        process.execPath,
        '-e',
        "fetch('http://127.0.0.1:9741/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))",
      ],
      (err, stdout) => (err ? reject(err) : resolve(stdout)),
    ),
  );
}

/** `dvipa netstat REPORT --json` against a node's agent (or `--socket` as given). */
async function netstat(node: string, ...args: string[]): Promise<{ code: number; json?: unknown; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, 'netstat', ...args, '--json', '--socket', fleet.socket(node)],
      (err, stdout, stderr) =>
        resolve({
          code: err ? Number((err as { code?: number }).code ?? 1) : 0,
          json: err ? undefined : JSON.parse(stdout),
          stderr,
        }),
    );
  });
}

test('netstat: vipadyn, vdpt, vcrt and vipadcfg from the agents, as the operator sees them', async () => {
  const dyn = async (node: string) =>
    (await netstat(node, 'vipadyn')).json as {
      coupling: { shared: boolean; healthy: boolean; members: string[] };
      dvipas: Array<Record<string, unknown>>;
    };
  const r1 = await dyn('r1');
  assert.deepEqual(r1.coupling, { shared: true, healthy: true, members: ['r1', 'r2'] });
  assert.deepEqual(
    r1.dvipas.map((d) => [d.dvipa, d.status, d.origin, d.distStat, d.rank, d.owner]),
    HA_DVIPAS.map((d) => [d, 'Active', 'VIPADEFine', 'Dist', 256, 'r1']),
  );
  assert.ok((r1.dvipas[0].epoch as number) >= 1 && typeof r1.dvipas[0].since === 'string');
  const r2 = await dyn('r2');
  assert.deepEqual(
    r2.dvipas.map((d) => [d.status, d.origin, d.rank, d.epoch, d.owner, d.heldBack]),
    // A backup under a living owner has nothing to claim: nothing held back.
    HA_DVIPAS.map(() => ['Backup', 'VIPABackup', 100, 0, 'r1', undefined]),
  );
  assert.deepEqual(
    (await dyn('t1')).dvipas.map((d) => [d.status, d.distStat]),
    HA_DVIPAS.map(() => ['Target', 'Dest']),
  );

  const vdpt = (await netstat('r1', 'vdpt', '--detail')).json as Array<{
    dvipa: string;
    target: string;
    ready: boolean;
    weight: number;
    activeConn: number;
    owner: boolean;
    sent: { packets: number };
    service: { packets: number; forwarded: number };
  }>;
  // The IPv6 DVIPA's rows too, its targets by their (IPv4) cluster addresses.
  assert.deepEqual(
    vdpt.map((r) => [r.dvipa, r.target, r.ready, r.weight > 0, r.owner]),
    HA_DVIPAS.flatMap((d) => TARGETS.map((t) => [d, t.xcf, true, true, true])),
  );
  for (const d of HA_DVIPAS) {
    const rows = vdpt.filter((r) => r.dvipa === d);
    assert.ok(rows.reduce((a, r) => a + r.activeConn, 0) >= LONG, `${d}: the long-lived connections are active`);
    assert.ok(rows[0].service.packets > 0);
    // Every forwarded packet was counted for its target first, and the targets are read after the service.
    const sent = rows.reduce((a, r) => a + r.sent.packets, 0);
    assert.ok(
      sent >= rows[0].service.forwarded && rows.every((r) => r.sent.packets > 0),
      `${d}: sent to the targets ${rows.map((r) => r.sent.packets).join(' + ')}, forwarded ${rows[0].service.forwarded}`,
    );
  }
  const backup = (await netstat('r2', 'vdpt')).json as Array<{ dvipa: string; target: string; owner: boolean }>;
  assert.deepEqual(
    backup.map((r) => [r.dvipa, r.target, r.owner]),
    HA_DVIPAS.flatMap((d) => [
      [d, TARGETS[0].xcf, false],
      [d, TARGETS[1].xcf, false],
    ]),
    "r2's own list, inactive",
  );

  for (const [dvipa, client] of [
    [DVIPA, HA.client],
    [DVIPA6, HA.client6],
  ]) {
    const vcrt = (await netstat('r1', 'vcrt', '--dvipa', dvipa, '--port', String(PORT), '--limit', '5')).json as {
      entries: Array<{ client: string; target: string; origin: string }>;
      total: number;
      truncated: boolean;
    };
    assert.ok(vcrt.total >= LONG && vcrt.entries.length === 5 && vcrt.truncated, `${dvipa}: ${JSON.stringify(vcrt)}`);
    assert.ok(
      vcrt.entries.every(
        (e) =>
          e.client === client &&
          TARGETS.some((t) => t.xcf === e.target) &&
          ['syn', 'newconn', 'recovered'].includes(e.origin),
      ),
      `${dvipa}: ${JSON.stringify(vcrt.entries)}`,
    );
  }
  assert.equal(((await netstat('r1', 'vcrt', '--client', '198.18.0.99')).json as { total: number }).total, 0);
  const cfg = (await netstat('r1', 'vipadcfg')).json as { node: string; profile: string };
  assert.equal(cfg.node, 'r1');
  assert.match(cfg.profile, /VIPADEFINE MOVEABLE IMMEDIATE 255\.255\.255\.255 192\.0\.2\.10/);
  assert.match(cfg.profile, /VIPADEFINE MOVEABLE IMMEDIATE DVIPA6 2001:db8:0:2::10/);

  const unknown = await netstat('r1', 'vdpt', '--dvipa', '192.0.2.99');
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /192\.0\.2\.99: no such distributed DVIPA on this node/);
  const none = await netstat('nobody-here', 'vdpt');
  assert.equal(none.code, 3);
  assert.match(none.stderr, /no agent answers on .*nobody-here\.sock/);
  const nobody = await new Promise<{ code: number; stderr: string }>((resolve) =>
    execFile(
      'setpriv',
      [
        '--reuid=65534',
        '--regid=65534',
        '--clear-groups',
        process.execPath,
        CLI,
        'netstat',
        'vdpt',
        '--socket',
        fleet.socket('r1'),
      ],
      (err, _out, stderr) => resolve({ code: Number((err as { code?: number } | null)?.code ?? 0), stderr }),
    ),
  );
  assert.equal(nobody.code, 4, nobody.stderr);
  assert.match(nobody.stderr, /permission denied/);
  const m = await metrics('r1');
  for (const t of TARGETS)
    assert.match(
      m,
      new RegExp(
        `dvipa_target_connections_active\\{dvipa="${DVIPA}",port="${PORT}",protocol="tcp",target="${t.xcf}"\\} [1-9]`,
      ),
    );
  for (const t of TARGETS)
    for (const what of ['packets', 'bytes'])
      assert.match(
        m,
        new RegExp(
          `dvipa_target_sent_${what}_total\\{dvipa="${DVIPA}",port="${PORT}",protocol="tcp",target="${t.xcf}"\\} [1-9]`,
        ),
        `r1 counts what it sent to ${t.name}`,
      );
  assert.match(m, /dvipa_coupling_facility_up 1/);
  assert.match(m, /dvipa_service_packets_total\{dvipa="192\.0\.2\.10",port="8080",protocol="tcp"\} [1-9]/);
  assert.match(m, /dvipa_service_packets_total\{dvipa="2001:db8:0:2::10",port="8080",protocol="tcp"\} [1-9]/);
  assert.match(m, /dvipa_verdicts_total\{reason="fwd_redirect"\} [1-9]/);
  assert.match(m, /dvipa_crt_entries [1-9]/);
  // Its targets' next hops resolved at least once (when it started routing), and no event lost.
  // (A target is resolved when it is set, so a later resolve may have had nothing to change.)
  assert.match(m, /dvipa_nexthop_resolves_total [1-9]/);
  assert.match(m, /dvipa_nexthop_changes_total \d+\n/);
  assert.match(m, /dvipa_rtnetlink_overflows_total 0\n/);
  assert.match(
    await metrics('t1'),
    /dvipa_target_received_packets_total\{dvipa="192\.0\.2\.10",port="8080",protocol="tcp"\} [1-9]/,
    'a target counts what it received',
  );
  const mode = fs.statSync(fleet.socket('r1')).mode & 0o777;
  assert.equal(mode, 0o600, "the control socket is root's only");
});

test('agent restart on the owner under load: the pinned data plane forwards, the new agent adopts the DVIPA', async (t) => {
  await mark('restart');
  await fleet.stop('r1', 'SIGTERM');
  fleet.start('r1', { args: haArgs() });
  await fleet.until('the new r1 agent to adopt both DVIPAs', () =>
    HA_DVIPAS.every((dvipa) => fleet.find('r1', 'DVIPA adopted', { dvipa }) !== undefined),
  );
  await served(20);
  await closeWindow(t, 'agent restart', { lossless: true });
  assert.equal(fleet.find('r2', 'DVIPA acquired'), undefined, 'the backup did not take over');
  assert.ok(holdsBoth('r1') && holdsBoth('r2', false));
});

test('etcd unreachable: forwarding goes on, nobody takes over, the owner keeps its DVIPA', async (t) => {
  await mark('etcd-paused');
  etcd.pause();
  await fleet.until(
    'r1 to notice',
    () =>
      fleet.find(
        'r1',
        'coupling facility (etcd) unreachable: the data plane keeps forwarding, no DVIPA changes owner',
      ) !== undefined,
  );
  // The event itself: etcd stays stopped for three lease TTLs, ~4 s in all as docs/ha.md says.
  await sleep(3000);
  const resumed = Date.now();
  etcd.resume();
  await fleet.until('r1 to reach etcd again', () =>
    fleet.logs.r1.some((l) => l.msg === 'coupling facility (etcd) reachable' && (l.at as number) >= resumed),
  );
  // Nobody may take over once etcd is back either: watch the settling time (the default lease
  // TTL of 3 s + 0.5 s) and a margin; the next drill then starts from a settled cluster.
  await sleep(3500 + LOADED_MACHINE_MARGIN_MS);
  await closeWindow(t, 'etcd unreachable', { lossless: true });
  assert.equal(
    fleet.find('r2', 'DVIPA acquired'),
    undefined,
    'the backup did not take over: it could not prove r1 dead',
  );
  assert.ok(holdsBoth('r1') && holdsBoth('r2', false));
});

test("takeover: r1 dies (links down, then agent killed); the client's pings to both DVIPAs stop only briefly, r2 forwards with its own targets, no connection of either family reset", async (t) => {
  const pings = await Promise.all(
    FAMILIES.map(([, host]) => OutageProbe.start(topo, ns.client, { host, port: PORT, keepAlive: 0, newPerSec: 0 })),
  );
  let t0 = 0;
  try {
    // r2 backs both DVIPAs up with tables built as r1 distributes (router.follow): t3, which
    // only r1's VIPADISTribute names, is in them, so the takeover has none to build and a
    // connection r1 opened in its last moments hashes to the same target at r2.
    const t3 = TARGETS.find((x) => x.name === 't3')!.xcf;
    const fp = FastPath.open({ pinRoot: fleet.pinRoot('r2') });
    try {
      for (const d of HA_DVIPAS) {
        const id = fp.serviceId({ vip: d, port: PORT, protocol: 'tcp' });
        const targets = fp
          .nexthops()
          .filter((n) => n.svcId === id)
          .map((n) => n.addr);
        assert.ok(id !== undefined && targets.includes(t3), `${d}: r2's table follows r1's list: ${targets.join(' ')}`);
      }
    } finally {
      fp.close();
    }
    await Promise.all(pings.map((p) => p.mark()));
    // A node dies the way nodes die: no frame from it any more, no FIN or RST; then the process.
    execFileSync('ip', ['-n', ns.r1, '-batch', '-'], { input: 'link set ext down\nlink set core0 down\n' });
    t0 = Date.now();
    await fleet.stop('r1', 'SIGKILL');
    // The client's window starts just after the failure (`late` ms): its first new connection
    // served is the first whose SYN went out after the failure.
    await mark('takeover');
    const late = Date.now() - t0;
    const won = (dvipa: string) =>
      fleet.logs.r2.find(
        (l) => l.msg === 'DVIPA acquired' && l.how === 'takeover' && l.dvipa === dvipa && (l.at as number) >= t0,
      );
    await fleet.until('r2 to take both DVIPAs over', () => HA_DVIPAS.every((d) => won(d) !== undefined), 10000);
    const r = await closeWindow(t, 'takeover');
    for (const [i, [family, dvipa]] of FAMILIES.entries()) {
      const tookOver = (won(dvipa)!.at as number) - t0;
      const seen = await pings[i].report();
      const firstNew = r[family].fresh.firstOkAfterMs! + late;
      const allAnswering = r[family].long.allAnsweredAfterMs! + late;
      t.diagnostic(
        `takeover (${family}): DVIPA acquired by r2 ${tookOver} ms after the failure; the client's longest ping gap ${seen.ping.longestGapMs} ms (10 ms pings); first new connection served ${firstNew} ms after it; every long-lived connection answering again within ${allAnswering} ms (longest wait for a reply ${r[family].long.maxWaitMs} ms); bounds ${JSON.stringify(BOUND)}`,
      );
      assert.ok(holdsDvipa(ns.r2, dvipa), `r2 holds ${dvipa}`);
      assert.ok(
        seen.ping.longestGapMs <= BOUND.pingGapMs,
        `${family}: the client saw no answer for ${seen.ping.longestGapMs} ms: more than ${BOUND.pingGapMs}`,
      );
      assert.ok(
        tookOver <= BOUND.acquiredMs,
        `${family}: DVIPA acquired ${tookOver} ms after the failure: more than ${BOUND.acquiredMs}`,
      );
      assert.ok(
        firstNew <= BOUND.firstNewConnectionMs,
        `${family}: first new connection ${firstNew} ms after the failure: more than ${BOUND.firstNewConnectionMs}`,
      );
      assert.ok(
        allAnswering <= BOUND.allAnsweringMs,
        `${family}: long-lived connections answering ${allAnswering} ms after the failure: more than ${BOUND.allAnsweringMs}`,
      );
    }
  } finally {
    for (const p of pings) p.stop();
  }
  const m = await metrics('r2');
  assert.match(m, /dvipa_ownership_changes_total\{dvipa="192\.0\.2\.10",how="takeover"\} 1/);
  assert.match(m, /dvipa_ownership_changes_total\{dvipa="2001:db8:0:2::10",how="takeover"\} 1/);
  assert.match(m, /dvipa_ownership_change_seconds_count\{how="takeover"\} 2/);

  // r2's own VIPADISTribute, once it stops continuing r1's distribution (3 s after the
  // takeover): new connections to t1 and t2 only; t3's connections stay.
  // Seen in r2's DPT (its vdpt rows are r1's list while it inherits): the inheritance timer
  // starts when r2 owns the DVIPA, a moment after the log line the takeover time is read from.
  const t3 = TARGETS.find((x) => x.name === 't3')!.xcf;
  const ownListBy = Date.now() + 10000;
  for (;;) {
    const rows = (await netstat('r2', 'vdpt')).json as Array<{ dvipa: string; target: string }> | undefined;
    const own = (d: string) => rows?.some((r) => r.dvipa === d) && !rows.some((r) => r.dvipa === d && r.target === t3);
    if (HA_DVIPAS.every(own)) break;
    assert.ok(Date.now() < ownListBy, `r2 still distributes by r1's list: ${JSON.stringify(rows)}`);
    await sleep(100);
  }
  await mark('r2-own-list');
  await served(30);
  const after = await closeWindow(t, 'after takeover', { lossless: true });
  for (const [family] of FAMILIES) {
    assert.deepEqual(Object.keys(after[family].fresh.names).sort(), ['t1', 't2'], `${family}: r2's own list`);
    assert.ok((after[family].long.perTarget.t3 ?? 0) > 0, `${family}: t3's long-lived connections were kept`);
  }
});

test('takeback: r1 returns, waits for its tables, takes both DVIPAs back; nothing lost', async (t) => {
  execFileSync('ip', ['-n', ns.r1, '-batch', '-'], { input: 'link set core0 up\nlink set ext up\n' });
  await mark('takeback');
  fleet.start('r1', { args: haArgs() });
  await fleet.until(
    'r1 to take both DVIPAs back',
    () => HA_DVIPAS.every((d) => acquired('r1', 'takeback', d) !== undefined),
    15000,
  );
  await fleet.until('r2 to release them', () => holdsBoth('r2', false), 5000);
  const released = (await load.report()).fresh.ok;
  await served(released + 20);
  await closeWindow(t, 'takeback', { lossless: true });
  assert.ok(holdsBoth('r1'));
  for (const d of HA_DVIPAS) {
    const epochs = [
      acquired('r2', undefined, d) as { epoch: number },
      acquired('r1', 'takeback', d) as { epoch: number },
    ].map((l) => l.epoch);
    assert.ok(epochs[1] > epochs[0], `${d}: the takeback's epoch is higher (${epochs.join(' < ')})`);
  }
});

test('split brain: the owner cut off from etcd (not from its clients) loses both DVIPAs to r2 and gives the addresses up at once', async (t) => {
  await mark('owner-cut-from-etcd');
  const cut = Date.now();
  nsIp(ns.r1, 'route', 'add', 'blackhole', `${CF}/32`);
  let healed = false;
  const heal = () => {
    if (!healed) nsIp(ns.r1, 'route', 'del', 'blackhole', `${CF}/32`);
    healed = true;
  };
  try {
    const at = (node: string, msg: string, dvipa: string) =>
      fleet.logs[node].find((l) => l.msg === msg && l.dvipa === dvipa && (l.at as number) >= cut)?.at as
        number | undefined;
    const won = (d: string) => at('r2', 'DVIPA acquired', d);
    const gaveUp = (d: string) => at('r1', 'DVIPA now routed by another node: address released', d);
    await fleet.until(
      'r2 to take both DVIPAs over from r1, whose lease ran out',
      () => HA_DVIPAS.every((d) => won(d) !== undefined),
      10000,
    );
    await fleet.until('r1 to give the addresses up', () => HA_DVIPAS.every((d) => gaveUp(d) !== undefined), 10000);
    for (const d of HA_DVIPAS) {
      const overlap = gaveUp(d)! - won(d)!;
      t.diagnostic(
        `owner cut from etcd: r2 acquired ${d} ${won(d)! - cut} ms after the cut; r1 released it ${overlap} ms after that (bound ${OVERLAP_BOUND_MS} ms)`,
      );
      assert.ok(overlap <= OVERLAP_BOUND_MS, `both held ${d} for ${overlap} ms`);
      assert.deepEqual(
        [holdsDvipa(ns.r1, d), holdsDvipa(ns.r2, d)],
        [false, true],
        `${d}: exactly one owner, the one etcd names`,
      );
    }
    await served((await load.report()).fresh.ok + 20);
    // Fenced, r1 falls silent before r2 may claim: a takeover's short gap (retransmissions)
    // instead of the overlap of two owners; nothing reset, no new connection failed.
    await closeWindow(t, 'owner cut from etcd');
  } finally {
    heal();
  }
  // r1 reaches etcd again and, as the defining node, takes the DVIPAs back.
  await fleet.until('r1 to take both DVIPAs back', () => holdsBoth('r1') && holdsBoth('r2', false), 20000);
});

/** `dvipa dvipa ...` from r1's namespace, which reaches etcd on the core. */
function dvipaCli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('nsenter', [`--net=${netnsPath(ns.r1)}`, process.execPath, CLI, 'dvipa', ...args], (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

test('operator moves: move to r2 and quiesce it back to r1, connections kept; WHENIDLE waits for idleness', async (t) => {
  const etcdArgs = ['--etcd', etcd.url, '--insecure-etcd'];
  await mark('move');
  const moved = await dvipaCli('move', DVIPA, '--to', 'r2', ...etcdArgs);
  assert.equal(moved.code, 0, moved.stderr);
  assert.match(moved.stdout, /moved to r2 \(epoch \d+\)/);
  await fleet.until('r1 to release the address', () => !holds('r1') && holds('r2'), 5000);
  await served((await load.report()).fresh.ok + 20);
  await closeWindow(t, 'move', { lossless: true });
  assert.ok(holds('r2') && !holds('r1'), 'r1 does not take it back against the operator');
  assert.ok(holdsDvipa(ns.r1, DVIPA6) && !holdsDvipa(ns.r2, DVIPA6), 'the IPv6 DVIPA did not move with it');

  await mark('quiesce');
  const quiesced = await dvipaCli('quiesce', DVIPA, ...etcdArgs);
  assert.equal(quiesced.code, 0, quiesced.stderr);
  assert.match(quiesced.stdout, /quiesced on r2; now routed by r1/);
  // r1 drained what still reached it since the move, and claims nothing back until its drain ends.
  await fleet.until('r2 to release the address', () => !holds('r2') && holds('r1'), 5000 + HANDOVER_DRAIN_MS);
  const shown = JSON.parse((await dvipaCli('show', '--json', ...etcdArgs)).stdout) as {
    members: string[];
    dvipas: Array<{ dvipa: string; owner: string; quiesced: string[] }>;
  };
  assert.deepEqual(shown.members, ['r1', 'r2']);
  assert.deepEqual(
    shown.dvipas.map((d) => [d.dvipa, d.owner, d.quiesced]),
    [
      [DVIPA, 'r1', ['r2']],
      [DVIPA6, 'r1', []],
    ],
  );
  const back = await dvipaCli('reactivate', DVIPA, ...etcdArgs);
  assert.equal(back.code, 0, back.stderr);
  assert.match(back.stdout, /quiesce lifted on r2; move to r2 withdrawn; routed by r1/);
  await served((await load.report()).fresh.ok + 20);
  await closeWindow(t, 'quiesce and reactivate', { lossless: true });

  // 200 connections never end: a WHENIDLE move waits, and says so.
  const idle = await dvipaCli('move', DVIPA, '--to', 'r2', '--when-idle', '--wait', '2', ...etcdArgs);
  assert.equal(idle.code, 1);
  assert.match(idle.stderr, /still routed by r1.*WHENIDLE waits for its last connection to end/);
  assert.ok(holds('r1'));
  assert.equal((await dvipaCli('reactivate', DVIPA, ...etcdArgs)).code, 0);
});

test('dvipa dvipa: bad input is a usage error, an unknown node a clear one', async () => {
  const etcdArgs = ['--etcd', etcd.url, '--insecure-etcd'];
  for (const args of [
    ['move', '300.1.1.1', '--to', 'r2', ...etcdArgs],
    ['move', DVIPA, '--to', 'r2'],
    ['move', DVIPA, ...etcdArgs],
    ['move', DVIPA, '--to', 'r2', '--etcd', 'ftp://x'],
    ['frobnicate', ...etcdArgs],
  ]) {
    const r = await dvipaCli(...args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /^dvipa: /);
  }
  const r = await dvipaCli('move', DVIPA, '--to', 'r9', ...etcdArgs);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /r9 is not a live member of the cluster \(members: r1 r2\)/);
});

test('frozen owner (SIGSTOP): past its fence its data plane answers no ARP; r2 takes over; no ARP request answered by both', async (t) => {
  const reasons = () => {
    const fp = FastPath.open({ pinRoot: fleet.pinRoot('r1') });
    try {
      return fp.reasonCounts();
    } finally {
      fp.close();
    }
  };
  assert.ok(holds('r1'));
  const before = reasons();
  const since = Date.now();
  await mark('frozen-owner');
  const arp = await ArpWatch.start(topo, {
    ns: ns.client,
    ifname: 'c0',
    address: DVIPA,
    client: HA.client,
    intervalMs: 20,
  });
  // r1 seen answering first: on a loaded machine arping may start a second late.
  await fleet.until('r1 to answer the watch', () => Object.keys(arp.report().answeredBy).length === 1);
  const frozen = fleet.procs.r1.pid!;
  process.kill(frozen, 'SIGSTOP');
  let after: ReturnType<typeof reasons>;
  try {
    await fleet.until(
      'r2 to take over from the frozen r1',
      () => fleet.logs.r2.some((l) => l.msg === 'DVIPA acquired' && (l.at as number) >= since),
      5000,
    );
    await sleep(2000);
    after = reasons();
  } finally {
    process.kill(frozen, 'SIGCONT');
  }
  // Thawed, r1 finds its right gone: the watch goes on a moment to see it never answers again.
  await sleep(500);
  const seen = await arp.stop();
  t.diagnostic(
    `frozen owner: ARP ${JSON.stringify(seen)}; r1's fenced drops: ARP ${after.drop_fenced_arp - before.drop_fenced_arp}, packets ${after.drop_fenced - before.drop_fenced}`,
  );
  assert.equal(seen.dualAnswered, 0, 'no ARP request was answered by both routing nodes');
  assert.equal(Object.keys(seen.answeredBy).length, 2, 'r1 answered before the freeze, r2 after the takeover');
  assert.ok(seen.requests >= 100, `ARP requests sent: ${seen.requests}`);
  assert.ok(
    after.drop_fenced_arp > before.drop_fenced_arp,
    "the frozen r1's data plane dropped ARP requests for the DVIPA",
  );
  // Not asserted: the DVIPA's traffic dropped past r1's fence (a diagnostic above). The load
  // reaches the frozen r1 past its fence only between the fence's end and r2's announcement,
  // the claim delay's margin over the fence (20 ms) and the claim's round trip; since r2's
  // renewal thread enters real time before its claim leaves, that gap can hold no packet of the
  // load (0 in one CI run). testrun.test.ts proves the fenced drop of each kind of packet.
  // Thawed, r1 learns it was deposed, then takes its DVIPA back (it is the primary).
  await fleet.until(
    'r1 to take the DVIPA back',
    () =>
      fleet.logs.r1.some((l) => l.msg === 'DVIPA acquired' && (l.at as number) >= since) &&
      holdsBoth('r1') &&
      holdsBoth('r2', false),
    15000,
  );
  await closeWindow(t, 'frozen owner');
});

test('every window of the run, the idle ones between events included: no new connection of either family failed or left pending', async () => {
  for (const [family] of FAMILIES) assert.deepEqual(await loads[family]!.everyWindowProblems(), [], family);
});
