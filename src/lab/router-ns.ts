/*
 * A routing node in a namespace of its own, for BPF_PROG_TEST_RUN with real FIB lookups:
 * an external veth (where frames "arrive"), an internal veth towards the targets with a
 * static neighbour entry for each, and forwarding on. Used by the benchmark, the pcap
 * replay's --lab option and the tests.
 */
import { sys } from '../kernel/sys.js';
import { inNetns, nsIp, sysctl, Topology } from './netns.js';

export interface RouterNs {
  ns: string;
  /** Names of the interfaces inside the namespace. */
  ext: string;
  int: string;
  clusterAddr: string;
  /** Runs `fn` with this thread inside the namespace (FIB lookups, ifindexes). */
  inside<T>(fn: () => T): T;
  ifindex(name: string): number;
  teardown(): void;
}

export const ROUTER_NET = {
  external: '198.18.0.2/24',
  client: '198.18.0.1',
  internal: '198.18.1.1/24',
  clusterAddr: '198.18.1.1',
} as const;

/** The same network in IPv6 (given IPv6 targets). */
export const ROUTER_NET6 = {
  external: '2001:db8::2/64',
  client: '2001:db8::1',
  internal: '2001:db8:1::1/64',
  clusterAddr: '2001:db8:1::1',
} as const;

/** The fake MAC of the i-th target of a family on the internal link. */
export function targetMac(i: number, family: 4 | 6 = 4): string {
  return `02:00:00:00:0${family === 4 ? 1 : 6}:${(i + 16).toString(16).padStart(2, '0')}`;
}

/**
 * `targets` (IPv4) and `targets6` (IPv6; the namespace then has ROUTER_NET6 too) get a
 * route and a static neighbour entry (targetMac) on the internal link, or with `oneArmed` on
 * the external one: the router then sends its encapsulated packets back out of the interface
 * they came in on (XDP_TX), as a load balancer on a stick does.
 */
export function createRouterNs(
  prefix: string,
  targets: readonly string[],
  targets6: readonly string[] = [],
  opts: { oneArmed?: boolean } = {},
): RouterNs {
  const topo = new Topology(prefix);
  try {
    const ns = topo.ns('router');
    topo.veth({ ns, name: 'ext0', addr: ROUTER_NET.external }, { ns, name: 'ext1' });
    topo.veth({ ns, name: 'int0', addr: ROUTER_NET.internal }, { ns, name: 'int1' });
    sysctl(ns, 'net.ipv4.ip_forward', '1');
    const toTargets = opts.oneArmed ? 'ext0' : 'int0';
    nsIp(ns, 'neigh', 'replace', ROUTER_NET.client, 'lladdr', '02:00:00:00:00:01', 'dev', 'ext0', 'nud', 'permanent');
    targets.forEach((t, i) => {
      nsIp(ns, 'route', 'replace', `${t}/32`, 'dev', toTargets);
      nsIp(ns, 'neigh', 'replace', t, 'lladdr', targetMac(i), 'dev', toTargets, 'nud', 'permanent');
    });
    if (targets6.length) {
      sysctl(ns, 'net.ipv6.conf.all.forwarding', '1');
      nsIp(ns, '-6', 'addr', 'add', ROUTER_NET6.external, 'dev', 'ext0', 'nodad');
      nsIp(ns, '-6', 'addr', 'add', ROUTER_NET6.internal, 'dev', 'int0', 'nodad');
      nsIp(
        ns,
        '-6',
        'neigh',
        'replace',
        ROUTER_NET6.client,
        'lladdr',
        '02:00:00:00:00:01',
        'dev',
        'ext0',
        'nud',
        'permanent',
      );
    }
    targets6.forEach((t, i) => {
      nsIp(ns, '-6', 'route', 'replace', `${t}/128`, 'dev', toTargets);
      nsIp(ns, '-6', 'neigh', 'replace', t, 'lladdr', targetMac(i, 6), 'dev', toTargets, 'nud', 'permanent');
    });
    const inside = <T>(fn: () => T): T => inNetns(ns, fn);
    return {
      ns,
      ext: 'ext0',
      int: 'int0',
      clusterAddr: ROUTER_NET.clusterAddr,
      inside,
      ifindex: (name) => inside(() => sys.ifNameToIndex(name, name)),
      teardown: () => topo.teardown(),
    };
  } catch (e) {
    topo.teardown();
    throw e;
  }
}
