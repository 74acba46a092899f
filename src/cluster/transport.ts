/*
 * Authenticated, versioned message transport between agents over TCP. Each agent dials
 * every peer and sends on that connection; what it accepts, it only reads. A connection
 * opens with a HELLO each way (cluster key); after that, frames carry the session key of
 * that connection and sequence numbers 1, 2, 3... Anything else closes the connection:
 * a bad tag (wrong key, tampering), a replayed or missing frame, an oversized or foreign
 * frame. A well-formed frame whose message is invalid is dropped alone. Every drop is
 * counted by reason and logged at most once per peer and reason per minute.
 *
 * 'peerUp' fires each time this agent's connection to a peer is (re)established: the
 * agent then sends its complete state (full SRVSTAT, full CONNS), which is how a peer
 * that went away and came back is resynchronised.
 */
import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import { randomBytes } from 'node:crypto';
import { encodeFrame, FrameReader, FrameRejected, sessionKey, type FrameError } from './frame.js';
import { decodeMessage, encodeMessage, InvalidMessage, MsgType, type Message } from './messages.js';
import type { Logger } from '../log.js';

const RECONNECT_MS = 500;
const HELLO_TIMEOUT_MS = 5000;
const LOG_INTERVAL_MS = 60_000;

export type DropReason = FrameError | 'no_hello' | 'unexpected_hello' | 'unknown_peer' | 'wrong_peer' | 'replayed' | 'out_of_order' | 'malformed' | 'hello_timeout';

export interface Peer { name: string; host: string; port: number }

export interface TransportOptions {
  node: string;
  /** The cluster key: at least 32 bytes. */
  key: Buffer;
  listen: { host: string; port: number };
  peers: Peer[];
  logger: Logger;
}

interface Session {
  socket: net.Socket;
  dialer: boolean;
  /** The peer as dialled; for accepted connections, learnt from its HELLO. */
  peer?: string;
  myNonce: Buffer;
  key?: Buffer;
  sendSeq: bigint;
  recvSeq: bigint;
}

// Typed events for an EventEmitter: the interface only declares the class's `on` overloads.
// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging
export declare interface Transport {
  on(event: 'message', listener: (peer: string, m: Message) => void): this;
  on(event: 'peerUp' | 'peerDown', listener: (peer: string) => void): this;
}

// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging
export class Transport extends EventEmitter {
  readonly drops: Record<string, number> = {};
  private readonly outbound = new Map<string, Session>();
  private readonly sockets = new Set<net.Socket>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly lastLog = new Map<string, number>();
  private server?: net.Server;
  private stopped = false;

  constructor(private readonly opts: TransportOptions) {
    super();
    if (opts.key.length < 32) throw new RangeError('the cluster key must be at least 32 bytes');
  }

