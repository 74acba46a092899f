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

/** `targets` get a route and a static neighbour entry (fake MAC) on the internal link. */
export function createRouterNs(prefix: string, targets: readonly string[]): RouterNs {
  const topo = new Topology(prefix);
  try {
    const ns = topo.ns('router');
    topo.veth({ ns, name: 'ext0', addr: ROUTER_NET.external }, { ns, name: 'ext1' });
    topo.veth({ ns, name: 'int0', addr: ROUTER_NET.internal }, { ns, name: 'int1' });
    sysctl(ns, 'net.ipv4.ip_forward', '1');
    nsIp(ns, 'neigh', 'replace', ROUTER_NET.client, 'lladdr', '02:00:00:00:00:01', 'dev', 'ext0', 'nud', 'permanent');
    targets.forEach((t, i) => {
      const mac = `02:00:00:00:01:${(i + 16).toString(16).padStart(2, '0')}`;
      nsIp(ns, 'route', 'replace', `${t}/32`, 'dev', 'int0');
      nsIp(ns, 'neigh', 'replace', t, 'lladdr', mac, 'dev', 'int0', 'nud', 'permanent');
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
