/*
 * The DVIPA on the wire: the routing node holds the address on its external interface,
 * which makes the kernel answer ARP (IPv6: Neighbour Solicitations) for it, and announces it
 * with gratuitous ARP (IPv6: an unsolicited Neighbour Advertisement with the Override flag)
 * so that neighbours switch to it at once. Repeated a few times, as keepalived and z/OS do:
 * one broadcast may be lost, and a switch may still be learning the port.
 */
import { sys } from '../kernel/sys.js';
import { ipFamily, parseIpv4, parseIpv6 } from '../net/addr.js';
import { hasAddress, hostAddress, ip } from '../net/iproute.js';
import type { Logger } from '../log.js';

/** When to repeat the announcement after taking the address (ms after the first). */
const REPEAT_MS = [200, 1000];

export class AddressHolder {
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(
    private readonly ifname: string,
    private readonly log: Logger,
  ) {}

  /** Whether the address is on the interface now (after an agent restart, it may already be). */
  holds(address: string): boolean {
    return hasAddress(this.ifname, address);
  }

  take(address: string): void {
    ip('addr', 'replace', ...hostAddress(address), 'dev', this.ifname);
    this.announce(address);
    for (const ms of REPEAT_MS) {
      const t = setTimeout(() => {
        this.timers.delete(t);
        if (this.holds(address)) this.announce(address);
      }, ms);
      this.timers.add(t);
    }
  }

  give(address: string): void {
    if (this.holds(address)) ip('addr', 'del', hostAddress(address)[0], 'dev', this.ifname);
  }

  stop(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
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
