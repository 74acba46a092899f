/*
 * Socket events from the kernel (bpf/sockstate.bpf.c on the sock:inet_sock_set_state
 * tracepoint), of this process's network namespace only: a listener appearing or going,
 * a connection on a served DVIPA changing state. The agent applies them to its socket
 * table (socktable.ts); they are not the whole truth (a full ring buffer drops them, and
 * `lost()` counts those), the scan of /proc is.
 * Addresses of either family: an IPv4 socket's (and a dual-stack socket's IPv4 peer's) as
 * IPv4, an IPv6 wildcard as ::.
 */
import * as fs from 'node:fs';
import { openRingBuffer, type EventSource } from '../kernel/events.js';
import { loadObject, type BpfObject } from '../kernel/object.js';
import { struct } from '../dataplane/codec.js';
import { BpfMap } from '../dataplane/map.js';
import { u32 } from '../dataplane/structs.js';

export interface SockEvent {
  local: string;
  remote: string;
  localPort: number;
  remotePort: number;
  oldstate: number;
  newstate: number;
}

export const sockEvent = struct<SockEvent>('dvipa_sock_event', [
  ['local', 'ip'],
  ['remote', 'ip'],
  ['localPort', 'u16'],
  ['remotePort', 'u16'],
  ['oldstate', 'u8'],
  ['newstate', 'u8'],
  ['pad', { pad: 2 }],
]);

export interface SockFilter {
  netns: number;
  lost: bigint;
}

export const sockFilter = struct<SockFilter>('dvipa_sock_filter', [
  ['netns', 'u32'],
  ['pad', { pad: 4 }],
  ['lost', 'u64'],
]);

/** The network namespace this process reads /proc/net/tcp of, as the kernel numbers it. */
export function ownNetns(): number {
  return fs.statSync('/proc/self/ns/net').ino;
}

export interface SockEventsOptions {
  /** The ring buffer's size in bytes (a power of 2 pages; default: as bpf/maps_target.h). */
  ringBytes?: number;
}

export class SockEvents {
  private readonly obj: BpfObject;
  private readonly rb: EventSource;
  private readonly filter: BpfMap<number, SockFilter>;

  constructor(pinRoot: string, onEvents: (events: SockEvent[]) => void, opts: SockEventsOptions = {}) {
    this.obj = loadObject('sockstate', {
      pinRoot,
      ...(opts.ringBytes ? { maxEntries: { sock_events: opts.ringBytes } } : {}),
    });
    try {
      this.filter = new BpfMap('sock_filter', this.obj.mapFd('sock_filter'), u32, sockFilter);
      // Before attach: the program queues nothing until it knows its namespace.
      this.filter.set(0, { netns: ownNetns(), lost: 0n });
      this.obj.attach('on_inet_sock_set_state');
      this.rb = openRingBuffer('sock_events', this.obj.mapFd('sock_events'), (records) =>
        onEvents(records.map((r) => sockEvent.decode(r))),
      );
    } catch (e) {
      this.obj.close();
      throw e;
    }
  }

  /** Events the kernel dropped on a full ring buffer since this object was loaded. */
  lost(): number {
    return Number(this.filter.get(0)?.lost ?? 0n);
  }

  close(): void {
    this.rb.close();
    this.obj.close();
  }
}
