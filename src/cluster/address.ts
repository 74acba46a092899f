/*
 * The DVIPA on the wire: the routing node holds the address on its external interface,
 * which makes the kernel answer ARP (IPv6: Neighbour Solicitations) for it, and announces it
 * with gratuitous ARP (IPv6: an unsolicited Neighbour Advertisement with the Override flag)
 * so that neighbours switch to it at once. Repeated a few times, as keepalived and z/OS do:
 * one broadcast may be lost, and a switch may still be learning the port.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as readline from 'node:readline';
import { sys } from '../kernel/sys.js';
import { ipFamily, parseIpv4, parseIpv6 } from '../net/addr.js';
import { hasAddress, hostAddress } from '../net/iproute.js';
import type { Logger } from '../log.js';

/** When to repeat the announcement after taking the address (ms after the first). */
const REPEAT_MS = [200, 1000];
/** A command of the batch that only prints, and what it prints first: see done(). */
const MARKER = 'link show dev lo';
const MARKER_LINE = /^\d+: lo: /;

export class AddressHolder {
  private readonly timers = new Set<NodeJS.Timeout>();
  /**
   * Address changes go to one long-lived `ip -batch`: forking the agent (a few hundred MB)
   * for an `ip` command takes tens of milliseconds on a busy node, on the takeover's path.
   */
  private batch: ChildProcess;

  /** Addresses added through the batch and not deleted since (the batch may not have run yet). */
  private readonly taken = new Set<string>();
  /** Addresses to take once their previous owner has let them go (take's `after`). */
  private readonly pending = new Map<string, symbol>();
  /** Waiters for the batch's markers, in the order written (done()). */
  private markers: Array<() => void> = [];

  /** `answering`: whether this node may still answer for the address (its fence): a deposed owner thawed late must not announce. */
  constructor(
    private readonly ifname: string,
    private readonly log: Logger,
    private readonly answering: (address: string) => boolean = () => true,
  ) {
    this.batch = this.startBatch();
  }

  /** Whether the address is on the interface now (after an agent restart, it may already be). */
  holds(address: string): boolean {
    return hasAddress(this.ifname, address);
  }

  /**
   * Takes the address and announces it; with `after`, once `after` resolves (a living owner
   * replaced must first have let it go, see Agent.route), unless given up meanwhile.
   */
  take(address: string, after?: Promise<unknown>): void {
    this.taken.add(address);
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

  /** Gives the address up; resolves once it is off the interface (the stack answers ARP for it no more). */
  give(address: string): Promise<void> {
    this.pending.delete(address);
    // Taken a moment ago, the address may not be on the interface yet: deleted all the same.
    if (!this.taken.delete(address) && !this.holds(address)) return Promise.resolve();
    this.ip(`address del ${hostAddress(address)[0]} dev ${this.ifname}`);
    return this.done();
  }

  stop(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.batch.stdin!.end();
  }

  private add(address: string): void {
    this.ip(`address replace ${hostAddress(address).join(' ')} dev ${this.ifname}`);
    // Frames for the DVIPA (the data plane needs no address) may come at once; the stack
    // answers ARP (NS) and ICMP once the batch has added it, a moment later.
    this.announce(address);
    for (const ms of REPEAT_MS) {
      const t = setTimeout(() => {
        this.timers.delete(t);
        if (this.holds(address) && this.answering(address)) this.announce(address);
      }, ms);
      this.timers.add(t);
    }
  }

  /**
   * Resolves once the batch has run every command written so far: it runs them in order, and
   * prints lo's link (always there, in every namespace) for the one written now. A batch that
   * dies leaves its waiters unresolved: what it ran is not known.
   */
  private done(): Promise<void> {
    return new Promise((resolve) => {
      this.ip(MARKER);
      this.markers.push(resolve);
    });
  }

  private ip(command: string): void {
    if (this.batch.exitCode !== null || this.batch.signalCode !== null) this.batch = this.startBatch();
    this.batch.stdin!.write(`${command}\n`);
  }

  private startBatch(): ChildProcess {
    // -force: a failed command is reported and the next one still runs.
    const batch = spawn('ip', ['-force', '-batch', '-'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const markers: Array<() => void> = [];
    this.markers = markers;
    readline.createInterface({ input: batch.stdout }).on('line', (l) => {
      if (MARKER_LINE.test(l)) markers.shift()?.();
    });
    batch.on('error', (e) => this.log.error({ err: e.message }, 'ip -batch failed to start: addresses not changed'));
    readline
      .createInterface({ input: batch.stderr })
      .on('line', (l) => this.log.error({ ifname: this.ifname, err: l }, 'address change failed'));
    return batch;
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
