/*
 * Socket events from the kernel (bpf/sockstate.bpf.c on the sock:inet_sock_set_state
 * tracepoint): a listener appearing or going, a connection on a served DVIPA changing
 * state. The agent takes them as "look now": it reconciles at once instead of at its next
 * periodic scan. The events are not the truth (a full ring buffer drops them); the scan is.
 */
import * as path from 'node:path';
import { BPF_OBJECT_DIR, native } from '../dataplane/addon.js';
import { named } from '../dataplane/errors.js';
import { struct } from '../dataplane/codec.js';

export interface SockEvent { local: string; remote: string; localPort: number; remotePort: number; oldstate: number; newstate: number }

export const sockEvent = struct<SockEvent>('dvipa_sock_event', [
  ['local', 'ipv4'], ['remote', 'ipv4'], ['localPort', 'u16'], ['remotePort', 'u16'], ['oldstate', 'u8'], ['newstate', 'u8'], ['pad', { pad: 2 }],
]);

export class SockEvents {
  private readonly obj: InstanceType<typeof native.BpfObject>;
  private readonly rb: InstanceType<typeof native.RingBuffer>;

  constructor(pinRoot: string, onEvents: (events: SockEvent[]) => void) {
    this.obj = new native.BpfObject(path.join(BPF_OBJECT_DIR, 'sockstate.bpf.o'), { pinRoot });
    try {
      named('sockstate.bpf.o', () => this.obj.load());
      named('on_inet_sock_set_state', () => this.obj.attach('on_inet_sock_set_state'));
      const fd = named('sock_events', () => this.obj.mapFd('sock_events'));
      this.rb = named('sock_events', () => new native.RingBuffer(fd, (records) => onEvents(records.map((r) => sockEvent.decode(r)))));
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
