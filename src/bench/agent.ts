/*
 * `dvipa bench agent`: a routing agent at its worst, in this process. Its CRT is full (a
 * SYN flood's million entries), a target resynchronises (a full CONNS report every second),
 * /metrics is scraped every second, and a child process holds 10,000 junk connections on
 * the agent port. The target is a child process too, as it is another node in a cluster: its
 * encoding of the reports is not the agent's work. The agent owns its DVIPA through a real
 * etcd (a 1 s lease by default, renewals every DEFAULTS.renewMs) before the load starts.
 * Measured: the agent's event-loop delay, RSS and CPU, the slowest scrape, whether the target
 * stayed connected, and whether the agent kept its lease and its DVIPA: as etcd showed it to a
 * watcher in another process (the owner key's record and lease, every renewal, the member
 * key), and as the agent counts it (its metrics and the DVIPAs it owns). The anchor: the
 * event-loop delay of an idle process beside it, at the same priority, in the same window,
 * which is what the machine's own load costs any loop.
 */
import { fork, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { Agent } from '../cluster/agent.js';
import { Transport } from '../cluster/transport.js';
import { MsgType, MAX_CONNS_PER_MESSAGE, type ConnRef } from '../cluster/messages.js';
import { etcdClient } from '../cluster/coupling.js';
import { parseProfile } from '../config/profile.js';
import { DEFAULTS } from '../config/settings.js';
import { FastPath } from '../dataplane/fastpath.js';
import { CrtOrigin, crtEntry, flow } from '../dataplane/structs.js';
import { startEtcd, type EtcdServer } from '../lab/etcd.js';
import { LAB_NICE } from '../lab/procs.js';
import { flood, formatProcessFigures, freePort, measureProcess, type ProcessFigures } from './transport.js';

const ROUTER = '127.0.0.1';
const TARGET = '127.0.0.2';
const STRANGER = '127.0.0.3';
const DVIPA = '192.0.2.10';
/** The coupling facility's keys (coupling.ts, default prefix): the DVIPA's owner and r1's member record. */
const OWNER_KEY = `/dvipa/owner/${DVIPA}`;
const MEMBER_KEY = '/dvipa/members/r1';

/** The DVIPA's owner key as etcd holds it: the owner's record and the lease the key is bound to. */
export interface OwnerKey {
  node: string;
  epoch: number;
  lease: string;
}

/** What a watcher of etcd in another process saw during the load. */
export interface OwnershipSeen {
  /** The owner key as the load began and as it ended (undefined: no owner). */
  before?: OwnerKey;
  after?: OwnerKey;
  /** Writes of the owner key naming another node or epoch, and its deletions. */
  ownershipChanges: number;
  /** Writes of the owner key under another lease than the one before it. */
  leaseChanges: number;
  /** Deletions of r1's member record: its lease expired. */
  memberDeletions: number;
  /** The owner's renewals etcd committed, and the longest time between two as the watcher saw them. */
  renewals: number;
  renewalMaxGapMs: number;
}

export interface AgentBench extends ProcessFigures {
  crtEntries: number;
  seconds: number;
  junkConnections: number;
  /** Whether the target resynchronised every second, and /metrics was scraped every second. */
  resync: boolean;
  scrape: boolean;
  /** The nice value of the agent (and of everything the benchmark starts but etcd, which runs in real time). */
  nice: number;
  /** The anchor: an idle process's event-loop delay beside the agent, at its priority. */
  idleLoopDelayP99Ms: number;
  idleLoopDelayMaxMs: number;
  scrapes: number;
  scrapeMaxMs: number;
  resyncs: number;
  targetStayedConnected: boolean;
  leaseTtlSec: number;
  renewMs: number;
  /** Through etcd, to a watcher in another process. */
  etcd: OwnershipSeen;
  /** As the agent counts it: dvipa_coupling_leases_lost_total and dvipa_ownership_changes_total during the load. */
  agentLeasesLost: number;
  agentOwnershipChanges: number;
  /** Scrapes during the load that said etcd did not answer (dvipa_coupling_facility_up 0). */
  couplingDownScrapes: number;
  /** The agent owned the DVIPA under the same epoch when the load began and when it ended. */
  ownedThroughout: boolean;
  /** Nothing of the lease was lost: the same lease before and after, no member record deleted, none counted lost. */
  leaseKept: boolean;
  /** What etcd logged as a warning or an error until the load ended (slow requests, ...), at most 10 lines. */
  etcdWarnings: string[];
}

function fillCrt(pinRoot: string, n: number): void {
  const fp = FastPath.open({ pinRoot, crtMaxEntries: n, logger: pino({ level: 'silent' }) });
  try {
    const keys = Buffer.alloc(n * flow.size);
    const values = Buffer.alloc(n * crtEntry.size);
    for (let i = 0; i < n; i++) {
      const saddr = `10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`;
      flow.encode({ saddr, daddr: DVIPA, sport: 1024 + (i % 60000), dport: 80, proto: 6 }, keys, i * flow.size);
      crtEntry.encode(
        { target: TARGET, svcId: 0, origin: CrtOrigin.First, targetIdx: 0, createdNs: 0n },
        values,
        i * crtEntry.size,
      );
    }
    fp.crtEst.setBatchRaw(keys, values, n);
  } finally {
    fp.close();
  }
}

const TARGET_CHILD = '--dvipa-bench-agent-target';
const OBSERVER_CHILD = '--dvipa-bench-agent-observer';
const IDLE_CHILD = '--dvipa-bench-agent-idle';
const KEY = Buffer.alloc(32, 1);

/**
 * What the target child says: each second it is not yet connected, what its transport refused
 * (why it is not); then connected ('up'); at the end what it sent and saw.
 */
type TargetReport = { dialling: Record<string, number> } | { up: true } | { resyncs: number; stayedConnected: boolean };
/** What the watcher of etcd says: watching (and the owner key then), and at the end what it saw. */
type ObserverReport = { watching: true; before?: OwnerKey } | OwnershipSeen;
/** What the idle child says: measuring, and at the end its loop delay. */
type IdleReport = { measuring: true } | ProcessFigures;

/**
 * The child: target t1, connected to r1 at `port`; from the parent's 'go' until its 'stop',
 * a full report of its connections every second, as after a reconnection.
 */
async function runTarget(port: number): Promise<void> {
  const logger = pino({ level: 'silent' });
  const peers = [{ name: 'r1', host: ROUTER, port }];
  const target = new Transport({ node: 't1', key: KEY, listen: { host: TARGET, port }, peers, logger });
  await target.start();
  let downs = 0;
  target.on('peerDown', () => downs++);
  for (let i = 1; !target.connected('r1'); i++) {
    await new Promise((r) => setTimeout(r, 20));
    if (i % 50 === 0) process.send!({ dialling: target.drops } satisfies TargetReport);
  }
  const added: ConnRef[] = Array.from({ length: MAX_CONNS_PER_MESSAGE }, (_, i) => ({
    saddr: `10.200.${i >> 8}.${i & 255}`,
    daddr: DVIPA,
    sport: 40000 + (i % 20000),
    dport: 80,
    protocol: 'tcp',
  }));
  let resyncs = 0;
  let tick: NodeJS.Timeout | undefined;
  process.on('message', (m: string) => {
    if (m === 'go') {
      tick = setInterval(() => {
        if (target.send('r1', { type: MsgType.Conns, body: { full: true, added, removed: [] } })) resyncs++;
      }, 1000);
      return;
    }
    clearInterval(tick);
    const report: TargetReport = { resyncs, stayedConnected: downs === 0 && target.connected('r1') };
    process.send!(report, () => void target.stop().then(() => process.exit(0)));
  });
  process.send!({ up: true } satisfies TargetReport);
}

function ownerKey(value: string, lease: string): OwnerKey | undefined {
  try {
    const { node, epoch } = JSON.parse(value) as { node?: unknown; epoch?: unknown };
    if (typeof node === 'string' && typeof epoch === 'number') return { node, epoch, lease };
  } catch {
    // not an owner record: counted as a change of owner
  }
  return undefined;
}

/**
 * The child: watches the coupling facility at `url`, from the owner key as it is now until
 * the parent's 'stop', in a process of its own (its work is not the agent's). Every write of
 * the owner key is a renewal if it names the same owner, epoch and lease as the one before.
 */
async function runObserver(url: string): Promise<void> {
  const client = etcdClient({ endpoints: [url] });
  const read = async () => {
    const r = await client.get(OWNER_KEY).exec();
    const kv = r.kvs[0];
    return { owner: kv && ownerKey(kv.value.toString(), kv.lease), revision: Number(r.header.revision) };
  };
  const start = await read();
  const seen: OwnershipSeen = {
    before: start.owner,
    ownershipChanges: 0,
    leaseChanges: 0,
    memberDeletions: 0,
    renewals: 0,
    renewalMaxGapMs: 0,
  };
  let last = start.owner;
  const watcher = await client
    .watch()
    .prefix('/dvipa/')
    .startRevision(String(start.revision + 1))
    .create();
  let lastAt = performance.now();
  watcher.on('put', (kv) => {
    if (kv.key.toString() !== OWNER_KEY) return;
    const now = performance.now();
    seen.renewalMaxGapMs = Math.max(seen.renewalMaxGapMs, now - lastAt);
    lastAt = now;
    const o = ownerKey(kv.value.toString(), kv.lease);
    if (!o || o.node !== last?.node || o.epoch !== last.epoch) seen.ownershipChanges++;
    else if (o.lease !== last.lease) seen.leaseChanges++;
    else seen.renewals++;
    last = o;
  });
  watcher.on('delete', (kv) => {
    const key = kv.key.toString();
    if (key === MEMBER_KEY) seen.memberDeletions++;
    if (key !== OWNER_KEY) return;
    seen.ownershipChanges++;
    last = undefined;
  });
  process.once('message', () => {
    void read().then(async ({ owner }) => {
      await watcher.cancel();
      client.close();
      process.send!({ ...seen, renewalMaxGapMs: Math.round(seen.renewalMaxGapMs), after: owner }, () =>
        process.exit(0),
      );
    });
  });
  process.send!({ watching: true, before: start.owner } satisfies ObserverReport);
}

if (process.argv[2] === TARGET_CHILD) void runTarget(Number(process.argv[3]));
if (process.argv[2] === OBSERVER_CHILD) void runObserver(process.argv[3]);
// The anchor: nothing but its own loop, measured from now until the parent's 'stop'.
if (process.argv[2] === IDLE_CHILD) {
  const stopped = new Promise((r) => process.once('message', r));
  void measureProcess(() => stopped).then(({ result: _, ...figures }) =>
    process.send!(figures satisfies IdleReport, () => process.exit(0)),
  );
  process.send!({ measuring: true } satisfies IdleReport);
}

/** A child process of this file in one of its roles, and what it says, in order. */
class Child<Report> {
  private readonly proc: ChildProcess;
  private readonly said: Report[] = [];
  private waiting?: () => void;

  constructor(role: string, args: string[]) {
    this.proc = fork(fileURLToPath(import.meta.url), [role, ...args], { stdio: 'ignore' });
    this.proc.on('message', (m: Report) => {
      this.said.push(m);
      this.waiting?.();
    });
    this.proc.once('exit', () => this.waiting?.());
  }

  get exited(): boolean {
    return this.proc.exitCode !== null || this.proc.signalCode !== null;
  }

  /** Its next message; fails if it exits or says nothing for `ms`. */
  async next(what: string, ms: number): Promise<Report> {
    const deadline = Date.now() + ms;
    while (!this.said.length) {
      if (this.exited) throw new Error(`${what}: the child exited`);
      if (Date.now() > deadline) throw new Error(`${what}: nothing within ${ms / 1000} s`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, deadline - Date.now());
        this.waiting = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiting = undefined;
    }
    return this.said.shift()!;
  }

  send(m: string): void {
    this.proc.send(m);
  }

  async kill(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise((r) => this.proc.once('exit', r));
    this.proc.kill();
    await gone;
  }
}

/** One scrape of /metrics: how long it took and the text. */
function scrape(address: string): Promise<{ ms: number; text: string }> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    http
      .get(`http://${address}/metrics`, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.once('end', () => resolve({ ms: Date.now() - t0, text }));
      })
      .once('error', reject);
  });
}

