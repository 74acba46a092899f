/*
 * Authenticated, versioned message transport between agents over TCP. Each agent dials
 * every peer and sends on that connection; what it accepts, it only reads. A connection
 * opens with a handshake (handshake.ts: HELLO and AUTH each way, frames keyed with the
 * cluster key); after that, frames carry the session key of that connection and rising
 * sequence numbers. Anything else closes the connection: a bad tag (wrong key, tampering),
 * a bad proof, a replayed or missing frame, an oversized or foreign frame. A well-formed
 * frame whose message is invalid is dropped alone. Every drop is counted by reason and
 * logged at most once per peer and reason per minute.
 *
 * Cluster addresses of either family: a node with an IPv4 and an IPv6 one listens on both
 * and dials a peer at its address of a family it has itself (IPv4 first), from its own.
 *
 * A stranger gets little: connections are taken only from the peers' cluster addresses,
 * and until authenticated they are capped per source and in total, must finish within a
 * deadline and may send only small frames. After it, a listener closes a connection idle
 * for too long (dialers ping), and a peer that reads too slowly is cut off rather than
 * queued for without bound. Errors of the process (EMFILE, a handler's failure) are
 * logged refusals, never an exception that stops the agent.
 *
 * 'peerUp' fires each time this agent's connection to a peer is (re)established: the
 * agent then sends its complete state (full SRVSTAT, full CONNS), which is how a peer
 * that went away and came back is resynchronised.
 *
 * Each HELLO names its agent's run (random, new at each start). A peer whose host died
 * sends no FIN: this agent's connection to it stays open, what it writes there waits in
 * TCP's retransmission backoff, and when the peer is back that connection ends only at the
 * next retransmission (seen in the lab: 24-26 s after the peer's new agent started, its
 * takeback waiting for the targets' SRVSTAT meanwhile). When a run other than the one this agent's connection
 * reached dials in, that connection is to a run that is over: it is closed and dialled anew.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import {
  encodeFrame,
  FrameReader,
  FrameRejected,
  MAX_HANDSHAKE_PAYLOAD,
  MAX_PAYLOAD,
  type FrameError,
} from './frame.js';
import { decodeMessage, encodeMessage, InvalidMessage, MsgType, type Hello, type Message } from './messages.js';
import { Handshake, type Identities } from './handshake.js';
import { Refusals } from './refusals.js';
import type { Logger } from '../log.js';
import { canonicalIpv6, ipFamily } from '../net/addr.js';

const RECONNECT_MS = 500;

export interface TransportLimits {
  /** A connection not authenticated within this is closed. */
  handshakeMs: number;
  /** An inbound connection silent this long is closed; dialers ping every third of it. */
  idleMs: number;
  /** Connections still in their handshake, per source address and in total. */
  perSource: number;
  pending: number;
  /** Bytes waiting to be sent to one peer; beyond, the connection is closed (the peer resynchronises when back). */
  sendQueueBytes: number;
}

export const DEFAULT_LIMITS: TransportLimits = {
  handshakeMs: 3000,
  idleMs: 30_000,
  perSource: 4,
  pending: 64,
  sendQueueBytes: 64 << 20,
};

export type DropReason =
  | FrameError
  | 'no_hello'
  | 'unexpected_hello'
  | 'unknown_peer'
  | 'wrong_peer'
  | 'replayed'
  | 'out_of_order'
  | 'malformed'
  | 'hello_timeout'
  | 'unknown_source'
  | 'too_many'
  | 'bad_proof'
  | 'idle'
  | 'send_queue_full'
  | 'handler_error';

export interface Peer {
  name: string;
  host: string;
  port: number;
  /** Its IPv6 cluster address beside an IPv4 `host`. */
  host6?: string;
}

export interface TransportOptions {
  node: string;
  /** The cluster key: at least 32 bytes. */
  key: Buffer;
  /** `host6`: this node's IPv6 cluster address beside an IPv4 `host`, listened on too. */
  listen: { host: string; port: number; host6?: string };
  peers: Peer[];
  /** Per-node keys: with them a node can speak only as itself. */
  identities?: Identities;
  limits?: Partial<TransportLimits>;
  logger: Logger;
}

