/*
 * `dvipa bench agent`: a routing agent at its worst, in this process. Its CRT is full (a
 * SYN flood's million entries), a target resynchronises (a full CONNS report every second),
 * /metrics is scraped every second, and a child process holds 10,000 junk connections on
 * the agent port. Measured: the agent's event-loop delay (a 1 s etcd lease is renewed on
 * that loop), RSS and CPU, the slowest scrape, and whether the target stayed connected.
 */
import * as http from 'node:http';
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
  const key = Buffer.alloc(32, 1);
  let agent: Agent | undefined;
  const peers = [{ name: 'r1', host: ROUTER, port }];
  const target = new Transport({ node: 't1', key, listen: { host: TARGET, port }, peers, logger });
  try {
    fillCrt(pinRoot, o.crtEntries);
    agent = new Agent({ config, node: 'r1', key, pinRoot, port, metricsAddress, logger });
    await agent.start();
    await target.start();
    const deadline = Date.now() + 10_000;
    while (!target.connected('r1')) {
      if (Date.now() > deadline) throw new Error('the target did not connect to the agent');
      await new Promise((r) => setTimeout(r, 20));
    }
    let downs = 0;
    target.on('peerDown', () => downs++);
    // The target's connections: a full report, as after a reconnection, every second.
    const added: ConnRef[] = Array.from({ length: MAX_CONNS_PER_MESSAGE }, (_, i) => ({
      saddr: `10.200.${i >> 8}.${i & 255}`,
      daddr: DVIPA,
      sport: 40000 + (i % 20000),
      dport: 80,
      protocol: 'tcp',
    }));
    let resyncs = 0;
    let scrapeMaxMs = 0;
    let scrapes = 0;
    const tick = setInterval(() => {
      if (target.send('r1', { type: MsgType.Conns, body: { full: true, added, removed: [] } })) resyncs++;
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
    return {
      crtEntries: o.crtEntries,
      seconds: o.seconds,
      junkConnections: o.junk,
      ...figures,
      scrapes,
      scrapeMaxMs,
      resyncs,
      targetStayedConnected: downs === 0 && target.connected('r1'),
    };
  } finally {
    await target.stop();
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