/** The sum of a metric's samples in a scrape; undefined if it has none. */
function metric(text: string, name: string): number | undefined {
  let sum: number | undefined;
  for (const line of text.split('\n'))
    if (line.startsWith(name) && (line[name.length] === ' ' || line[name.length] === '{'))
      sum = (sum ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1));
  return sum;
}

/** The agent's own count of what it lost or took, from a scrape. */
function agentCounts(text: string): { leasesLost: number; ownershipChanges: number } {
  const leasesLost = metric(text, 'dvipa_coupling_leases_lost_total');
  if (leasesLost === undefined) throw new Error('the agent reports no dvipa_coupling_leases_lost_total: no etcd?');
  return { leasesLost, ownershipChanges: metric(text, 'dvipa_ownership_changes_total') ?? 0 };
}

/** etcd's warnings and errors in its log (zap JSON), but the one it always gives for a cluster without auth. */
function etcdWarnings(log: string): string[] {
  return fs
    .readFileSync(log, 'utf8')
    .split('\n')
    .filter((l) => /"level":"(warn|error|fatal|panic)"/.test(l) && !l.includes('simple token is not cryptographically'))
    .slice(0, 10)
    .map((l) => l.slice(0, 300));
}

/** How long the target child may take to connect to the agent (a few hundred ms when well). */
const CONNECT_MS = 20_000;

