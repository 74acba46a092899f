/*
 * Network namespaces and veth links for the lab, the benchmark and the tests, driven
 * through iproute2. Every name made here carries a prefix chosen by the caller, and
 * everything created is recorded so teardown can remove it, also after a failure.
 */
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { ip } from '../net/iproute.js';

import { inNetns, netnsPath } from '../kernel/netns.js';

export { inNetns, ip, netnsPath };

export function nsIp(ns: string, ...args: string[]): string {
  return ip('-n', ns, ...args);
}

export function sysctl(ns: string, key: string, value: string): void {
  ip('netns', 'exec', ns, 'sysctl', '-qw', `${key}=${value}`);
}

function ethtool(ns: string, ifname: string, feature: string, on: boolean): void {
  try {
    execFileSync('ip', ['netns', 'exec', ns, 'ethtool', '-K', ifname, feature, on ? 'on' : 'off'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
  } catch (e) {
    throw new Error(
      `ethtool -K ${ifname} ${feature} ${on ? 'on' : 'off'} (in ${ns}): ${String((e as { stderr?: Buffer }).stderr ?? e).trim()}`,
      { cause: e },
    );
  }
}

/**
 * Makes `ifname` put full checksums on what it sends. A veth normally leaves them to
 * "hardware" (CHECKSUM_PARTIAL), and a frame redirected by XDP loses that note, so the
 * receiver would see a bad checksum. Real NICs send complete checksums; so must a lab
 * client whose packets cross an XDP redirect.
 */
export function fullChecksums(ns: string, ifname: string): void {
  ethtool(ns, ifname, 'tx', false);
}

/**
 * Lets a veth receive frames an XDP program redirects into its peer: veth takes them only
 * on a NAPI queue, which exists when the receiving end has an XDP program or GRO on. A
 * bridge port has neither unless asked.
 */
export function acceptRedirects(ns: string, ifname: string): void {
  ethtool(ns, ifname, 'gro', true);
}

export interface VethEnd {
  ns: string;
  name: string;
  addr?: string;
  master?: string;
}

/** A set of namespaces that is torn down as a whole. */
export class Topology {
  private readonly namespaces: string[] = [];
  private readonly children: ChildProcess[] = [];

  constructor(readonly prefix: string) {}

  ns(name: string): string {
    const full = `${this.prefix}${name}`;
    ip('netns', 'add', full);
    this.namespaces.push(full);
    nsIp(full, 'link', 'set', 'lo', 'up');
    return full;
  }

  /** A veth pair between two namespaces, both ends up, with optional addresses (CIDR) or bridge. */
  veth(a: VethEnd, b: VethEnd): void {
    ip('link', 'add', a.name, 'netns', a.ns, 'type', 'veth', 'peer', 'name', b.name, 'netns', b.ns);
    for (const end of [a, b]) {
      if (end.addr) nsIp(end.ns, 'addr', 'add', end.addr, 'dev', end.name);
      if (end.master) nsIp(end.ns, 'link', 'set', end.name, 'master', end.master);
      nsIp(end.ns, 'link', 'set', end.name, 'up');
    }
  }

  /** A bridge in `ns`: a shared segment (a switch) for the ends that name it as master. */
  bridge(ns: string, name: string): void {
    nsIp(ns, 'link', 'add', name, 'type', 'bridge');
    nsIp(ns, 'link', 'set', name, 'up');
  }

  /**
   * A process inside `ns`'s network namespace only (nsenter --net): unlike `ip netns exec`
   * it keeps the host's mounts, so /sys/fs/bpf is the host's bpffs and pins outlive the
   * process. Killed by pid at teardown.
   */
  spawn(ns: string, cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    const child = spawn('nsenter', [`--net=${netnsPath(ns)}`, cmd, ...args], {
      stdio: ['pipe', 'pipe', 'inherit'],
      ...opts,
    });
    this.children.push(child);
    return child;
  }

  /** Kills what it started and deletes its namespaces (their veths go with them). */
  teardown(): void {
    for (const c of this.children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const ns of this.namespaces.splice(0).reverse()) {
      try {
        ip('netns', 'del', ns);
      } catch {
        /* already gone */
      }
    }
  }
}
