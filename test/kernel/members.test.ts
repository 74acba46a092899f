/*
 * Membership like XCF, for real: two routing nodes and two targets, each `dvipa agent` with
 * a per-node file holding its own NODE line (and the routing nodes' VIPADYNAMIC block) plus
 * CLUSTER ETCD and CLUSTER IDENTITIES, no PEER anywhere. They find each other through their
 * etcd member records; a real client's connections are spread over both targets; a third
 * target started later is found and gets connections. Then an attacker with a stolen etcd
 * credential writes forged member records (another node's name at its own address, a key
 * it cannot sign for, a real identity claiming a target's address, a name without a key,
 * junk) and 10,000 records of names nobody holds a key for: each is refused and counted, no
 * agent crashes, and the cluster keeps serving.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { randomBytes } from 'node:crypto';
import { execFile, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Topology } from '../../src/lab/netns.js';
import { buildHaTopology, HA, holdsDvipa } from '../../src/lab/ha-topology.js';
import { Client, startNameServer, type ConnResult } from '../../src/lab/procs.js';
import { startEtcd, type EtcdServer } from '../../src/lab/etcd.js';
import { newIdentity } from '../../src/cluster/handshake.js';
import type { ControlReplies } from '../../src/cluster/control-protocol.js';
import { requireRoot, uniquePrefix } from '../helpers/env.js';
import { Agents } from '../helpers/agents.js';

const DVIPA = HA.dvipa;
const PORT = 8080;
const HERE = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.join(HERE, '..', '..', 'src', 'cli', 'main.js');
const FORGER = path.join(HERE, '..', 'helpers', 'forge-members.js');
const JUNK = 10_000;
const [R1, R2] = HA.routers;
const TARGETS = HA.targets;

let topo: Topology;
let dir: string;
let etcd: EtcdServer;
let fleet: Agents;
let client: Client;
const ns: Record<string, string> = {};
const servers: ChildProcess[] = [];

/** Each node's own file: no PEER; the routing nodes name the targets by address only. */
function ownFile(node: string): string {
  const file = path.join(dir, `${node}.cfg`);
  const r = HA.routers.find((x) => x.name === node);
  const t = TARGETS.find((x) => x.name === node);
  // A 5 s lease: on a machine this loaded (a load average of 30 on 2 cores), 1 s leases of
  // five agents expire now and then, and members would come and go for that reason alone.
  const head = [`CLUSTER ETCD ${etcd.url} LEASETTL 5`, `CLUSTER IDENTITIES ${path.join(dir, 'nodes')}`];
  const dist = `  VIPADISTRIBUTE ${DVIPA} PORT ${PORT} DESTIP ${TARGETS.map((x) => x.xcf).join(' ')}`;
  const body = r
    ? [
        `NODE ${node} XCF ${r.xcf} EXTERNAL ext INTERNAL core0`,
        'VIPADYNAMIC',
        node === 'r1' ? `  VIPADEFINE 255.255.255.255 ${DVIPA}` : `  VIPABACKUP 100 ${DVIPA}`,
        dist,
        'ENDVIPADYNAMIC',
      ]
    : [`NODE ${node} XCF ${t!.xcf} INTERNAL core0`];
  fs.writeFileSync(file, [...head, ...body, ''].join('\n'));
  return file;
}

function startNode(node: string): void {
  fleet.start(node, { config: ownFile(node), args: ['--insecure-etcd'] });
}

function run(args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(process.execPath, [CLI, ...args], (err, stdout, stderr) =>
      err ? reject(new Error(`${args.join(' ')}: ${stderr}`)) : resolve(stdout),
    ),
  );
}

async function members(node: string): Promise<ControlReplies['members']> {
  return JSON.parse(
    await run(['netstat', 'members', '--json', '--socket', fleet.socket(node)]),
  ) as ControlReplies['members'];
}

function names(rs: ConnResult[]): string[] {
  for (const r of rs) assert.equal(r.error, undefined, `connection ${r.id}: ${r.error}`);
  return rs.map((r) => r.name!);
}

const readyIn = (router: string, target: string) =>
  fleet.logs[router]?.some((l) => l.msg === 'DPT changed' && l.target === target && l.ready === true) ?? false;

