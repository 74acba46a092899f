/*
 * The DVIPA on the wire: the routing node holds the address on its external interface,
 * which makes the kernel answer ARP (IPv6: Neighbour Solicitations) for it, and announces it
 * with gratuitous ARP (IPv6: an unsolicited Neighbour Advertisement with the Override flag)
 * so that neighbours switch to it at once. Repeated a few times, as keepalived and z/OS do:
 * one broadcast may be lost, and a switch may still be learning the port.
 */
import { sys } from '../kernel/sys.js';
import {
  addHostAddress,
  deleteHostAddress,
  interfaceAddresses,
  interfaceIndex,
  type HostAddress,
} from '../kernel/rtnl.js';
import { ipFamily, parseIpv4, parseIpv6 } from '../net/addr.js';
import type { Logger } from '../log.js';

/** When to repeat the announcement after taking the address (ms after the first). */
const REPEAT_MS = [200, 1000];

function hostBytes(address: string): HostAddress {
  if (ipFamily(address) === 6) return parseIpv6(address);
  const b = Buffer.alloc(4);
  b.writeUInt32BE(parseIpv4(address) >>> 0);
  return b;
}

/**
 * Address changes are rtnetlink requests made here and now (kernel/rtnl.ts): the address is
 * on the interface before its announcement leaves, and off it before a handover's RELEASED
 * does. They used to go to an `ip -batch` child, which a busy node ran tens of ms later.
 */
export class AddressHolder {
  private readonly timers = new Set<NodeJS.Timeout>();
  /** Addresses to take once their previous owner has let them go (take's `after`). */
  private readonly pending = new Map<string, symbol>();
  /** The interface's index, looked up again if the interface was replaced (ENODEV). */
  private ifindex?: number;

  /** `answering`: whether this node may still answer for the address (its fence): a deposed owner thawed late must not announce. */
  constructor(
    private readonly ifname: string,
    private readonly log: Logger,
    private readonly answering: (address: string) => boolean = () => true,
  ) {}

  /** Whether the address is on the interface now (after an agent restart, it may already be). */
  holds(address: string): boolean {
    const want = hostBytes(address);
    return this.onLink((ifindex) => interfaceAddresses(this.ifname, ifindex).some((a) => a.equals(want)));
  }

  /**
   * Takes the address and announces it; with `after`, once `after` resolves (a living owner
   * replaced must first have let it go, see Agent.route), unless given up meanwhile.
   */
  take(address: string, after?: Promise<unknown>): void {
    this.pending.delete(address);
    if (!after) return this.add(address);
    const pending = Symbol(address);
    this.pending.set(address, pending);
    void after.then(() => {
      if (this.pending.get(address) !== pending) return;
      this.pending.delete(address);
      this.add(address);
    });
  }

  /** Gives the address up: once this resolves it is off the interface (the stack answers ARP for it no more). */
  give(address: string): Promise<void> {
    this.pending.delete(address);
    try {
      this.onLink((ifindex) => deleteHostAddress(this.ifname, ifindex, hostBytes(address)));
    } catch (e) {
      this.log.error({ ifname: this.ifname, address, err: (e as Error).message }, 'address change failed');
    }
    return Promise.resolve();
  }

  stop(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  private add(address: string): void {
    try {
      this.onLink((ifindex) => addHostAddress(this.ifname, ifindex, hostBytes(address)));
    } catch (e) {
      // Not announced: neighbours would send to an address this node's stack does not hold.
      return this.log.error({ ifname: this.ifname, address, err: (e as Error).message }, 'address change failed');
    }
    this.announce(address);
    for (const ms of REPEAT_MS) {
      const t = setTimeout(() => {
        this.timers.delete(t);
        try {
          if (this.holds(address) && this.answering(address)) this.announce(address);
        } catch (e) {
          // The interface went away meanwhile: nothing to announce on.
          this.log.warn({ ifname: this.ifname, address, err: (e as Error).message }, 'announcement not repeated');
        }
      }, ms);
      this.timers.add(t);
    }
  }

  /** `fn` with the interface's index; once more with a fresh index if the interface was replaced. */
  private onLink<T>(fn: (ifindex: number) => T): T {
    this.ifindex ??= interfaceIndex(this.ifname);
    try {
      return fn(this.ifindex);
    } catch (e) {
      if ((e as { code?: string }).code !== 'ENODEV') throw e;
      this.ifindex = interfaceIndex(this.ifname);
      return fn(this.ifindex);
    }
  }

  private announce(address: string): void {
    const v6 = ipFamily(address) === 6;
    try {
      if (v6)
        sys.unsolicitedNa(`neighbour advertisement ${address} on ${this.ifname}`, this.ifname, parseIpv6(address));
      else sys.gratuitousArp(`gratuitous ARP ${address} on ${this.ifname}`, this.ifname, parseIpv4(address));
    } catch (e) {
      // The address is ours either way; neighbours then learn it when their entries expire.
      const what = v6 ? 'neighbour advertisement' : 'gratuitous ARP';
      this.log.warn({ address, ifname: this.ifname, err: (e as Error).message }, `${what} not sent`);
    }
  }
}
