/*
 * What a client sees of a failover, run inside the client namespace: a ping every 10 ms to
 * the DVIPA (answered by whichever routing node holds it), HTTP requests over keep-alive
 * connections back to back (answered by the targets through the routing node), and a
 * stream of new connections (one HTTP request each). Measured in windows like load-client:
 * stdin "mark" starts one, "report" prints one JSON line. "ready" once every keep-alive
 * connection has had an answer.
 * Usage: outage-probe HOST PORT KEEPALIVE NEWPERSEC.
 */
import { spawn } from 'node:child_process';
import * as http from 'node:http';
import * as readline from 'node:readline';

const [host, portArg, keepArg, newArg] = process.argv.slice(2);
const port = Number(portArg);
/** A request slower than this counts as failed (a TCP retransmission backoff beyond 3 s). */
const REQUEST_TIMEOUT_MS = 5000;
const PING_INTERVAL_S = '0.01';

interface Window {
  t0: number;
  /** Wall-clock time (ms) of the last ping reply, and the longest time without one. */
  lastPing: number;
  pingGapMs: number;
  pings: number;
  requests: number;
  failed: number;
  maxWaitMs: number;
  resets: number;
  errors: Record<string, number>;
  fresh: { ok: number; failed: number };
}

const open = (t0: number): Window => ({
  t0,
  lastPing: t0,
  pingGapMs: 0,
  pings: 0,
  requests: 0,
  failed: 0,
  maxWaitMs: 0,
  resets: 0,
  errors: {},
  fresh: { ok: 0, failed: 0 },
});
let w = open(Date.now());
/** Requests in flight on the keep-alive connections: when each started. */
const inFlight = new Set<{ started: number }>();

// -D prints the wall-clock time of each reply: gaps are measured on reply times, so a
// probe process that stalls a moment does not invent an outage.
const ping = spawn('ping', ['-n', '-D', '-i', PING_INTERVAL_S, host], { stdio: ['ignore', 'pipe', 'ignore'] });
readline.createInterface({ input: ping.stdout }).on('line', (l) => {
  const m = /^\[(\d+\.\d+)\] \d+ bytes from/.exec(l);
  if (!m) return;
  const at = Number(m[1]) * 1000;
  if (at < w.t0) return;
  w.pingGapMs = Math.max(w.pingGapMs, at - w.lastPing);
  w.lastPing = at;
  w.pings++;
});

function failure(win: Window, code: string): void {
  win.failed++;
  win.errors[code] = (win.errors[code] ?? 0) + 1;
  if (code === 'ECONNRESET') win.resets++;
}

/** One GET; resolves when answered or failed, counting into the window it started in. */
function get(agent: http.Agent | false): Promise<boolean> {
  const win = w;
  const r = { started: Date.now() };
  if (agent) inFlight.add(r);
  return new Promise((resolve) => {
    const done = (ok: boolean, code?: string) => {
      inFlight.delete(r);
      if (code) failure(win, code);
      else win.requests++;
      if (agent) win.maxWaitMs = Math.max(win.maxWaitMs, Date.now() - r.started);
      resolve(ok);
    };
    const req = http.get({ host, port, path: '/', agent, timeout: REQUEST_TIMEOUT_MS }, (res) => {
      res.resume();
      res.on('end', () =>
        done(res.statusCode === 200, res.statusCode === 200 ? undefined : `status ${res.statusCode}`),
      );
      res.on('error', (e: NodeJS.ErrnoException) => done(false, e.code ?? e.message));
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
    req.on('error', (e: NodeJS.ErrnoException) => done(false, e.code ?? e.message));
  });
}

async function keepAliveLoop(agent: http.Agent, answered: () => void): Promise<void> {
  let first = true;
  for (;;) {
    const ok = await get(agent);
    if (ok && first) {
      first = false;
      answered();
    }
    if (!ok) await new Promise((r) => setTimeout(r, 10));
  }
}

function freshConnection(): void {
  const win = w;
  void get(false).then((ok) => (ok ? win.fresh.ok++ : win.fresh.failed++));
}

function report(): object {
  const now = Date.now();
  const waiting = Math.max(0, ...[...inFlight].map((r) => now - r.started));
  return {
    windowMs: now - w.t0,
    ping: {
      replies: w.pings,
      longestGapMs: Math.round(Math.max(w.pingGapMs, now - w.lastPing)),
      sinceLastMs: Math.round(now - w.lastPing),
    },
    http: {
      keepAlive: Number(keepArg),
      requests: w.requests,
      failed: w.failed,
      resets: w.resets,
      longestWaitMs: Math.max(w.maxWaitMs, waiting),
      errors: w.errors,
    },
    fresh: w.fresh,
  };
}

async function main(): Promise<void> {
  const n = Number(keepArg);
  const agent = new http.Agent({ keepAlive: true, maxSockets: n });
  let answered = 0;
  if (n > 0) {
    await new Promise<void>((resolve) => {
      for (let i = 0; i < n; i++) void keepAliveLoop(agent, () => ++answered === n && resolve());
    });
  }
  if (Number(newArg) > 0) setInterval(freshConnection, 1000 / Number(newArg));
  process.stdout.write('ready\n');
  readline
    .createInterface({ input: process.stdin })
    .on('line', (l) => {
      const cmd = l.trim();
      if (cmd === 'mark') {
        w = open(Date.now());
        process.stdout.write('{}\n');
      } else if (cmd === 'report') process.stdout.write(`${JSON.stringify(report())}\n`);
      else process.stdout.write(`${JSON.stringify({ error: `unknown command ${cmd}` })}\n`);
    })
    .on('close', () => {
      ping.kill();
      process.exit(0);
    });
}

main().catch((e: Error) => {
  process.stdout.write(`error: ${e.message}\n`);
  process.exit(1);
});