function rssMb(node: string): number {
  // The agent is the child of nsenter.
  const pid = fleet.procs[node].pid!;
  const child = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/)[0] || String(pid);
  const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${child}/status`, 'utf8'));
  return Number(m![1]) / 1024;
}

before(async () => {
  requireRoot();
  const prefix = uniquePrefix('mb');
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvipa-members-'));
  fs.writeFileSync(path.join(dir, 'cluster.key'), randomBytes(32), { mode: 0o600 });
  // Every node's key pair; `evil` is a real identity in the wrong hands (used by the forger).
  for (const n of ['r1', 'r2', 't1', 't2', 't3', 'evil']) newIdentity(path.join(dir, 'nodes'), n);
  topo = new Topology(prefix);
  fleet = new Agents(topo, ns, dir, prefix);
  Object.assign(ns, buildHaTopology(topo));
  for (const t of TARGETS) servers.push(await startNameServer(topo, ns[t.name], t.name, PORT, 9999));
  etcd = await startEtcd({ place: { topo, ns: ns.cf, host: HA.cf } });
  for (const n of ['t1', 't2', 'r1', 'r2']) startNode(n);
  client = Client.start(topo, ns.client);
});

after(async () => {
  topo?.teardown();
  await etcd?.stop();
  fleet?.purge();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('per-node files with their NODE line and etcd only: the nodes find each other, connections reach both targets', async () => {
  const cfg = await run(['config', 'check', ownFile('r1')]);
  assert.match(
    cfg,
    /ok \(1 node, 1 DVIPA defined; 198\.18\.20\.11, 198\.18\.20\.12, 198\.18\.20\.13: from the members' etcd records/,
  );
  await fleet.until('r1 to own the DVIPA', () => fleet.find('r1', 'DVIPA acquired') !== undefined && holdsDvipa(ns.r1));
  await fleet.until("r1's and r2's DPTs to have t1 and t2 ready", () =>
    ['r1', 'r2'].every((r) => readyIn(r, 't1') && readyIn(r, 't2')),
  );
  const got = names(await client.open(DVIPA, PORT, 20));
  assert.deepEqual([...new Set(got)].sort(), ['t1', 't2'], `both targets serve (${got.join(' ')})`);
  const seen = await members('r1');
  assert.deepEqual(
    seen.members.map((m) => [m.node, m.xcf, m.state]),
    [
      ['r2', [R2.xcf], 'Up'],
      ['t1', [TARGETS[0].xcf], 'Up'],
      ['t2', [TARGETS[1].xcf], 'Up'],
    ],
  );
  assert.deepEqual(seen.members[0].dvipas, [DVIPA], "r2's record names what it backs up");
  // A target knows the routing nodes only from their records.
  assert.deepEqual(
    (await members('t1')).members.map((m) => m.node),
    ['r1', 'r2', 't2'],
  );
});

test('a target that starts later is found through its member record and gets connections', async () => {
  startNode('t3');
  await fleet.until('r1 to have t3 ready', () => readyIn('r1', 't3'));
  const got = names(await client.open(DVIPA, PORT, 30));
  assert.ok(got.includes('t3'), `t3 serves (${got.join(' ')})`);
});

test('forged member records and 10,000 junk ones: each refused and counted, the cluster keeps serving', async (t) => {
  const rssBefore = rssMb('r1');
  const forger = topo.spawn(ns.cf, process.execPath, [FORGER, etcd.url, path.join(dir, 'nodes'), String(JUNK)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const said: Array<Record<string, unknown>> = [];
  readline
    .createInterface({ input: forger.stdout! })
    .on('line', (l) => said.push(JSON.parse(l) as Record<string, unknown>));
  try {
    // Setup, not a claim: 100 transactions of 100 puts took up to a minute on a machine with a load average of 40.
    await fleet.until('the forger to write its records', () => said.some((x) => x.ready !== undefined), 180000);
    // r2's own record replayed is r2's to write back, not a member's to count: five forgeries at r2.
    const total = JUNK + 5;
    const refused = (node: string, reason: string) =>
      fleet.logs[node].some((l) => l.msg === 'member record refused' && l.reason === reason);
    for (const reason of ['wrong_key', 'bad_signature', 'address_taken', 'unknown_identity', 'malformed'])
      await fleet.until(`r2 to refuse a forged record (${reason})`, () => refused('r2', reason));
    // Every agent has seen every record: the counts say so.
    const counted = async (node: string) => {
      const r = (await members(node)).refused;
      return Object.values(r).reduce((a, n) => a + n, 0);
    };
    const start = Date.now();
    while ((await counted('r2')) < total) {
      assert.ok(Date.now() - start < 120000, `r2 counted ${await counted('r2')} of ${total} refusals`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const r2 = await members('r2');
    t.diagnostic(`r2's refusals: ${JSON.stringify(r2.refused)}`);
    assert.ok(r2.refused.unknown_identity >= JUNK + 1, JSON.stringify(r2.refused));
    for (const reason of ['wrong_key', 'bad_signature', 'address_taken', 'malformed'])
      assert.ok(r2.refused[reason] >= 1, `${reason}: ${JSON.stringify(r2.refused)}`);
    await fleet.until("t1 to refuse r2's record replayed under another lease", () => refused('t1', 'lease_mismatch'));
    // Nobody was redirected or impersonated: r1 and t2 are where they are, and `evil` is no member.
    await fleet.until("r1's, r2's and t1's records to be theirs again (each agent writes its own back)", () =>
      ['r1', 'r2', 't1'].every(
        (n) =>
          fleet.find(n, "this node's member record was changed by another writer of etcd: written again") !== undefined,
      ),
    );
    let view = await members('t2');
    const until = Date.now() + 15000;
    while (!['r1', 'r2', 't1', 't3'].every((n) => view.members.some((m) => m.node === n && m.state === 'Up'))) {
      assert.ok(Date.now() < until, `t2's members: ${JSON.stringify(view.members)}`);
      await new Promise((r) => setTimeout(r, 200));
      view = await members('t2');
    }
    assert.deepEqual(
      view.members.map((m) => [m.node, m.xcf]),
      [
        ['r1', [R1.xcf]],
        ['r2', [R2.xcf]],
        ['t1', [TARGETS[0].xcf]],
        ['t3', [TARGETS[2].xcf]],
      ],
    );
    // Still serving (every connection answered), and t1, dropped while its record was the
    // forger's, back among the targets within 30 s. Batches until every target has answered:
    // ten connections miss one of three targets 1.7 % of the time (a CI run met it).
    const served = new Set<string>();
    const back = Date.now() + 30000;
    while (!['t1', 't2', 't3'].every((n) => served.has(n))) {
      if (Date.now() > back) {
        const about = (n: string) =>
          fleet.logs[n]
            .filter((l) => JSON.stringify(l).includes('t1'))
            .slice(-8)
            .map((l) => JSON.stringify(l));
        assert.fail(
          `not every target served within 30 s (${[...served].join(' ')}); r1's members: ${JSON.stringify((await members('r1')).members)}\n` +
            `r1: ${about('r1').join('\n')}\nt1: ${fleet.logs.t1
              .slice(-12)
              .map((l) => JSON.stringify(l))
              .join('\n')}`,
        );
      }
      for (const n of names(await client.open(DVIPA, PORT, 10))) served.add(n);
    }
    for (const n of ['r1', 'r2', 't1', 't2', 't3'])
      assert.equal(fleet.procs[n].exitCode, null, `${n} is running: ${JSON.stringify(fleet.logs[n].slice(-3))}`);
    t.diagnostic(`r1's RSS: ${rssBefore.toFixed(0)} MB before the ${JUNK} records, ${rssMb('r1').toFixed(0)} MB after`);
  } finally {
    forger.stdin!.end();
    await new Promise((r) => (forger.exitCode !== null ? r(undefined) : forger.once('exit', r)));
  }
  // The forger's lease revoked: its records gone, the members as before.
  const until = Date.now() + 30000;
  let left = await members('r1');
  while (left.members.map((m) => m.node).join() !== 'r2,t1,t2,t3') {
    assert.ok(Date.now() < until, `r1's members: ${JSON.stringify(left.members)}`);
    await new Promise((r) => setTimeout(r, 500));
    left = await members('r1');
  }
});

test('a clean stop of every agent exits 0', async () => {
  for (const n of ['r1', 'r2', 't1', 't2', 't3']) {
    await fleet.stop(n);
    assert.equal(fleet.procs[n].exitCode, 0, `${n}: ${JSON.stringify(fleet.logs[n].slice(-3))}`);
  }
});
