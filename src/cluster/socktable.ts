/*
 * The target's view of its namespace's TCP sockets: the listeners, and the connections on
 * the DVIPAs it serves. Kept current from socket events (one event is one change, no
 * rescan), and rebuilt from /proc by `resync` at the agent's scan period, when it starts
 * serving, and when the kernel says events were lost. Events queued before a resync and
 * read after it are harmless: each names the socket's state at that moment, and the later
 * ones, queued in order behind it, bring the table to the present.
 */
import { readSockets, TCP_STATES, type SocketEntry } from './sockets.js';
import type { SockEvent } from './sockevents.js';

const LISTEN = TCP_STATES.indexOf('listen') + 1;
const CLOSE = TCP_STATES.indexOf('close') + 1;
/** States in which a socket is no connection (any more), as connectionsOn leaves them out. */
const GONE = new Set((['time_wait', 'close', 'listen'] as const).map((s) => TCP_STATES.indexOf(s) + 1));

const key = (local: string, localPort: number, remote: string, remotePort: number) =>
  `${local}|${localPort}|${remote}|${remotePort}`;

export class SocketTable {
  private listeners = new Map<string, SocketEntry>();
  private conns = new Map<string, SocketEntry>();
  /** The DVIPAs whose connections are kept (as of the last resync). */
  private dvipas: ReadonlySet<string> = new Set();
  /** The kernel's count of lost events when last updated. */
  private lostSeen = 0;
  /** Full rebuilds done (the first included). */
  resyncs = 0;

  constructor(private readonly read: () => SocketEntry[] = readSockets) {}

  /** Rebuilds the table from /proc: every listener, and the connections on `dvipas` (default: as before). */
  resync(dvipas = this.dvipas): void {
    this.dvipas = dvipas;
    const listeners = new Map<string, SocketEntry>();
    const conns = new Map<string, SocketEntry>();
    for (const s of this.read()) {
      if (s.state === 'listen') listeners.set(key(s.local, s.localPort, '', 0), s);
      else if (dvipas.has(s.local)) conns.set(key(s.local, s.localPort, s.remote, s.remotePort), s);
    }
    this.listeners = listeners;
    this.conns = conns;
    this.resyncs++;
  }

  /**
   * A batch of events, with the kernel's count of events lost so far: applied one by one,
   * or a resync instead when the table cannot be trusted (never resynced, events lost, a
   * listener gone). Returns how many events were lost since the last update.
   */
  update(events: readonly SockEvent[], lost: number): number {
    const missed = lost - this.lostSeen;
    this.lostSeen = lost;
    if (!this.apply(events) || missed || !this.resyncs) this.resync();
    return missed;
  }

  /**
   * Applies events in the order the kernel queued them. Returns false when one cannot be
   * applied alone: a listener that went may have had a twin on the same address and port
   * (SO_REUSEPORT) that still listens, which only a resync can tell.
   */
  private apply(events: readonly SockEvent[]): boolean {
    let complete = true;
    for (const e of events) {
      // LISTEN to CLOSE is a listener going; LISTEN to SYN_RECV a connection's new socket, cloned from it.
      if (e.oldstate === LISTEN && e.newstate === CLOSE) {
        complete = false;
        continue;
      }
      if (e.newstate === LISTEN) {
        this.listeners.set(key(e.local, e.localPort, '', 0), entry(e));
        continue;
      }
      const k = key(e.local, e.localPort, e.remote, e.remotePort);
      if (GONE.has(e.newstate)) this.conns.delete(k);
      else this.conns.set(k, entry(e));
    }
    return complete;
  }

  /** What the table holds, as readSockets would list it. */
  sockets(): SocketEntry[] {
    return [...this.listeners.values(), ...this.conns.values()];
  }
}

function entry(e: SockEvent): SocketEntry {
  return {
    local: e.local,
    localPort: e.localPort,
    remote: e.remote,
    remotePort: e.remotePort,
    state: TCP_STATES[e.newstate - 1] ?? 'close',
  };
}
