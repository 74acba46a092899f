/*
 * `dvipa bench transport`: an agent's transport under a connection flood. A child process
 * opens N connections to it, half from a stranger's address and half from a peer's, each
 * announcing a 1 MiB frame and sending 64 KiB of it (what used to be parked before any
 * authentication), and holds them. Meanwhile a real peer sends a message every 100 ms.
 * Measured in the attacked process: event-loop delay (p99, max), RSS, CPU, what was
 * refused, and the longest gap in the real peer's messages.
 */
import { fork } from 'node:child_process';
import * as net from 'node:net';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import pino from 'pino';
import { Transport } from '../cluster/transport.js';
import { HEADER, MAGIC, MAX_PAYLOAD, VERSION } from '../cluster/frame.js';
import { MsgType, type Message } from '../cluster/messages.js';

const ATTACKER = '--dvipa-bench-transport-attacker';
const PEER = '127.0.0.1';
const STRANGER = '127.0.0.2';

/** What a benchmark measures of this process while the attack runs. */
export interface ProcessFigures {
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
  rssBeforeMb: number;
  rssPeakMb: number;
  cpuPercent: number;
}

export function formatProcessFigures(r: ProcessFigures, loopNote = ''): string[] {
  const f = (x: number) => x.toFixed(1);
  return [
    `  event-loop delay:  p99 ${f(r.loopDelayP99Ms)} ms, max ${f(r.loopDelayMaxMs)} ms${loopNote}`,
    `  RSS:               ${f(r.rssBeforeMb)} MB before, ${f(r.rssPeakMb)} MB peak`,
    `  CPU:               ${f(r.cpuPercent)} % of one core`,
  ];
}

export interface TransportBench extends ProcessFigures {
  connections: number;
  /** Of those, established by the kernel at some point (the rest waited in SYN_SENT: backlog full). */
  established: number;
  holdMs: number;
  refused: Record<string, number>;
  /** The longest time between two of the real peer's messages (sent every 100 ms). */
  peerMaxGapMs: number;
  peerStayedConnected: boolean;
}

/** The child: opens the connections, writes the bait, holds them, reports how many opened. */
async function attack(port: number, n: number, holdMs: number, host: string, sources: string[]): Promise<void> {
  const bait = Buffer.alloc(HEADER + 65536);
  bait.writeUInt32BE(MAGIC, 0);
  bait.writeUInt8(VERSION, 4);
  bait.writeUInt32BE(MAX_PAYLOAD, 16);
  const sockets: net.Socket[] = [];
  let opened = 0;
  for (let i = 0; i < n; i++) {
    const s = net.connect({ host, port, localAddress: sources[i % sources.length] });
    s.on('error', () => undefined);
    s.once('connect', () => {
      opened++;
      s.write(bait);
    });
    sockets.push(s);
    // A few hundred at a time: the flood, not the attacker's own accept backlog, is measured.
    if (i % 500 === 499) await new Promise((r) => setTimeout(r, 10));
  }
  await new Promise((r) => setTimeout(r, holdMs));
  process.send!({ opened });
  for (const s of sockets) s.destroy();
}

if (process.argv[2] === ATTACKER) {
  const [port, n, holdMs, host, sources] = process.argv.slice(3);
  void attack(Number(port), Number(n), Number(holdMs), host, sources.split(',')).then(() => process.exit(0));
}

/**
 * `n` junk connections to host:port from `sources` in turn, held `holdMs`, by a child process
 * (its sockets and CPU are not the measured process's). Resolves with how many the kernel
 * established once the child let go of them.
 */
export async function flood(host: string, port: number, n: number, holdMs: number, sources: string[]): Promise<number> {
  const args = [ATTACKER, String(port), String(n), String(holdMs), host, sources.join(',')];
  const child = fork(fileURLToPath(import.meta.url), args, { stdio: 'ignore' });
  let established = 0;
  await new Promise<void>((resolve, reject) => {
    child.once('message', (m: { opened: number }) => {
      established = m.opened;
      resolve();
    });
    child.once('exit', (code) => (code ? reject(new Error(`the attacker exited with ${code}`)) : resolve()));
  });
  if (child.exitCode === null) await new Promise((r) => child.once('exit', r));
  return established;
}

