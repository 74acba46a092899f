/*
 * The HA lab's network, shared by `dvipa lab` and the HA tests: a client and two routing
 * nodes on one LAN (a bridge), the routing nodes, three targets, a plain return gateway and
 * the coupling facility on a core network (another bridge). The client reaches the DVIPA
 * on-link (ARP); targets answer through the gateway, so the return path never depends on a
 * routing node. r1 defines the DVIPA; r2 backs it up (rank 100) with a list of its own.
 * Beside it an IPv6 DVIPA, defined, backed up and distributed the same way: the LAN and the
 * core are dual-stack (the client reaches it on-link too, by Neighbour Discovery), while the
 * nodes keep their IPv4 cluster addresses, so its packets reach the targets IPv6-in-IPv4.
 */
import { execFileSync } from 'node:child_process';
import { acceptRedirects, fullChecksums, nsIp, sysctl, type Topology } from './netns.js';
import { hasAddress } from '../net/iproute.js';

export const HA = {
  dvipa: '192.0.2.10',
  /** The IPv6 DVIPA, in z/OS's IPv6 form named by this interface name. */
  dvipa6: '2001:db8:0:2::10',
  dvipa6Name: 'DVIPA6',
  client: '198.18.0.1',
  client6: '2001:db8:0:1::1',
  cf: '198.18.20.100',
  gwCore: '198.18.20.254',
  gwCore6: '2001:db8:0:20::fe',
  routers: [
    { name: 'r1', xcf: '198.18.20.1', lan: '198.18.0.2', lan6: '2001:db8:0:1::2' },
    { name: 'r2', xcf: '198.18.20.2', lan: '198.18.0.3', lan6: '2001:db8:0:1::3' },
  ],
  targets: [1, 2, 3].map((i) => ({ name: `t${i}`, xcf: `198.18.20.1${i}`, core6: `2001:db8:0:20::1${i}` })),
} as const;

/** Both DVIPAs of the lab, IPv4 first. */
export const HA_DVIPAS = [HA.dvipa, HA.dvipa6] as const;

/** The cluster file: r2's own VIPADISTribute leaves t3 out, so a takeover is visible. */
export function haConfig(ports: number[]): string {
  const [r1, r2] = HA.routers;
  const list = (ts: ReadonlyArray<{ xcf: string }>) => ts.map((t) => t.xcf).join(' ');
  return [
    `NODE r1 XCF ${r1.xcf} EXTERNAL ext INTERNAL core0`,
    'VIPADYNAMIC',
    `  VIPADEFINE 255.255.255.255 ${HA.dvipa}`,
    `  VIPADISTRIBUTE ${HA.dvipa} PORT ${ports.join(' ')} DESTIP ${list(HA.targets)}`,
    `  VIPADEFINE MOVEABLE IMMEDIATE ${HA.dvipa6Name} ${HA.dvipa6}`,
    `  VIPADISTRIBUTE ${HA.dvipa6Name} PORT ${ports.join(' ')} DESTIP ${list(HA.targets)}`,
    'ENDVIPADYNAMIC',
    `NODE r2 XCF ${r2.xcf} EXTERNAL ext INTERNAL core0`,
    'VIPADYNAMIC',
    `  VIPABACKUP 100 ${HA.dvipa}`,
    `  VIPADISTRIBUTE ${HA.dvipa} PORT ${ports.join(' ')} DESTIP ${list(HA.targets.slice(0, 2))}`,
    `  VIPABACKUP 100 ${HA.dvipa6Name} ${HA.dvipa6}`,
    `  VIPADISTRIBUTE ${HA.dvipa6Name} PORT ${ports.join(' ')} DESTIP ${list(HA.targets.slice(0, 2))}`,
    'ENDVIPADYNAMIC',
    ...HA.targets.map((t) => `NODE ${t.name} XCF ${t.xcf} INTERNAL core0`),
    '',
  ].join('\n');
}