interface Session {
  socket: net.Socket;
  dialer: boolean;
  /** The remote address, IPv4-mapped form unwrapped. */
  source: string;
  /** The peer as dialled; for accepted connections, named by its HELLO. */
  peer?: string;
  /** The peer's run, from its HELLO. */
  run?: string;
  /** A dialer's from the start; a listener's once a valid HELLO came (key generation is not free). */
  hs?: Handshake;
  transcript?: Buffer;
  theirEph?: string;
  /** Set once both proofs are checked: the session key. */
  key?: Buffer;
  sendSeq: bigint;
  recvSeq: bigint;
  lastHeard: number;
  lastSent: number;
  /** For an accepted connection: it no longer counts as a handshake in progress. */
  authenticated?: () => void;
}

// Typed events for an EventEmitter: the interface only declares the class's `on` overloads.
// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging
export declare interface Transport {
  on(event: 'message', listener: (peer: string, m: Message) => void): this;
  on(event: 'peerUp' | 'peerDown', listener: (peer: string) => void): this;
}

/** The remote address in its one spelling: IPv4-mapped form unwrapped, IPv6 in RFC 5952 form. */
const unmapped = (a: string | undefined) => {
  const v4 = a?.replace(/^::ffff:(?=\d+\.)/i, '');
  return v4 === undefined || ipFamily(v4) !== 6 ? v4 : canonicalIpv6(v4);
};

const hostsOf = (x: { host: string; host6?: string }) => (x.host6 === undefined ? [x.host] : [x.host, x.host6]);

// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging
export class Transport extends EventEmitter {
  readonly limits: TransportLimits;
  private readonly outbound = new Map<string, Session>();
  private readonly inbound = new Map<string, Session>();
  private readonly pending = new Map<string, number>();
  private pendingTotal = 0;
  private readonly sockets = new Set<net.Socket>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly refusals: Refusals;
  /** By name: the configured ones, and members that joined through etcd (addPeer). */
  private readonly peers = new Map<string, Peer>();
  private readonly sources = new Set<string>();
  private readonly servers: net.Server[] = [];
  private sweeper?: NodeJS.Timeout;
  private stopped = false;
  /** This agent's run, named in its HELLOs. */
  private readonly run = randomBytes(8).toString('hex');

  constructor(private readonly opts: TransportOptions) {
    super();
    if (opts.key.length < 32) throw new RangeError('the cluster key must be at least 32 bytes');
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    for (const p of opts.peers) this.peers.set(p.name, p);
    this.resourced();
    this.refusals = new Refusals(opts.logger, 'message dropped');
  }

  /** Connections and frames refused, by reason. */
  get drops(): Record<string, number> {
    return this.refusals.counts;
  }

  async start(): Promise<void> {
    // The IPv6 address's server takes the port the first one got (listen port 0: tests).
    for (const host of hostsOf(this.opts.listen))
      await this.listenOn(host, this.servers.length ? this.port() : this.opts.listen.port);
    this.sweeper = setInterval(() => this.sweep(), Math.max(50, Math.floor(this.limits.idleMs / 3)));
    for (const p of this.peers.values()) this.dial(p);
  }

  private async listenOn(host: string, port: number): Promise<void> {
    const server = net.createServer((s) => this.accept(s));
    this.servers.push(server);
    this.resourced();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    // EMFILE and friends on accept: logged, and the server keeps listening.
    server.on('error', (e) =>
      this.refusals.once('server', 'accept', () => {
        this.opts.logger.error({ err: e.message }, 'cannot accept a connection');
      }),
    );
  }

  /** A peer from now on (a member that joined): dialled, and accepted from its addresses. */
  addPeer(p: Peer): void {
    const old = this.peers.get(p.name);
    if (old && old.host === p.host && old.host6 === p.host6 && old.port === p.port) return;
    if (old) this.removePeer(p.name);
    this.peers.set(p.name, p);
    this.resourced();
    if (this.servers.length && !this.stopped) this.dial(p);
  }

