/*
 * A client under load for failover tests and the lab: LONG long-lived TCP connections to
 * HOST:PORT, each sending a line every INTERVAL ms and expecting the target's name back,
 * plus a stream of new connections (NEW per second), each asking once and closing. What
 * matters during a takeover is counted: connections reset or closed, the longest silence
 * of a long-lived connection, new connections that failed, and TCP retransmissions of this
 * namespace (a lost packet shows there first), those a receiver proved needless (D-SACK) and
 * those of the connections to HOST.
 *
 * Usage: load-client HOST PORT LONG INTERVAL_MS NEW_PER_S. Prints "ready" once the
 * long-lived connections are up; then answers commands on stdin, one JSON line each:
 *   mark [LABEL] -> closes the current measurement window and starts a new one (now = t0)
 *   report       -> {"long":{...},"fresh":{...},"retrans":N,"tcp":{...},"dvipa":{...}} for the current window
 *   closed       -> the last closed window: its long-lived connections and retransmissions as they
 *                   were when it closed, its new connections as they ended since (each attempt
 *                   counts in the window it started in, also when it ends later: "pending" until then)
 *   windows      -> every window's new connections: label, ok, failed, pending
 * A new connection that fails or never ends therefore shows in its own window, whenever it ends.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as readline from 'node:readline';

const [host, portArg, longArg, intervalArg, newArg] = process.argv.slice(2);
const port = Number(portArg);
const interval = Number(intervalArg);
const newPerSec = Number(newArg);

interface Long {
  sock: net.Socket;
  name?: string;
  sentAt?: number;
  lastReply: number;
  maxWait: number;
  closed?: string;
  switched: number;
  /** The first answer in the current window. */
  answeredAt?: number;
}

const longs: Long[] = [];

interface Fresh {
  ok: number;
  failed: number;
  pending: number;
  errors: Record<string, number>;
  firstOkAfterMs?: number;
  firstOkBy?: string;
  names: Record<string, number>;
}
interface Window {
  label: string;
  t0: number;
  fresh: Fresh;
  closedAs?: object;
}

const newWindow = (label: string): Window => ({
  label,
  t0: Date.now(),
  fresh: { ok: 0, failed: 0, pending: 0, errors: {}, names: {} },
});
const windows: Window[] = [newWindow('start')];
let win = windows[0];

/** One row's counters of /proc/net/snmp or /proc/net/netstat ("Tcp:", "TcpExt:"), by name. */
function counters(file: string, row: string): (name: string) => number {
  const [head, vals] = fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith(row))
    .map((l) => l.split(/\s+/));
  return (name) => Number(vals[head.indexOf(name)]);
}

/**
 * This namespace's TCP counters (both families): segments retransmitted, SYNs among them, and
 * segments a receiver reported back as duplicates (D-SACK: the original had arrived, so that
 * retransmission came of a delay, not of a loss).
 */
function tcpCounters(): { retrans: number; syn: number; dsack: number } {
  const ext = counters('/proc/net/netstat', 'TcpExt:');
  return {
    retrans: counters('/proc/net/snmp', 'Tcp:')('RetransSegs'),
    syn: ext('TCPSynRetrans'),
    dsack: ext('TCPDSACKRecvSegs'),
  };
}

/**
 * Per open connection to HOST (this client's and any other process's in the namespace, such as
 * the outage probe's): segments retransmitted and those D-SACKed, from the kernel's tcp_info
 * (`ss`), so that a window can tell which DVIPA lost what, which the namespace's counters cannot.
 */
function dvipaSockets(): Map<string, { retrans: number; dsack: number }> {
  // ss takes an IPv6 address in brackets; with a state filter it prints no state column.
  const dst = net.isIPv6(host) ? `[${host}]` : host;
  const out = spawnSync('ss', ['-H', '-O', '-t', '-n', '-i', 'state', 'established', 'dst', dst], { encoding: 'utf8' });
  const m = new Map<string, { retrans: number; dsack: number }>();
  for (const line of out.stdout?.split('\n') ?? []) {
    const [, , local, peer] = line.trim().split(/\s+/);
    if (!peer) continue;
    m.set(`${local} ${peer}`, {
      retrans: Number(/\bretrans:\d+\/(\d+)/.exec(line)?.[1] ?? 0),
      dsack: Number(/\bdsack_dups:(\d+)/.exec(line)?.[1] ?? 0),
    });
  }
  return m;
}

let tcp0 = tcpCounters();
let sockets0 = dvipaSockets();

/**
 * Retransmissions since the window began: the namespace's and (`sockets`, only as a window
 * closes: ss blocks this loop for some ms, which the waits would count) those of the
 * connections to HOST open now.
 */
function retransmissions(sockets: boolean): {
  retrans: number;
  tcp: { syn: number; dsack: number };
  dvipa?: { retrans: number; dsack: number };
} {
  const now = tcpCounters();
  const tcp = { syn: now.syn - tcp0.syn, dsack: now.dsack - tcp0.dsack };
  if (!sockets) return { retrans: now.retrans - tcp0.retrans, tcp };
  const dvipa = { retrans: 0, dsack: 0 };
  for (const [key, s] of dvipaSockets()) {
    const base = sockets0.get(key) ?? { retrans: 0, dsack: 0 };
    dvipa.retrans += s.retrans - base.retrans;
    dvipa.dsack += s.dsack - base.dsack;
  }
  return { retrans: now.retrans - tcp0.retrans, tcp, dvipa };
}

