/* The lab's processes inside its namespaces (servers, client driver), started and stopped by pid through a Topology. */
import * as path from 'node:path';
import * as readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import type { Topology } from './netns.js';

const here = path.dirname(fileURLToPath(import.meta.url));

/**
 * The nice value of the lab's agents (as deploy/dvipa-agent.service runs them) and of the
 * client's load and outage probe (so that their own waits for the CPU of a busy machine do
 * not count as outage).
 */
export const LAB_NICE = -10;

/**
 * The CRT size of the lab's agents (--crt-entries), far above what a lab holds. Every lab node
 * shares one kernel, and making a CRT holds a CPU in the kernel for the whole of it
 * (bpf_lru_populate, not preemptible on a PREEMPT_NONE kernel): about 0.5 s for the default
 * 1,048,576 entries here, long enough that the other nodes' etcd round trips waiting behind it
 * let an owner's fence lapse (docs/ha.md). 65,536 take about 30 ms.
 */
export const LAB_CRT_ENTRIES = 65536;

function firstLine(child: ChildProcess, what: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: no output within ${timeoutMs} ms`)), timeoutMs);
    readline.createInterface({ input: child.stdout! }).once('line', (l) => {
      clearTimeout(timer);
      resolve(l);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited with ${code}`));
    });
  });
}

/** One of the lab's servers (SCRIPT.js NAME ...ARGS), once it says it is ready. */
async function startServer(
  topo: Topology,
  ns: string,
  script: string,
  name: string,
  args: string[],
): Promise<ChildProcess> {
  const child = topo.spawn(ns, process.execPath, [path.join(here, `${script}.js`), name, ...args]);
  const line = await firstLine(child, `${script} ${name}`);
  if (line !== 'ready') throw new Error(`${script} ${name}: ${line}`);
  return child;
}

export function startNameServer(
  topo: Topology,
  ns: string,
  name: string,
  tcpPort: number,
  udpPort: number,
): Promise<ChildProcess> {
  return startServer(topo, ns, 'name-server', name, [String(tcpPort), String(udpPort)]);
}

/** http-server.ts: answers every GET with `name`, keep-alive. */
export function startHttpServer(topo: Topology, ns: string, name: string, port: number): Promise<ChildProcess> {
  return startServer(topo, ns, 'http-server', name, [String(port)]);
}

export interface ConnResult {
  id: number;
  name?: string;
  error?: string;
}

/** A lab process that answers each line on its stdin with one JSON line. */
class LineDriver {
  private readonly replies: string[] = [];
  private waiter?: (l: string) => void;