  /** No longer a peer (a member that left): its connections close, and it is not dialled again. */
  removePeer(name: string): void {
    if (!this.peers.delete(name)) return;
    this.resourced();
    this.outbound.get(name)?.socket.destroy();
    this.inbound.get(name)?.socket.destroy();
  }

  /** The sources accepted and the servers' connection cap follow the peers. */
  private resourced(): void {
    this.sources.clear();
    for (const p of this.peers.values()) for (const h of hostsOf(p)) this.sources.add(unmapped(h)!);
    // Authenticated: one per peer; the rest wait in their handshake, capped.
    for (const server of this.servers) server.maxConnections = this.peers.size + this.limits.pending;
  }

  /** The port actually listened on (for listen port 0). */
  port(): number {
    return (this.servers[0].address() as net.AddressInfo).port;
  }

  connected(peer: string): boolean {
    return this.outbound.get(peer)?.key !== undefined;
  }

  /** False if the peer is not connected now (it gets the full state when it is). */
  send(peer: string, m: Message): boolean {
    const s = this.outbound.get(peer);
    if (!s?.key) return false;
    if (s.socket.writableLength > this.limits.sendQueueBytes) {
      this.reject(s, 'send_queue_full', `${s.socket.writableLength} bytes not yet taken by the peer`);
      return false;
    }
    this.write(s, s.key, m);
    return true;
  }

  broadcast(m: Message): void {
    for (const p of this.peers.keys()) this.send(p, m);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.sweeper);
    for (const t of this.timers) clearTimeout(t);
    for (const s of this.sockets) s.destroy();
    await Promise.all(this.servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  }

  private write(s: Session, key: Buffer, m: Message): void {
    s.sendSeq++;
    s.lastSent = Date.now();
    s.socket.write(encodeFrame(key, { type: m.type, seq: s.sendSeq, payload: encodeMessage(m) }));
  }

  /** The peer's address of a family this node has (IPv4 first), and this node's address of that family. */
  private route(p: Peer): { host: string; local?: string } {
    const mine = hostsOf(this.opts.listen);
    for (const host of hostsOf(p)) {
      const own = mine.find((m) => net.isIP(m) === net.isIP(host));
      if (own !== undefined) return { host, ...(/^(0\.0\.0\.0|::)$/.test(own) ? {} : { local: own }) };
    }
    // No family in common (the configuration check says so): dial anyway, the failure is logged.
    return { host: p.host };
  }

  private dial(p: Peer): void {
    if (this.stopped) return;
    const { host, local } = this.route(p);
    let socket: net.Socket;
    try {
      // From our own cluster address: the one peers accept us from.
      socket = net.connect({ host, port: p.port, ...(local ? { localAddress: local } : {}) });
    } catch (e) {
      this.refusals.once(p.name, 'dial', () => {
        this.opts.logger.error({ peer: p.name, err: (e as Error).message }, 'cannot dial a peer');
      });
      return this.redial(p);
    }
    const s = this.session(socket, true, host, p.name);
    this.outbound.set(p.name, s);
    socket.once('connect', () => this.write(s, this.opts.key, { type: MsgType.Hello, body: s.hs!.hello }));
    socket.once('close', () => {
      // Only the current connection's end is news: one replaced since (the peer left and came
      // back as a member) must not take down what its successor brought up.
      const current = this.outbound.get(p.name) === s;
      if (current) this.outbound.delete(p.name);
      // Not after stop(): the agent is closing its maps, and a peer going now is no news.
      if (s.key !== undefined && current && !this.stopped) this.emit('peerDown', p.name);
      this.redial(p);
    });
  }

  private redial(p: Peer): void {
    // Not a peer that left, or one whose address changed since.
    if (this.stopped || this.peers.get(p.name) !== p) return;
    const t = setTimeout(() => {
      this.timers.delete(t);
      this.dial(p);
    }, RECONNECT_MS);
    this.timers.add(t);
  }

