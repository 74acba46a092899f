/*
 * The agent's control socket: how `dvipa netstat` and friends reach the agent on this node.
 * A unix socket, mode 0600 in a 0700 directory (root only: it shows every connection),
 * speaking control-protocol.ts (a request line longer than MAX_REQUEST_BYTES is answered with
 * an error and the connection closed, not buffered on). A socket left by a dead agent is
 * replaced; one a live agent answers on is not.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as readline from 'node:readline';
import type { Logger } from '../log.js';
import {
  CONTROL_PROTOCOL_VERSION as v,
  dispatch,
  MAX_REQUEST_BYTES,
  parseControlRequest,
  type ControlAnswer,
  type ControlArgs,
  type ControlCommand,
  type ControlHandlers,
  type ControlReplies,
} from './control-protocol.js';

/** Counters are 64-bit in the maps; as JSON numbers they stay exact up to 2^53. */
export function toJson(v: unknown): string {
  return JSON.stringify(v, (_, x: unknown) => (typeof x === 'bigint' ? Number(x) : x));
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

  constructor(
    private readonly socketPath: string,
    private readonly handlers: ControlHandlers,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    fs.mkdirSync(path.dirname(this.socketPath), { recursive: true, mode: 0o700 });
    if (fs.existsSync(this.socketPath)) {
      if (await inUse(this.socketPath))
        throw new Error(
          `another agent answers on ${this.socketPath}: one agent per node (or give --control another path)`,
        );
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
        sock.end(`${toJson({ v, ok: false, error: `request longer than ${MAX_REQUEST_BYTES} bytes` })}\n`);
        sock.destroySoon();
        sock.pause();
      }
    });
    // Some answers (the CRT) are read off the event loop and awaited: chained, so that
    // requests on one connection are still answered in order.
    let answered = Promise.resolve();
    readline
      .createInterface({ input: sock })
      .on('error', () => undefined)
      .on('line', (line) => {
        answered = answered.then(async () => {
          let answer: ControlAnswer;
          try {
            answer = { v, ok: true, data: await dispatch(this.handlers, parseControlRequest(line)) };
          } catch (e) {
            answer = { v, ok: false, error: (e as Error).message };
          }
          if (!sock.destroyed) sock.write(`${toJson(answer)}\n`);
        });
      });
  }

  async stop(): Promise<void> {
    if (!this.server) return;
    await new Promise((resolve) => this.server!.close(resolve));
    fs.rmSync(this.socketPath, { force: true });
  }
}

/** Asks the agent once; rejects with an error whose `code` says why it could not (ENOENT, ECONNREFUSED, EACCES). */
export function askAgent<C extends ControlCommand>(
  socketPath: string,
  req: { cmd: C; args?: ControlArgs[C] },
  timeoutMs = 5000,
): Promise<ControlReplies[C]> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(socketPath);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(
        Object.assign(new Error(`the agent on ${socketPath} did not answer within ${timeoutMs} ms`), {
          code: 'ETIMEDOUT',
        }),
      );
    }, timeoutMs);
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.on('connect', () => sock.write(`${JSON.stringify({ v, ...req })}\n`));
    readline
      .createInterface({ input: sock })
      .on('error', () => undefined)
      .once('line', (line) => {
        clearTimeout(timer);
        sock.destroy();
        const a = JSON.parse(line) as ControlAnswer<ControlReplies[C]>;
        if (a.ok) resolve(a.data);
        else reject(new Error(a.error));
      });
  });
}
