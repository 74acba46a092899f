/*
 * Socket events from the kernel (bpf/sockstate.bpf.c on the sock:inet_sock_set_state
 * tracepoint): a listener appearing or going, a connection on a served DVIPA changing
 * state. The agent takes them as "look now": it reconciles at once instead of at its next
 * periodic scan. The events are not the truth (a full ring buffer drops them); the scan is.
 */
import { openRingBuffer, type EventSource } from '../kernel/events.js';
import { loadObject, type BpfObject } from '../kernel/object.js';
import { struct } from '../dataplane/codec.js';

export interface SockEvent {
  local: string;
  remote: string;
  localPort: number;
  remotePort: number;
  oldstate: number;
  newstate: number;
}

export const sockEvent = struct<SockEvent>('dvipa_sock_event', [
  ['local', 'ipv4'],
  ['remote', 'ipv4'],
  ['localPort', 'u16'],
  ['remotePort', 'u16'],
  ['oldstate', 'u8'],
  ['newstate', 'u8'],
  ['pad', { pad: 2 }],
]);

export class SockEvents {
  private readonly obj: BpfObject;
  private readonly rb: EventSource;

  constructor(pinRoot: string, onEvents: (events: SockEvent[]) => void) {
    this.obj = loadObject('sockstate', { pinRoot });
    try {
      this.obj.attach('on_inet_sock_set_state');
      this.rb = openRingBuffer('sock_events', this.obj.mapFd('sock_events'), (records) =>
        onEvents(records.map((r) => sockEvent.decode(r))),
      );
    } catch (e) {
      this.obj.close();
      throw e;
    }
  }

  close(): void {
    this.rb.close();
    this.obj.close();
  }
}