  async start(): Promise<void> {
    this.server = net.createServer((s) => this.accept(s));
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(this.opts.listen.port, this.opts.listen.host, () => resolve());
    });
    for (const p of this.opts.peers) this.dial(p);
  }

  /** The port actually listened on (for listen port 0). */
  port(): number {
    return (this.server!.address() as net.AddressInfo).port;
  }

  connected(peer: string): boolean {
    return this.outbound.get(peer)?.key !== undefined;
  }

  /** False if the peer is not connected now (it gets the full state when it is). */
  send(peer: string, m: Message): boolean {
    const s = this.outbound.get(peer);
    if (!s?.key) return false;
    s.sendSeq++;
    s.socket.write(encodeFrame(s.key, { type: m.type, seq: s.sendSeq, payload: encodeMessage(m) }));
    return true;
  }

  broadcast(m: Message): void {
    for (const p of this.opts.peers) this.send(p.name, m);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private dial(p: Peer): void {
    if (this.stopped) return;
    const socket = net.connect({ host: p.host, port: p.port });
    const s = this.session(socket, true, p.name);
    this.outbound.set(p.name, s);
    socket.once('close', () => {
      const wasUp = s.key !== undefined;
      if (this.outbound.get(p.name) === s) this.outbound.delete(p.name);
      if (wasUp) this.emit('peerDown', p.name);
      const t = setTimeout(() => {
        this.timers.delete(t);
        this.dial(p);
      }, RECONNECT_MS);
      this.timers.add(t);
    });
  }

  private accept(socket: net.Socket): void {
    this.session(socket, false);
  }

  private session(socket: net.Socket, dialer: boolean, peer?: string): Session {
    const s: Session = { socket, dialer, peer, myNonce: randomBytes(16), sendSeq: 0n, recvSeq: 0n };
    this.sockets.add(socket);
    socket.setNoDelay(true);
    socket.on('error', () => undefined);
    socket.once('close', () => this.sockets.delete(socket));
    const helloTimer = setTimeout(() => this.reject(s, 'hello_timeout', 'no HELLO within 5 s'), HELLO_TIMEOUT_MS);
    socket.once('close', () => clearTimeout(helloTimer));

    const reader = new FrameReader(() => s.key ?? this.opts.key, (f) => {
      if (!s.key) {
        if (f.type !== Number(MsgType.Hello)) return this.reject(s, 'no_hello', `frame type ${f.type} before HELLO`);
        let hello;
        try {
          hello = decodeMessage(f.type, f.payload);
        } catch (e) {
          return this.reject(s, 'malformed', (e as Error).message);
        }
        if (hello.type !== MsgType.Hello) return;
        const name = hello.body.node;
        if (s.dialer && name !== s.peer) return this.reject(s, 'wrong_peer', `dialled ${s.peer}, answered by ${name}`);
        if (!s.dialer && !this.opts.peers.some((p) => p.name === name)) return this.reject(s, 'unknown_peer', `${name} is not a peer of ${this.opts.node}`);
        s.peer = name;
        const theirs = Buffer.from(hello.body.nonce, 'hex');
        s.key = s.dialer ? sessionKey(this.opts.key, s.myNonce, theirs) : sessionKey(this.opts.key, theirs, s.myNonce);
        clearTimeout(helloTimer);
        if (s.dialer) this.emit('peerUp', name);
        return;
      }
      const expected = s.recvSeq + 1n;
      if (f.seq !== expected) return this.reject(s, f.seq < expected ? 'replayed' : 'out_of_order', `sequence ${f.seq}, expected ${expected}`);
      s.recvSeq = f.seq;
      if (f.type === Number(MsgType.Hello)) return this.reject(s, 'unexpected_hello', 'second HELLO on one connection');
      try {
        this.emit('message', s.peer!, decodeMessage(f.type, f.payload));
      } catch (e) {
        if (!(e instanceof InvalidMessage)) throw e;
        this.drop(s, 'malformed', e.message);
      }
    });
    socket.once('end', () => {
      if (reader.buffered() > 0) this.drop(s, 'truncated', `connection ended inside a frame (${reader.buffered()} bytes)`);
    });
    socket.on('data', (chunk: Buffer) => {
      try {
        reader.push(chunk);
      } catch (e) {
        if (!(e instanceof FrameRejected)) throw e;
        this.reject(s, e.reason, e.message);
      }
    });
    const hello = (): void => {
      socket.write(encodeFrame(this.opts.key, { type: MsgType.Hello, seq: 0n, payload: encodeMessage({ type: MsgType.Hello, body: { node: this.opts.node, nonce: s.myNonce.toString('hex') } }) }));
    };
    if (dialer) socket.once('connect', hello);
    else hello();
    return s;
  }

  private drop(s: Session, reason: DropReason, detail: string): void {
    this.drops[reason] = (this.drops[reason] ?? 0) + 1;
    // Not yet identified: by address, so that many connections from one host log once.
    const who = s.peer ?? s.socket.remoteAddress ?? 'unknown';
    const k = `${who}|${reason}`;
    const now = Date.now();
    if ((this.lastLog.get(k) ?? -Infinity) + LOG_INTERVAL_MS <= now) {
      this.lastLog.set(k, now);
      this.opts.logger.warn({ peer: who, reason, detail, count: this.drops[reason] }, 'message dropped');
    }
  }

  /** Drops and closes: the connection cannot be trusted past this point. */
  private reject(s: Session, reason: DropReason, detail: string): void {
    this.drop(s, reason, detail);
    s.socket.destroy();
  }
}