/** Builds the namespaces and links; returns namespace names by node (sw, client, gw, cf, r1, r2, t1..t3). */
export function buildHaTopology(topo: Topology): Record<string, string> {
  const ns: Record<string, string> = {};
  ns.sw = topo.ns('sw');
  topo.bridge(ns.sw, 'lan');
  topo.bridge(ns.sw, 'core');
  for (const n of ['client', 'gw', 'cf', ...HA.routers.map((r) => r.name), ...HA.targets.map((t) => t.name)])
    ns[n] = topo.ns(n);
  // IPv6 addresses without duplicate address detection: usable at once, as the IPv4 ones.
  const add6 = (node: string, ifname: string, addr: string) =>
    nsIp(ns[node], 'addr', 'add', `${addr}/64`, 'nodad', 'dev', ifname);
  const onLan = (node: string, ifname: string, addr: string, addr6: string) => {
    topo.veth({ ns: ns[node], name: ifname, addr }, { ns: ns.sw, name: `l-${node}`, master: 'lan' });
    add6(node, ifname, addr6);
  };
  const onCore = (node: string, addr: string, addr6?: string) => {
    topo.veth({ ns: ns[node], name: 'core0', addr: `${addr}/24` }, { ns: ns.sw, name: `c-${node}`, master: 'core' });
    if (addr6) add6(node, 'core0', addr6);
  };

  onLan('client', 'c0', `${HA.client}/24`, HA.client6);
  fullChecksums(ns.client, 'c0');
  nsIp(ns.client, 'route', 'add', `${HA.dvipa}/32`, 'dev', 'c0');
  nsIp(ns.client, '-6', 'route', 'add', `${HA.dvipa6}/128`, 'dev', 'c0');
  onLan('gw', 'lan0', '198.18.0.254/24', '2001:db8:0:1::fe');
  onCore('gw', HA.gwCore, HA.gwCore6);
  sysctl(ns.gw, 'net.ipv4.ip_forward', '1');
  sysctl(ns.gw, 'net.ipv6.conf.all.forwarding', '1');
  for (const k of ['all', 'default', 'core0']) sysctl(ns.gw, `net.ipv4.conf.${k}.rp_filter`, '0');
  onCore('cf', HA.cf);
  for (const r of HA.routers) {
    // Linux flushes an interface's IPv6 addresses (and their on-link routes) when its link goes
    // down, its IPv4 ones not: a routing node that died and came back would have lost its LAN
    // address, and with it the route its stack answers the client by (pings to the IPv6 DVIPA
    // went unanswered after the takeback). A router's addresses are configured, and stay.
    sysctl(ns[r.name], 'net.ipv6.conf.all.keep_addr_on_down', '1');
    onLan(r.name, 'ext', `${r.lan}/24`, r.lan6);
    onCore(r.name, r.xcf);
    // The distributor redirects into core0: its bridge-side peer must accept XDP frames.
    acceptRedirects(ns.sw, `c-${r.name}`);
    sysctl(ns[r.name], 'net.ipv4.ip_forward', '1');
  }
  for (const t of HA.targets) {
    onCore(t.name, t.xcf, t.core6);
    nsIp(ns[t.name], 'route', 'add', 'default', 'via', HA.gwCore);
    nsIp(ns[t.name], '-6', 'route', 'add', 'default', 'via', HA.gwCore6);
  }
  return ns;
}

/** Whether `router` holds the DVIPA (the IPv4 one unless named) on its external interface now. */
export function holdsDvipa(ns: string, dvipa: string = HA.dvipa): boolean {
  return hasAddress('ext', dvipa, ns);
}

/**
 * A routing node's links, both at one instant (one `ip -batch`): down is how a node dies as
 * the network sees it (its data plane gets nothing more, nobody gets a FIN or RST from it);
 * up is how it comes back.
 */
export function setRouterLinks(ns: string, state: 'up' | 'down'): void {
  const order = state === 'down' ? ['ext', 'core0'] : ['core0', 'ext'];
  execFileSync('ip', ['-n', ns, '-batch', '-'], {
    input: order.map((l) => `link set ${l} ${state}\n`).join(''),
    stdio: ['pipe', 'ignore', 'pipe'],
  });
}

/** The nftables table that cuts a routing node off (isolateRouter). */
const ISOLATION_TABLE = 'dvipa_isolation';

/**
 * Cuts a routing node off from etcd and from the other routing node (its core and LAN
 * addresses, and VRRP), or heals it: its clients still reach it on the LAN, and it still
 * reaches the targets, as in a partition of the control network.
 */
export function isolateRouter(ns: string, node: string, cut: boolean): void {
  const others = [HA.cf, ...HA.routers.filter((r) => r.name !== node).flatMap((r) => [r.xcf, r.lan])].join(', ');
  const rules = cut
    ? [
        `table inet ${ISOLATION_TABLE} {`,
        `  chain in { type filter hook input priority -300; ip saddr { ${others} } drop; meta l4proto vrrp drop; }`,
        `  chain out { type filter hook output priority -300; ip daddr { ${others} } drop; meta l4proto vrrp drop; }`,
        '}',
      ].join('\n')
    : `delete table inet ${ISOLATION_TABLE}`;
  execFileSync('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], {
    input: `${rules}\n`,
    stdio: ['pipe', 'ignore', 'pipe'],
  });
}

/** The MAC address of a node's interface. */
export function macOf(ns: string, ifname: string): string {
  const [link] = JSON.parse(
    execFileSync('ip', ['-n', ns, '-j', 'link', 'show', ifname], { encoding: 'utf8' }),
  ) as Array<{
    address: string;
  }>;
  return link.address;
}
