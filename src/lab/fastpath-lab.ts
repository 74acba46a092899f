/*
 * The fast-path lab on one machine: a client namespace, a routing node with the
 * distributor on its external veth, and targets with the decap program, the DVIPA on lo
 * (not advertised) and a real TCP/UDP server each. Every node has its own pin root, as
 * separate machines would. Used by `dvipa demo` and the namespace tests.
 */
import * as fs from 'node:fs';
import { FastPath } from '../dataplane/fastpath.js';
import type { Service, Target } from '../net/service.js';
import { fullChecksums, inNetns as inside, netnsPath, nsIp, sysctl, Topology } from './netns.js';
import { Client, startNameServer } from './procs.js';

export const LAB = {
  dvipa: '192.0.2.10',
  tcpPort: 8080,
  udpPort: 9999,
  client: '198.18.0.1',
  routerExternal: '198.18.0.2',
  routerXcf: '198.18.10.1',
} as const;

export interface LabTarget {
  name: string;
  ns: string;
  xcf: string;
  fastpath: FastPath;
}

export interface FastpathLab {
  prefix: string;
  clientNs: string;
  routerNs: string;
  router: FastPath;
  targets: LabTarget[];
  client: Client;
  tcpService: Service;
  udpService: Service;
  /** Target weights by name; names left out get no new connections. */
  setWeights(service: Service, weights: Record<string, number>): void;
  /** A client driver in any namespace of the lab (e.g. a target's, to ask its server over loopback). */
  clientIn(ns: string): Client;
  /** Runs `fn` inside a namespace of the lab (interface names and FIB are per namespace). */
  inside<T>(ns: string, fn: () => T): T;
  teardown(): void;
}

/**
 * `routerCrtEntries`: the routing node's CRT size; `nameServers: false` for targets whose
 * stack never sees a packet (router-only benchmarks: XDP sinks take their place).
 */
export async function createFastpathLab(
  prefix: string,
  targetCount = 3,
  opts: { routerCrtEntries?: number; nameServers?: boolean } = {},
): Promise<FastpathLab> {
  const routerCrtEntries = opts.routerCrtEntries ?? 65536;
  const topo = new Topology(prefix);
  const pinRoots: string[] = [];
  const fastpaths: FastPath[] = [];
  const open = (node: string, crtMaxEntries: number, netns?: string) => {
    const pinRoot = `/sys/fs/bpf/${prefix}${node}`;
    pinRoots.push(pinRoot);
    const fp = FastPath.open({ pinRoot, crtMaxEntries, netnsPath: netns });
    fastpaths.push(fp);
    return fp;
  };
  const teardown = () => {
    for (const fp of fastpaths) fp.close();
    topo.teardown();
    for (const p of pinRoots) if (fs.existsSync(p)) FastPath.purge(p);
  };

  try {
    const clientNs = topo.ns('client');
    const routerNs = topo.ns('router');
    topo.veth(
      { ns: clientNs, name: 'c0', addr: `${LAB.client}/24` },
      { ns: routerNs, name: 'ext', addr: `${LAB.routerExternal}/24` },
    );
    nsIp(clientNs, 'route', 'add', `${LAB.dvipa}/32`, 'via', LAB.routerExternal);
    fullChecksums(clientNs, 'c0');
    nsIp(routerNs, 'addr', 'add', `${LAB.routerXcf}/32`, 'dev', 'lo');
    sysctl(routerNs, 'net.ipv4.ip_forward', '1');
    const router = open('router', routerCrtEntries, netnsPath(routerNs));
    router.configure({ clusterAddr: LAB.routerXcf });

    const targets: LabTarget[] = [];
    for (let i = 1; i <= targetCount; i++) {
      const name = `t${i}`;
      const xcf = `198.18.${10 + i}.2`;
      const gw = `198.18.${10 + i}.1`;
      const ns = topo.ns(name);
      topo.veth({ ns: routerNs, name: `r${name}`, addr: `${gw}/24` }, { ns, name: 'up0', addr: `${xcf}/24` });
      nsIp(ns, 'addr', 'add', `${LAB.dvipa}/32`, 'dev', 'lo');
      nsIp(ns, 'route', 'add', 'default', 'via', gw);
      sysctl(ns, 'net.ipv4.conf.all.arp_ignore', '1');
      sysctl(ns, 'net.ipv4.conf.all.arp_announce', '2');
      // The routing node knows its targets' link addresses before the first packet.
      const mac = (JSON.parse(nsIp(ns, '-j', 'link', 'show', 'up0')) as Array<{ address: string }>)[0].address;
      nsIp(routerNs, 'neigh', 'replace', xcf, 'lladdr', mac, 'dev', `r${name}`, 'nud', 'permanent');

      const fp = open(name, 1024);
      fp.configure({ clusterAddr: xcf });
      fp.serve(LAB.dvipa);
      fp.allowDecap(
        [LAB.routerXcf],
        [
          { vip: LAB.dvipa, port: LAB.tcpPort, protocol: 'tcp' },
          { vip: LAB.dvipa, port: LAB.udpPort, protocol: 'udp' },
        ],
      );
      inside(ns, () => fp.attach('decap', 'up0', 'native'));
      if (opts.nameServers !== false) await startNameServer(topo, ns, name, LAB.tcpPort, LAB.udpPort);
      targets.push({ name, ns, xcf, fastpath: fp });
    }

    inside(routerNs, () => {
      for (const t of targets) router.enableEgress(`r${t.name}`);
      router.attach('distributor', 'ext', 'native');
    });
    const tcpService: Service = { vip: LAB.dvipa, port: LAB.tcpPort, protocol: 'tcp' };
    const udpService: Service = { vip: LAB.dvipa, port: LAB.udpPort, protocol: 'udp' };
    const setWeights = (service: Service, weights: Record<string, number>) => {
      const list: Target[] = targets
        .filter((t) => weights[t.name] !== undefined)
        .map((t) => ({ addr: t.xcf, weight: weights[t.name] }));
      router.setTargets(service, list);
    };
    const all = Object.fromEntries(targets.map((t) => [t.name, 1]));
    setWeights(tcpService, all);
    setWeights(udpService, all);

    return {
      prefix,
      clientNs,
      routerNs,
      router,
      targets,
      tcpService,
      udpService,
      setWeights,
      inside,
      teardown,
      client: Client.start(topo, clientNs),
      clientIn: (ns) => Client.start(topo, ns),
    };
  } catch (e) {
    teardown();
    throw e;
  }
}
