/*
 * `dvipa bench agent`: a routing agent at its worst, in this process. Its CRT is full (a
 * SYN flood's million entries), a target resynchronises (a full CONNS report every second),
 * /metrics is scraped every second, and a child process holds 10,000 junk connections on
 * the agent port. The target is a child process too, as it is another node in a cluster: its
 * encoding of the reports is not the agent's work. Measured: the agent's event-loop delay (a
 * 1 s etcd lease is renewed on that loop), RSS and CPU, the slowest scrape, and whether the
 * target stayed connected.
 */
import { fork } from 'node:child_process';
import * as http from 'node:http';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { Agent } from '../cluster/agent.js';
import { Transport } from '../cluster/transport.js';
import { MsgType, MAX_CONNS_PER_MESSAGE, type ConnRef } from '../cluster/messages.js';
import { parseProfile } from '../config/profile.js';
import { FastPath } from '../dataplane/fastpath.js';
import { CrtOrigin, crtEntry, flow } from '../dataplane/structs.js';
import { flood, formatProcessFigures, freePort, measureProcess, type ProcessFigures } from './transport.js';

const ROUTER = '127.0.0.1';
const TARGET = '127.0.0.2';
const STRANGER = '127.0.0.3';
const DVIPA = '192.0.2.10';

export interface AgentBench extends ProcessFigures {
  crtEntries: number;
  seconds: number;
  junkConnections: number;
  scrapes: number;
  scrapeMaxMs: number;
  resyncs: number;
  targetStayedConnected: boolean;
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
    fp.crt.setBatchRaw(keys, values, n);
  } finally {
    fp.close();
  }
}

const TARGET_CHILD = '--dvipa-bench-agent-target';
const KEY = Buffer.alloc(32, 1);

/** What the target child says: connected ('up'), and at the end what it sent and saw. */
type TargetReport = { up: true } | { resyncs: number; stayedConnected: boolean };

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
  while (!target.connected('r1')) await new Promise((r) => setTimeout(r, 20));
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

if (process.argv[2] === TARGET_CHILD) void runTarget(Number(process.argv[3]));

function scrape(address: string): Promise<number> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    http
      .get(`http://${address}/metrics`, (res) => {
        res.resume();
        res.once('end', () => resolve(Date.now() - t0));
      })
      .once('error', reject);
  });
}

export async function benchAgent(o: { crtEntries: number; seconds: number; junk: number }): Promise<AgentBench> {
  const pinRoot = `/sys/fs/bpf/dvipa-bench-agent-${process.pid}`;
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
  let agent: Agent | undefined;
  const target = fork(fileURLToPath(import.meta.url), [TARGET_CHILD, String(port)], { stdio: 'ignore' });
  const heard = () => new Promise<TargetReport>((resolve) => target.once('message', resolve));
  let exited = false;
  target.once('exit', () => (exited = true));
  const up = heard();
  try {
    fillCrt(pinRoot, o.crtEntries);
    agent = new Agent({ config, node: 'r1', key: KEY, pinRoot, port, metricsAddress, logger });
    await agent.start();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((r) => (timer = setTimeout(r, 10_000)));
    const connected = await Promise.race([up.then(() => true), timeout.then(() => false)]);
    clearTimeout(timer);
    if (!connected) throw new Error('the target did not connect to the agent');
    let scrapeMaxMs = 0;
    let scrapes = 0;
    target.send('go');
    const tick = setInterval(() => {
      void scrape(metricsAddress).then(
        (ms) => {
          scrapes++;
          scrapeMaxMs = Math.max(scrapeMaxMs, ms);
        },
        () => undefined,
      );
    }, 1000);
    const junk = () => flood(ROUTER, port, o.junk, o.seconds * 1000, [STRANGER, TARGET]);
    const { result: _, ...figures } = await measureProcess(junk);
    clearInterval(tick);
    const last = heard();
    target.send('stop');
    const end = await last;
    if (!('resyncs' in end)) throw new Error('the target child said nothing of its resyncs');
    return {
      crtEntries: o.crtEntries,
      seconds: o.seconds,
      junkConnections: o.junk,
      ...figures,
      scrapes,
      scrapeMaxMs,
      resyncs: end.resyncs,
      targetStayedConnected: end.stayedConnected,
    };
  } finally {
    if (!exited) {
      const gone = new Promise((r) => target.once('exit', r));
      target.kill();
      await gone;
    }
    await agent?.stop();
    FastPath.purge(pinRoot);
  }
}

export function formatAgentBench(r: AgentBench): string {
  return [
    `routing agent, CRT of ${r.crtEntries} entries, ${r.seconds} s: a full CONNS resync and a /metrics scrape every ` +
      `second, ${r.junkConnections} junk connections on its port`,
    ...formatProcessFigures(r, ' (a 1 s lease needs well under 1000)'),
    `  scrapes:           ${r.scrapes}, slowest ${r.scrapeMaxMs} ms`,
    `  target:            ${r.resyncs} full resyncs sent; ${r.targetStayedConnected ? 'stayed' : 'was not'} connected`,
  ].join('\n');
}
