/*
 * The client side of the lab and the namespace tests, run inside the client namespace. It holds TCP
 * connections open across commands, so a test can check that each stays on its target.
 * Commands arrive as JSON lines on stdin; each gets one JSON line on stdout:
 *   {"op":"open","count":N,"host":H,"port":P}   -> {"results":[{"id":1,"name":"t1"}|{"id":1,"error":"..."}]}
 *   {"op":"ask","ids":[...],"line":"ping"}       -> same shape: the server's answer to `line`
 *   {"op":"udp","host":H,"port":P,"count":N,"gapUs":G} -> {"sent":N}
 *   {"op":"close","ids":[...]}                   -> {"closed":N}
 */
import * as net from 'node:net';
import * as dgram from 'node:dgram';
import * as readline from 'node:readline';

type Result = { id: number; name?: string; error?: string };
const conns = new Map<number, { sock: net.Socket; lines: readline.Interface }>();
let nextId = 1;
const TIMEOUT_MS = 3000;

function nextLine(c: { sock: net.Socket; lines: readline.Interface }): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new Error('timeout')), TIMEOUT_MS);
    const onLine = (l: string) => done(undefined, l);
    const onErr = (e: Error) => done(e);
    const onClose = () => done(new Error('closed'));
    function done(err?: Error, line?: string) {
      clearTimeout(timer);
      c.lines.off('line', onLine);
      c.sock.off('error', onErr);
      c.sock.off('close', onClose);
      if (err) reject(err);
      else resolve(line!);
    }
    c.lines.once('line', onLine);
    c.sock.once('error', onErr);
    c.sock.once('close', onClose);
  });
}

async function ask(id: number, msg: string): Promise<Result> {
  const c = conns.get(id);
  if (!c) return { id, error: 'no such connection' };
  try {
    const reply = nextLine(c);
    c.sock.write(`${msg}\n`);
    return { id, name: await reply };
  } catch (e) {
    return { id, error: (e as Error).message };
  }
}

function open(host: string, port: number): Promise<Result> {
  const id = nextId++;
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    const timer = setTimeout(() => sock.destroy(new Error('connect timeout')), TIMEOUT_MS);
    sock.once('error', (e) => {
      clearTimeout(timer);
      resolve({ id, error: e.message });
    });
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.removeAllListeners('error');
      sock.on('error', () => undefined);
      conns.set(id, { sock, lines: readline.createInterface({ input: sock }).on('error', () => undefined) });
      resolve(ask(id, 'hello'));
    });
  });
}

async function udp(host: string, port: number, count: number, gapUs: number): Promise<{ sent: number }> {
  const s = dgram.createSocket('udp4');
  const payload = Buffer.alloc(64, 0x61);
  let sent = 0;
  for (let i = 0; i < count; i++) {
    await new Promise<void>((resolve, reject) => s.send(payload, port, host, (e) => (e ? reject(e) : resolve())));
    sent++;
    if (gapUs > 0) await new Promise((r) => setTimeout(r, gapUs / 1000));
  }
  s.close();
  return { sent };
}

interface Command {
  op: string;
  count?: number;
  host?: string;
  port?: number;
  ids?: number[];
  gapUs?: number;
  line?: string;
}

async function handle(cmd: Command): Promise<unknown> {
  switch (cmd.op) {
    case 'open': {
      const results: Result[] = [];
      for (let i = 0; i < (cmd.count ?? 1); i++) results.push(await open(cmd.host!, cmd.port!));
      return { results };
    }
    case 'ask':
      return { results: await Promise.all((cmd.ids ?? []).map((id) => ask(id, cmd.line ?? 'ping'))) };
    case 'udp':
      return udp(cmd.host!, cmd.port!, cmd.count ?? 1, cmd.gapUs ?? 0);
    case 'close': {
      for (const id of cmd.ids ?? []) conns.get(id)?.sock.destroy();
      (cmd.ids ?? []).forEach((id) => conns.delete(id));
      return { closed: (cmd.ids ?? []).length };
    }
    default:
      return { error: `unknown op ${cmd.op}` };
  }
}

// Commands run one at a time, in order.
let chain: Promise<void> = Promise.resolve();
readline
  .createInterface({ input: process.stdin })
  .on('line', (line) => {
    chain = chain.then(async () => {
      const out = await handle(JSON.parse(line) as Command).catch((e: Error) => ({ error: e.message }));
      process.stdout.write(`${JSON.stringify(out)}\n`);
    });
  })
  .on('close', () => void chain.then(() => process.exit(0)));