  private accept(socket: net.Socket): void {
    socket.on('error', () => undefined);
    const source = unmapped(socket.remoteAddress);
    if (this.stopped || !source) return void socket.destroy();
    const dummy = { socket, source } as Session;
    if (!this.sources.has(source)) {
      return this.reject(dummy, 'unknown_source', `${source} is not the cluster address of a peer`);
    }
    const mine = this.pending.get(source) ?? 0;
    if (mine >= this.limits.perSource || this.pendingTotal >= this.limits.pending) {
      return this.reject(dummy, 'too_many', `${mine} handshakes from ${source}, ${this.pendingTotal} in all`);
    }
    this.pending.set(source, mine + 1);
    this.pendingTotal++;
    const s = this.session(socket, false, source);
    let counted = true;
    const done = () => {
      if (!counted) return;
      counted = false;
      this.pendingTotal--;
      const n = this.pending.get(source)! - 1;
      if (n) this.pending.set(source, n);
      else this.pending.delete(source);
    };
    socket.once('close', done);
    s.authenticated = done;
  }

  private session(socket: net.Socket, dialer: boolean, source: string, peer?: string): Session {
    const now = Date.now();
    const s: Session = { socket, dialer, source, peer, sendSeq: 0n, recvSeq: 0n, lastHeard: now, lastSent: now };
    if (dialer) s.hs = this.handshakeState();
    this.sockets.add(socket);
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 5000);
    socket.on('error', () => undefined);
    socket.once('close', () => {
      this.sockets.delete(socket);
      if (s.peer && this.inbound.get(s.peer) === s) this.inbound.delete(s.peer);
    });
    const ms = this.limits.handshakeMs;
    const deadline = setTimeout(() => this.reject(s, 'hello_timeout', `not authenticated within ${ms} ms`), ms);
    socket.once('close', () => clearTimeout(deadline));