  constructor(protected readonly child: ChildProcess) {
    readline.createInterface({ input: child.stdout! }).on('line', (l) => {
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = undefined;
        w(l);
      } else this.replies.push(l);
    });
  }

  protected async request<T>(line: string, timeoutMs = 60000): Promise<T> {
    this.child.stdin!.write(`${line}\n`);
    const reply =
      this.replies.shift() ??
      (await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${this.constructor.name}: no reply to ${line}`)), timeoutMs);
        this.waiter = (l) => {
          clearTimeout(timer);
          resolve(l);
        };
      }));
    return JSON.parse(reply) as T;
  }

  /** Ends the process (its connections close with it). */
  stop(): void {
    this.child.stdin!.end();
  }
}

/** The client driver: one request at a time, one JSON reply per request. */
export class Client extends LineDriver {
  static start(topo: Topology, ns: string): Client {
    return new Client(topo.spawn(ns, process.execPath, [path.join(here, 'client-driver.js')]));
  }

  async call<T>(cmd: object, timeoutMs = 60000): Promise<T> {
    return this.request<T>(JSON.stringify(cmd), timeoutMs);
  }

  async open(host: string, port: number, count: number): Promise<ConnResult[]> {
    return (await this.call<{ results: ConnResult[] }>({ op: 'open', host, port, count })).results;
  }

  async ask(ids: number[], line = 'ping'): Promise<ConnResult[]> {
    return (await this.call<{ results: ConnResult[] }>({ op: 'ask', ids, line })).results;
  }

  async udp(host: string, port: number, count: number, gapUs: number): Promise<number> {
    return (await this.call<{ sent: number }>({ op: 'udp', host, port, count, gapUs })).sent;
  }

  async close(ids: number[]): Promise<void> {
    await this.call({ op: 'close', ids });
  }
}

export interface FreshCounts {
  ok: number;
  failed: number;
  pending: number;
  errors: Record<string, number>;
}

export interface LoadReport {
  label: string;
  windowMs: number;
  long: {
    total: number;
    open: number;
    closed: Record<string, number>;
    switched: number;
    maxWaitMs: number;
    silentSinceWindow: number;
    perTarget: Record<string, number>;
    allAnsweredAfterMs?: number;
  };
  fresh: FreshCounts & { firstOkAfterMs?: number; firstOkBy?: string; names: Record<string, number> };
  /** Segments the client's namespace retransmitted (both families, closed connections too). */
  retrans: number;
  /** Of those, SYNs; and segments a receiver D-SACKed: it had the original, nothing was lost. */
  tcp: { syn: number; dsack: number };
  /** Retransmitted and D-SACKed segments of the connections to this window's DVIPA open at its end (a closed window's report). */
  dvipa?: { retrans: number; dsack: number };
}

/**
 * Retransmitted segments no receiver proved needless: lost ones (a SYN is never D-SACKed, so a
 * retransmitted one counts). A retransmission whose original arrived late is a delay, which the
 * waits measure; it is no loss.
 */
export function lostSegments(r: LoadReport): number {
  return r.retrans - r.tcp.dsack;
}

/** What a window of the load client saw go wrong; empty if nothing. */
export function loadProblems(r: LoadReport, o: { long: number; lossless?: boolean }): string[] {
  const p: string[] = [];
  const closed = Object.entries(r.long.closed);
  const why = closed.map(([reason, n]) => `${n} ${reason}`).join(', ');
  if (closed.length) p.push(`long-lived connections reset or closed: ${why}`);
  if (r.long.open !== o.long) p.push(`${r.long.open} of ${o.long} long-lived connections open`);
  if (r.long.switched) p.push(`${r.long.switched} answers from another target`);
  if (r.long.silentSinceWindow) p.push(`${r.long.silentSinceWindow} long-lived connections silent`);
  p.push(...freshProblems(r.label, r.fresh));
  if (o.lossless) p.push(...lossProblems(r));
  return p;
}

/**
 * A window that must lose nothing: no SYN retransmitted (a new connection waited a second),
 * and no segment lost on this DVIPA's connections open at the window's end (the long-lived
 * ones and the keep-alive ones: a family's and the same at both ends of the window). Segments
 * of connections that ended within the window are counted for both families together and by
 * no connection: shown, not judged (one CI run lost 4 there at a quiesce, with no drop at
 * either routing node and every such connection answered). Without a closed window's
 * per-connection figures, the namespace's stand in.
 */
function lossProblems(r: LoadReport): string[] {
  const p: string[] = [];
  if (r.tcp.syn > 0) p.push(`${r.tcp.syn} SYNs retransmitted`);
  const lost = r.dvipa ? r.dvipa.retrans - r.dvipa.dsack : lostSegments(r) - r.tcp.syn;
  if (lost > 0)
    p.push(`${lost} TCP segments lost on this DVIPA's open connections (${lostSegments(r)} in the namespace)`);
  return p;
}

function freshProblems(label: string, f: FreshCounts): string[] {
  const p: string[] = [];
  if (f.failed) p.push(`${label}: ${f.failed} new connections failed (${JSON.stringify(f.errors)})`);
  if (f.pending) p.push(`${label}: ${f.pending} new connections still pending`);
  return p;
}

/** load-client.ts: long-lived connections and a stream of new ones, measured in windows. */
export class LoadClient extends LineDriver {
  static async start(
    topo: Topology,
    ns: string,
    o: { host: string; port: number; long: number; intervalMs: number; newPerSec: number },
  ): Promise<LoadClient> {
    const child = topo.spawn(ns, 'nice', [
      '-n',
      String(LAB_NICE),
      process.execPath,
      path.join(here, 'load-client.js'),
      o.host,
      String(o.port),
      String(o.long),
      String(o.intervalMs),
      String(o.newPerSec),
    ]);
    const line = await firstLine(child, 'load-client', 30000);
    if (line !== 'ready') throw new Error(`load-client: ${line}`);
    return new LoadClient(child);
  }

  /** Closes the current measurement window and starts one named `label` now. */
  async mark(label = 'window'): Promise<void> {
    await this.request(`mark ${label.replace(/\s+/g, '-')}`);
  }

  /** The current window as of now (its new connections still starting and ending). */
  async report(): Promise<LoadReport> {
    return this.request<LoadReport>('report');
  }

  /**
   * Closes the current window (a new one starts) and waits until every new connection begun
   * in it has ended (the client gives each 8 s) or `ms` passed: its final report.
   */
  async close(ms = 10000): Promise<LoadReport> {
    await this.mark('after');
    const end = Date.now() + ms;
    for (;;) {
      const r = await this.request<LoadReport>('closed');
      if (r.fresh.pending === 0 || Date.now() > end) return r;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** Problems of every window so far (new connections failed or never ended), after waiting for those in flight. */
  async everyWindowProblems(ms = 10000): Promise<string[]> {
    await this.mark('last');
    const end = Date.now() + ms;
    for (;;) {
      const all = await this.request<Array<FreshCounts & { label: string }>>('windows');
      const done = all.slice(0, -1);
      if (done.every((w) => w.pending === 0) || Date.now() > end) return done.flatMap((w) => freshProblems(w.label, w));
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** Reports until every long-lived connection has been answered since the window began, or `ms` passed; the last report. */
  async allAnswering(ms: number): Promise<LoadReport> {
    const end = Date.now() + ms;
    for (;;) {
      const r = await this.report();
      if (r.long.silentSinceWindow === 0 || Date.now() > end) return r;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

export interface OutageReport {
  windowMs: number;
  ping: { replies: number; longestGapMs: number; sinceLastMs: number };
  http: {
    keepAlive: number;
    requests: number;
    failed: number;
    resets: number;
    longestWaitMs: number;
    errors: Record<string, number>;
  };
  fresh: { ok: number; failed: number };
}

/** outage-probe.ts: 10 ms pings, keep-alive HTTP requests and new connections, measured in windows. */
export class OutageProbe extends LineDriver {
  static async start(
    topo: Topology,
    ns: string,
    o: { host: string; port: number; keepAlive: number; newPerSec: number },
  ): Promise<OutageProbe> {
    const child = topo.spawn(ns, 'nice', [
      '-n',
      String(LAB_NICE),
      process.execPath,
      path.join(here, 'outage-probe.js'),
      o.host,
      String(o.port),
      String(o.keepAlive),
      String(o.newPerSec),
    ]);
    const line = await firstLine(child, 'outage-probe', 30000);
    if (line !== 'ready') throw new Error(`outage-probe: ${line}`);
    return new OutageProbe(child);
  }

  async mark(): Promise<void> {
    await this.request('mark');
  }

  async report(): Promise<OutageReport> {
    return this.request<OutageReport>('report');
  }
}