function openLong(): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port });
    const c: Long = { sock, lastReply: Date.now(), maxWait: 0, switched: 0 };
    sock.setNoDelay(true);
    sock.once('connect', () => {
      longs.push(c);
      resolve();
    });
    sock.on('error', (e: NodeJS.ErrnoException) => {
      c.closed ??= e.code ?? e.message;
      reject(e);
    });
    sock.once('close', () => (c.closed ??= 'closed'));
    readline
      .createInterface({ input: sock })
      .on('error', () => undefined)
      .on('line', (name) => {
        const now = Date.now();
        if (c.name !== undefined && c.name !== name) c.switched++;
        c.name = name;
        if (c.sentAt !== undefined) c.maxWait = Math.max(c.maxWait, now - c.sentAt);
        c.sentAt = undefined;
        c.lastReply = now;
        c.answeredAt ??= now;
      });
  });
}

function tick(): void {
  const now = Date.now();
  for (const c of longs) {
    if (c.closed) continue;
    if (c.sentAt !== undefined) {
      c.maxWait = Math.max(c.maxWait, now - c.sentAt);
      continue;
    }
    c.sentAt = now;
    c.sock.write('ping\n');
  }
}

function openFresh(): void {
  const w = win;
  const sock = net.connect({ host, port });
  let done = false;
  w.fresh.pending++;
  const finish = (err?: string, name?: string) => {
    if (done) return;
    done = true;
    sock.destroy();
    const f = w.fresh;
    f.pending--;
    if (err) {
      f.failed++;
      f.errors[err] = (f.errors[err] ?? 0) + 1;
      return;
    }
    f.ok++;
    f.names[name!] = (f.names[name!] ?? 0) + 1;
    if (f.firstOkAfterMs === undefined) {
      f.firstOkAfterMs = Date.now() - w.t0;
      f.firstOkBy = name;
    }
  };
  // Longer than SYN retransmissions over a takeover (1 s, 3 s), shorter than forever.
  const timer = setTimeout(() => finish('timeout'), 8000);
  sock.once('connect', () => sock.write('ping\n'));
  sock.on('error', (e: NodeJS.ErrnoException) => finish(e.code ?? e.message));
  sock.once('close', () => finish('closed before reply'));
  readline
    .createInterface({ input: sock })
    .on('error', () => undefined)
    .once('line', (name) => {
      clearTimeout(timer);
      finish(undefined, name);
    });
}

/** The current window's long-lived connections and retransmissions, as of now. */
function longNow(sockets = false): object {
  const now = Date.now();
  const t0 = win.t0;
  const open = longs.filter((c) => !c.closed);
  const closed: Record<string, number> = {};
  for (const c of longs) if (c.closed) closed[c.closed] = (closed[c.closed] ?? 0) + 1;
  const perTarget: Record<string, number> = {};
  for (const c of open) perTarget[c.name ?? '?'] = (perTarget[c.name ?? '?'] ?? 0) + 1;
  const answered = open.map((c) => c.answeredAt);
  return {
    windowMs: now - t0,
    long: {
      total: longs.length,
      open: open.length,
      closed,
      switched: longs.reduce((a, c) => a + c.switched, 0),
      maxWaitMs: Math.max(0, ...open.map((c) => Math.max(c.maxWait, c.sentAt !== undefined ? now - c.sentAt : 0))),
      silentSinceWindow: open.filter((c) => c.lastReply < t0).length,
      perTarget,
      // When every open connection had answered in this window (what a user waited for).
      allAnsweredAfterMs: answered.every((a) => a !== undefined)
        ? Math.max(0, ...answered.map((a) => a - t0))
        : undefined,
    },
    ...retransmissions(sockets),
  };
}

const summary = (w: Window) => ({
  label: w.label,
  ok: w.fresh.ok,
  failed: w.fresh.failed,
  pending: w.fresh.pending,
  errors: w.fresh.errors,
});

function report(): object {
  return { label: win.label, ...longNow(), fresh: win.fresh };
}

async function main(): Promise<void> {
  const total = Number(longArg);
  for (let i = 0; i < total; i += 20) await Promise.all(Array.from({ length: Math.min(20, total - i) }, openLong));
  setInterval(tick, interval);
  if (newPerSec > 0) setInterval(openFresh, 1000 / newPerSec);
  process.stdout.write('ready\n');
  readline
    .createInterface({ input: process.stdin })
    .on('line', (l) => {
      const cmd = l.trim();
      const [verb, label] = cmd.split(/\s+/, 2);
      if (verb === 'mark') {
        win.closedAs = longNow(true);
        win = newWindow(label ?? `window ${windows.length}`);
        windows.push(win);
        tcp0 = tcpCounters();
        sockets0 = dvipaSockets();
        for (const c of longs) {
          c.maxWait = 0;
          c.answeredAt = undefined;
        }
        process.stdout.write('{}\n');
      } else if (verb === 'report') process.stdout.write(`${JSON.stringify(report())}\n`);
      else if (verb === 'closed') {
        const w = windows[windows.length - 2];
        const answer = w ? { label: w.label, ...w.closedAs, fresh: w.fresh } : { error: 'no closed window' };
        process.stdout.write(`${JSON.stringify(answer)}\n`);
      } else if (verb === 'windows') process.stdout.write(`${JSON.stringify(windows.map(summary))}\n`);
      else process.stdout.write(`${JSON.stringify({ error: `unknown command ${cmd}` })}\n`);
    })
    .on('close', () => process.exit(0));
}

main().catch((e: Error) => {
  process.stdout.write(`error: ${e.message}\n`);
  process.exit(1);
});