    const reader = new FrameReader(
      () => s.key ?? this.opts.key,
      (f) => {
        const expected = s.recvSeq + 1n;
        if (f.seq !== expected) {
          const why = f.seq < expected ? 'replayed' : 'out_of_order';
          return this.reject(s, why, `sequence ${f.seq}, expected ${expected}`);
        }
        s.recvSeq = f.seq;
        s.lastHeard = Date.now();
        if (!s.key) {
          if (this.handshake(s, f.type, f.payload)) clearTimeout(deadline);
          return;
        }
        if (f.type === Number(MsgType.Hello) || f.type === Number(MsgType.Auth)) {
          return this.reject(s, 'unexpected_hello', 'a second handshake on one connection');
        }
        // A dialer only sends: whatever comes back after the handshake is not the protocol.
        if (s.dialer) return this.reject(s, 'unexpected_hello', `frame type ${f.type} from the listening side`);
        let m: Message;
        try {
          m = decodeMessage(f.type, f.payload);
        } catch (e) {
          if (!(e instanceof InvalidMessage)) throw e;
          return this.drop(s, 'malformed', e.message);
        }
        if (m.type !== MsgType.Ping) this.deliver(s, () => this.emit('message', s.peer!, m));
      },
      () => (s.key ? MAX_PAYLOAD : MAX_HANDSHAKE_PAYLOAD),
    );
    socket.once('end', () => {
      const left = reader.buffered();
      if (left > 0) this.drop(s, 'truncated', `connection ended inside a frame (${left} bytes)`);
    });
    socket.on('data', (chunk: Buffer) => {
      try {
        reader.push(chunk);
      } catch (e) {
        if (!(e instanceof FrameRejected)) throw e;
        this.reject(s, e.reason, e.message);
      }
    });
    return s;
  }

  /**
   * One handshake frame: the peer's HELLO, then its AUTH. True once the connection is
   * authenticated. The listener answers a valid HELLO only, so a stranger learns nothing.
   */
  private handshake(s: Session, type: number, payload: Buffer): boolean {
    let m: Message;
    try {
      m = decodeMessage(type, payload);
    } catch (e) {
      if (!(e instanceof InvalidMessage)) throw e;
      this.reject(s, 'malformed', e.message);
      return false;
    }
    if (m.type === MsgType.Hello && !s.transcript) {
      if (!this.helloAcceptable(s, m.body)) return false;
      const hs = (s.hs ??= this.handshakeState());
      s.peer = m.body.node;
      s.run = m.body.run;
      s.theirEph = m.body.eph;
      s.transcript = s.dialer ? Handshake.transcript(hs.hello, m.body) : Handshake.transcript(m.body, hs.hello);
      if (!s.dialer) {
        this.write(s, this.opts.key, { type: MsgType.Hello, body: hs.hello });
        this.write(s, this.opts.key, { type: MsgType.Auth, body: { proof: hs.prove('listener', s.transcript) } });
      }
      return false;
    }
    if (m.type !== MsgType.Auth || !s.transcript) {
      this.reject(s, 'no_hello', `frame type ${type} in the handshake`);
      return false;
    }
    const hs = s.hs!;
    if (!hs.check(s.peer!, s.dialer ? 'listener' : 'dialer', s.transcript, m.body.proof)) {
      this.reject(s, 'bad_proof', `${s.peer} did not prove its identity`);
      return false;
    }
    const key = hs.sessionKey(s.theirEph!, s.transcript);
    if (!key) {
      this.reject(s, 'bad_proof', 'unusable ephemeral key');
      return false;
    }
    const peer = s.peer!;
    if (s.dialer) {
      this.write(s, this.opts.key, { type: MsgType.Auth, body: { proof: hs.prove('dialer', s.transcript) } });
      s.key = key;
      s.sendSeq = 0n;
      this.deliver(s, () => this.emit('peerUp', peer));
    } else {
      s.key = key;
      s.recvSeq = 0n;
      s.authenticated?.();
      // One inbound connection per peer: a newer one replaces it (the peer reconnected).
      const old = this.inbound.get(peer);
      this.inbound.set(peer, s);
      old?.socket.destroy();
      this.newRun(peer, s.run!);
    }
    return true;
  }

  /** A peer's run dialled in: this agent's connection to an earlier run of it is dialled anew. */
  private newRun(peer: string, run: string): void {
    const out = this.outbound.get(peer);
    if (out?.run === undefined || out.run === run) return;
    this.opts.logger.info({ peer }, 'peer restarted: the connection to its previous run is dialled anew');
    // Its close redials; what this agent sent to the previous run is what the new one lacks, and peerUp resends it all.
    out.socket.destroy();
  }

  private helloAcceptable(s: Session, hello: Hello): boolean {
    if (s.dialer) {
      if (hello.node === s.peer) return true;
      this.reject(s, 'wrong_peer', `dialled ${s.peer}, answered by ${hello.node}`);
      return false;
    }
    const peer = this.peers.get(hello.node);
    const at = peer ? hostsOf(peer).map((h) => unmapped(h)!) : [];
    if (!peer) this.reject(s, 'unknown_peer', `${hello.node} is not a peer of ${this.opts.node}`);
    else if (!at.includes(s.source))
      this.reject(s, 'wrong_peer', `${hello.node} is at ${at.join(' and ')}, not ${s.source}`);
    return at.includes(s.source);
  }

  private handshakeState(): Handshake {
    return new Handshake(this.opts.key, this.opts.node, this.opts.identities, this.run);
  }

  /** Runs a listener of ours: what it throws (E2BIG from a command, ...) is logged, not fatal. */
  private deliver(s: Session, emit: () => void): void {
    try {
      emit();
    } catch (e) {
      this.drop(s, 'handler_error', (e as Error).message);
    }
  }

  /** Idle inbound connections closed; dialers that have said nothing lately ping. */
  private sweep(): void {
    const now = Date.now();
    for (const s of this.inbound.values()) {
      if (now - s.lastHeard > this.limits.idleMs) this.reject(s, 'idle', `nothing heard for ${now - s.lastHeard} ms`);
    }
    for (const s of this.outbound.values()) {
      if (s.key && now - s.lastSent >= this.limits.idleMs / 3) this.write(s, s.key, { type: MsgType.Ping, body: {} });
    }
  }

  private drop(s: Session, reason: DropReason, detail: string): void {
    // Not yet identified: by address, so that many connections from one host log once.
    this.refusals.add(s.peer ?? s.source ?? 'unknown', reason, detail);
  }

  /** Drops and closes: the connection cannot be trusted past this point. */
  private reject(s: Session, reason: DropReason, detail: string): void {
    this.drop(s, reason, detail);
    s.socket.destroy();
  }
}