/**
 * The target child connected to the agent; if it is not within CONNECT_MS, why not: what its
 * transport and the agent's refused.
 */
async function connected(target: Child<TargetReport>, metricsAddress: string): Promise<void> {
  const deadline = Date.now() + CONNECT_MS;
  let dialling: Record<string, number> = {};
  try {
    for (;;) {
      const m = await target.next('the target', Math.max(0, deadline - Date.now()));
      if (!('dialling' in m)) return;
      dialling = m.dialling;
    }
  } catch (e) {
    const agent = await scrape(metricsAddress).then(
      ({ text }) => text.split('\n').filter((l) => l.startsWith('dvipa_message_rejects_total')),
      (err: Error) => [`no scrape: ${err.message}`],
    );
    throw new Error(
      `the target did not connect to the agent within ${CONNECT_MS / 1000} s (${target.exited ? 'it exited' : 'still dialling'}); ` +
        `its transport refused ${JSON.stringify(dialling)}; the agent's refusals: ${agent.join(', ') || 'none'}`,
      { cause: e },
    );
  }
}

/** The agent's epoch once it owns the DVIPA. */
async function owning(agent: Agent, ms: number): Promise<number> {
  const deadline = Date.now() + ms;
  for (;;) {
    const epoch = agent.owned().get(DVIPA)?.epoch;
    if (epoch !== undefined) return epoch;
    if (Date.now() > deadline) throw new Error(`the agent did not own ${DVIPA} through etcd within ${ms / 1000} s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function benchAgent(o: {
  crtEntries: number;
  seconds: number;
  junk: number;
  leaseTtlSec: number;
  resync: boolean;
  scrape: boolean;
  /** Where etcd's log goes (its warnings: slow requests, leases revoked), to find why a lease was lost. */
  etcdLog?: string;
}): Promise<AgentBench> {
  // The agent at the priority its unit gives it (deploy/dvipa-agent.service), as in the lab;
  // the children started from here inherit it (the idle anchor must).
  os.setPriority(LAB_NICE);
  const pinRoot = `/sys/fs/bpf/dvipa-bench-agent-${process.pid}`;
  // Read for its warnings once the load ends (a lost lease's first clue); kept only where asked.
  const etcdLog = o.etcdLog ?? path.join(os.tmpdir(), `dvipa-bench-agent-etcd-${process.pid}.log`);
  const logger = pino({ level: 'silent' });
  const port = await freePort(ROUTER);
  const metricsAddress = `${ROUTER}:${await freePort(ROUTER)}`;
  const config = parseProfile(
    [
      `NODE r1 XCF ${ROUTER}`,
      `VIPADYNAMIC VIPADEFINE 255.255.255.255 ${DVIPA} VIPADISTRIBUTE ${DVIPA} PORT 80 DESTIP ${TARGET} ENDVIPADYNAMIC`,
      `NODE t1 XCF ${TARGET}`,
    ].join('\n'),
  );
  let etcd: EtcdServer | undefined;
  let agent: Agent | undefined;
  let observer: Child<ObserverReport> | undefined;
  let idle: Child<IdleReport> | undefined;
  const target = new Child<TargetReport>(TARGET_CHILD, [String(port)]);
  try {
    etcd = await startEtcd({ log: etcdLog });
    fillCrt(pinRoot, o.crtEntries);
    agent = new Agent({
      config,
      node: 'r1',
      key: KEY,
      pinRoot,
      port,
      metricsAddress,
      logger,
      // The benchmark's own etcd, plain http on loopback, as the lab's (which passes --insecure-etcd).
      ha: { etcd: { endpoints: [etcd.url], ttlSec: o.leaseTtlSec } },
    });
    await agent.start();
    await connected(target, metricsAddress);
    const epoch = await owning(agent, 30_000);
    observer = new Child<ObserverReport>(OBSERVER_CHILD, [etcd.url]);
    const watching = await observer.next('the watcher of etcd', 10_000);
    if (!('watching' in watching) || watching.before?.node !== 'r1' || watching.before.epoch !== epoch)
      throw new Error(`etcd does not name r1 the owner of ${DVIPA} under epoch ${epoch}: ${JSON.stringify(watching)}`);
    const base = agentCounts((await scrape(metricsAddress)).text);
    idle = new Child<IdleReport>(IDLE_CHILD, []);
    await idle.next('the idle anchor', 10_000);

    let scrapeMaxMs = 0;
    let scrapes = 0;
    let couplingDownScrapes = 0;
    if (o.resync) target.send('go');
    const tick = setInterval(() => {
      if (!o.scrape) return;
      void scrape(metricsAddress).then(
        ({ ms, text }) => {
          scrapes++;
          scrapeMaxMs = Math.max(scrapeMaxMs, ms);
          if (metric(text, 'dvipa_coupling_facility_up') !== 1) couplingDownScrapes++;
        },
        () => undefined,
      );
    }, 1000);
    const junk = () => flood(ROUTER, port, o.junk, o.seconds * 1000, [STRANGER, TARGET]);
    const { result: _, ...figures } = await measureProcess(junk);
    clearInterval(tick);
    idle.send('stop');
    const anchor = await idle.next("the idle anchor's loop delay", 10_000);
    if (!('loopDelayMaxMs' in anchor)) throw new Error('the idle anchor said nothing of its loop');
    const epochAfter = agent.owned().get(DVIPA)?.epoch;
    const counts = agentCounts((await scrape(metricsAddress)).text);
    const warnings = etcdWarnings(etcdLog);
    observer.send('stop');
    const seen = await observer.next('what the watcher of etcd saw', 10_000);
    target.send('stop');
    const end = await target.next('what the target sent', 10_000);
    if (!('resyncs' in end)) throw new Error('the target child said nothing of its resyncs');
    if (!('renewals' in seen)) throw new Error('the watcher of etcd said nothing of what it saw');
    const agentLeasesLost = counts.leasesLost - base.leasesLost;
    return {
      crtEntries: o.crtEntries,
      seconds: o.seconds,
      junkConnections: o.junk,
      resync: o.resync,
      scrape: o.scrape,
      nice: LAB_NICE,
      ...figures,
      idleLoopDelayP99Ms: anchor.loopDelayP99Ms,
      idleLoopDelayMaxMs: anchor.loopDelayMaxMs,
      scrapes,
      scrapeMaxMs,
      resyncs: end.resyncs,
      targetStayedConnected: end.stayedConnected,
      leaseTtlSec: o.leaseTtlSec,
      renewMs: DEFAULTS.renewMs,
      etcd: seen,
      agentLeasesLost,
      agentOwnershipChanges: counts.ownershipChanges - base.ownershipChanges,
      couplingDownScrapes,
      ownedThroughout: epochAfter === epoch,
      leaseKept:
        seen.before !== undefined &&
        seen.after?.lease === seen.before.lease &&
        seen.leaseChanges === 0 &&
        seen.memberDeletions === 0 &&
        agentLeasesLost === 0,
      etcdWarnings: warnings,
    };
  } finally {
    await target.kill();
    await observer?.kill();
    await idle?.kill();
    await agent?.stop();
    await etcd?.stop();
    if (o.etcdLog === undefined) fs.rmSync(etcdLog, { force: true });
    FastPath.purge(pinRoot);
  }
}

export function formatAgentBench(r: AgentBench): string {
  const e = r.etcd;
  const owner = (k?: OwnerKey) => (k ? `${k.node}, epoch ${k.epoch}, lease ${k.lease}` : 'none');
  const every = [r.resync && 'a full CONNS resync', r.scrape && 'a /metrics scrape'].filter(Boolean).join(' and ');
  return [
    `routing agent at nice ${r.nice}, CRT of ${r.crtEntries} entries, ${r.seconds} s: ${every || 'nothing'} every ` +
      `second, ${r.junkConnections} junk connections on its port; owner of its DVIPA through etcd ` +
      `(lease ${r.leaseTtlSec} s, renewals every ${r.renewMs} ms)`,
    ...formatProcessFigures(r, ` (a ${r.leaseTtlSec} s lease needs well under ${r.leaseTtlSec * 1000})`),
    `  idle anchor:       loop delay p99 ${r.idleLoopDelayP99Ms.toFixed(1)} ms, max ${r.idleLoopDelayMaxMs.toFixed(1)} ms ` +
      '(an idle process beside it, same priority: the machine alone)',
    `  scrapes:           ${r.scrapes}, slowest ${r.scrapeMaxMs} ms; etcd down in ${r.couplingDownScrapes}`,
    `  target:            ${r.resyncs} full resyncs sent; ${r.targetStayedConnected ? 'stayed' : 'was not'} connected`,
    `  lease:             ${r.leaseKept ? 'kept' : 'LOST'}; owner key before: ${owner(e.before)}; after: ${owner(e.after)}`,
    `  etcd (watched):    ${e.ownershipChanges} ownership changes, ${e.leaseChanges} lease changes, ` +
      `${e.memberDeletions} member record deletions; ${e.renewals} renewals, longest gap ${e.renewalMaxGapMs} ms`,
    `  agent (metrics):   ${r.agentLeasesLost} leases lost, ${r.agentOwnershipChanges} ownership changes; ` +
      `${r.ownedThroughout ? 'owned the DVIPA throughout' : 'did NOT own the DVIPA throughout'}`,
    `  etcd's log:        ${r.etcdWarnings.length ? r.etcdWarnings.join('\n    ') : 'no warning'}`,
  ].join('\n');
}
