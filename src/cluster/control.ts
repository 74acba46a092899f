/*
 * The agent's control socket: how `dvipa netstat` and friends reach the agent on this node.
 * A unix socket, mode 0600 in a 0700 directory (root only: it shows every connection);
 * one JSON request per line, one JSON answer per line (a request line longer than
 * MAX_REQUEST_BYTES is answered with an error and the connection closed, not buffered on). A
 * socket left by a dead agent is replaced; one a live agent answers on is not.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as readline from 'node:readline';
import type { Logger } from '../log.js';

export const DEFAULT_CONTROL_SOCKET = '/run/dvipa/agent.sock';
/** Requests are a command and a few filters: far below this. */
export const MAX_REQUEST_BYTES = 64 * 1024;

export interface ControlRequest { cmd: string; args?: Record<string, unknown> }
export type ControlAnswer = { ok: true; data: unknown } | { ok: false; error: string };

/** Counters are 64-bit in the maps; as JSON numbers they stay exact up to 2^53. */
export function toJson(v: unknown): string {
  return JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? Number(x) : x));
}

async function inUse(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(socketPath, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

export class ControlServer {
  private server?: net.Server;

  constructor(private readonly socketPath: string, private readonly handle: (req: ControlRequest) => unknown, private readonly log: Logger) {}

  async start(): Promise<void> {
    fs.mkdirSync(path.dirname(this.socketPath), { recursive: true, mode: 0o700 });
    if (fs.existsSync(this.socketPath)) {
      if (await inUse(this.socketPath)) throw new Error(`another agent answers on ${this.socketPath}: one agent per node (or give --control another path)`);
      fs.unlinkSync(this.socketPath);
    }
    this.server = net.createServer((sock) => this.serve(sock));
    // Created 0600 from the start: no window in which another user could connect.
    const mask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        this.server!.once('error', reject);
        this.server!.listen(this.socketPath, () => resolve());
      });
    } finally {
      process.umask(mask);
    }
    this.log.info({ socket: this.socketPath }, 'control socket listening');
  }

  private serve(sock: net.Socket): void {
    sock.on('error', () => undefined);
    let pending = 0;
    sock.on('data', (d: Buffer) => {
      const nl = d.lastIndexOf(10);
      pending = nl < 0 ? pending + d.length : d.length - nl - 1;
      if (pending > MAX_REQUEST_BYTES) {
        sock.end(`${toJson({ ok: false, error: `request longer than ${MAX_REQUEST_BYTES} bytes` })}\n`);
        sock.destroySoon();
        sock.pause();
      }
    });
    readline.createInterface({ input: sock }).on('error', () => undefined).on('line', (line) => {
      let answer: ControlAnswer;
      try {
        const req = JSON.parse(line) as ControlRequest;
        if (typeof req?.cmd !== 'string') throw new Error('expected {"cmd": ...}');
        answer = { ok: true, data: this.handle(req) };
      } catch (e) {
        answer = { ok: false, error: (e as Error).message };
      }
      sock.write(`${toJson(answer)}\n`);
    });
  }

  async stop(): Promise<void> {
    if (!this.server) return;
    await new Promise((resolve) => this.server!.close(resolve));
    fs.rmSync(this.socketPath, { force: true });
  }
}

/** Asks the agent once; rejects with an error whose `code` says why it could not (ENOENT, ECONNREFUSED, EACCES). */
export function askAgent(socketPath: string, req: ControlRequest, timeoutMs = 5000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(socketPath);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(Object.assign(new Error(`the agent on ${socketPath} did not answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' }));
    }, timeoutMs);
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.on('connect', () => sock.write(`${JSON.stringify(req)}\n`));
    readline.createInterface({ input: sock }).on('error', () => undefined).once('line', (line) => {
      clearTimeout(timer);
      sock.destroy();
      const a = JSON.parse(line) as ControlAnswer;
      if (a.ok) resolve(a.data);
      else reject(new Error(a.error));
    });
  });
}