/** Event-loop delay, peak RSS and CPU of this process while `work` runs. */
export async function measureProcess<T>(work: () => Promise<T>): Promise<ProcessFigures & { result: T }> {
  const rss0 = process.memoryUsage.rss();
  let peak = rss0;
  // rss() alone: memoryUsage() also totals the heap's spaces, milliseconds of the measured loop each time.
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 20);
  const h = monitorEventLoopDelay({ resolution: 5 });
  const cpu0 = process.cpuUsage();
  const t0 = Date.now();
  h.enable();
  try {
    const result = await work();
    h.disable();
    const cpu = process.cpuUsage(cpu0);
    return {
      result,
      loopDelayP99Ms: h.percentile(99) / 1e6,
      loopDelayMaxMs: h.max / 1e6,
      rssBeforeMb: rss0 / 2 ** 20,
      rssPeakMb: peak / 2 ** 20,
      cpuPercent: (100 * (cpu.user + cpu.system)) / 1000 / (Date.now() - t0),
    };
  } finally {
    clearInterval(sampler);
  }
}

/** A TCP port free on `host` now. */
export async function freePort(host: string): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, host, () => r()));
  const p = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return p;
}

export async function benchTransport(o: { connections: number; holdMs: number }): Promise<TransportBench> {
  const key = randomBytes(32);
  const logger = pino({ level: 'silent' });
  const [portA, portB] = [await freePort(PEER), await freePort(PEER)];
  const at = (node: string, port: number, peer: string, peerPort: number) =>
    new Transport({
      node,
      key,
      listen: { host: PEER, port },
      peers: [{ name: peer, host: PEER, port: peerPort }],
      logger,
    });
  const a = at('a', portA, 'b', portB);
  const b = at('b', portB, 'a', portA);
  await a.start();
  await b.start();
  try {
    const deadline = Date.now() + 5000;
    while (!b.connected('a')) {
      if (Date.now() > deadline) throw new Error('the peer did not connect');
      await new Promise((r) => setTimeout(r, 10));
    }
    let last = Date.now();
    let maxGap = 0;
    a.on('message', () => {
      const now = Date.now();
      maxGap = Math.max(maxGap, now - last);
      last = now;
    });
    let downs = 0;
    b.on('peerDown', () => downs++);
    const msg: Message = { type: MsgType.SrvStat, body: { full: false, up: [], down: [] } };
    const ticker = setInterval(() => b.send('a', msg), 100);

    const m = await measureProcess(() => {
      last = Date.now();
      maxGap = 0;
      return flood(PEER, portA, o.connections, o.holdMs, [STRANGER, PEER]);
    });
    clearInterval(ticker);
    const { result: established, ...figures } = m;
    return {
      connections: o.connections,
      established,
      holdMs: o.holdMs,
      ...figures,
      refused: { ...a.drops },
      peerMaxGapMs: maxGap,
      peerStayedConnected: downs === 0 && b.connected('a'),
    };
  } finally {
    await b.stop();
    await a.stop();
  }
}

export function formatTransportBench(r: TransportBench): string {
  return [
    `transport under ${r.connections} connections held ${r.holdMs} ms (half from a stranger, half from a peer's ` +
      'address, each with 64 KiB of a 1 MiB frame)',
    `  established:       ${r.established} by the kernel (refused below: those the agent accepted in the time)`,
    ...formatProcessFigures(r),
    `  refused:           ${
      Object.entries(r.refused)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ') || 'nothing'
    }`,
    `  the real peer:     longest gap between its 100 ms messages ${r.peerMaxGapMs} ms; ` +
      `${r.peerStayedConnected ? 'stayed connected' : 'was disconnected'}`,
  ].join('\n');
}
