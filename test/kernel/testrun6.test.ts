/*
 * Every IPv6 verdict of the distributor and the decap program, on the real kernel with
 * BPF_PROG_TEST_RUN and real FIB lookups (IPv6 and IPv4 routes and neighbours in a
 * routing-node namespace): the three tunnel forms, extension headers, fragments, ICMPv6
 * packet too big, fencing, and random and mutated IPv6 frames.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { FastPath } from '../../src/dataplane/fastpath.js';
import type { Service } from '../../src/net/service.js';
import { anyPortBit, CrtOrigin, FENCE_DRAIN, FENCE_EXPIRED, type Reason } from '../../src/dataplane/structs.js';
import { buildMaglevIndexed, MAGLEV_SIZE } from '../../src/tables/maglev.js';
import type { XdpAction } from '../../src/dataplane/testrun.js';
import { ROUTER_NET, ROUTER_NET6, targetMac, type RouterNs } from '../../src/lab/router-ns.js';
import { netnsPath, nsIp, sysctl } from '../../src/lab/netns.js';
import { flowHash, flowHash6 } from '../../src/tables/flowhash.js';
import { buildFrame, buildIpv4, ETH_P_IP, ETH_P_IPV6, parseFrame } from '../../src/net/packet.js';
import { buildFrame6, buildIpv6, ethernetAround, NEXTHDR, readIpv6, type Frame6Spec } from '../../src/net/packet6.js';
import { l4Checksum } from '../../src/net/checksum.js';
import { parseIpv6 } from '../../src/net/addr.js';
import { requireRoot } from '../helpers/env.js';
import { assertUdpNeverConfirmed, openRoutingNode, type RoutingNode } from '../helpers/routing-node.js';

const VIP6 = '2001:db8:10::10';
const CLIENT6 = ROUTER_NET6.client;
const CLUSTER6 = ROUTER_NET6.clusterAddr;
const TARGETS6 = ['2001:db8:1::11', '2001:db8:1::12', '2001:db8:1::13'];
const TARGETS4 = ['198.18.1.11', '198.18.1.12'];
const web6: Service = { vip: VIP6, port: 80, protocol: 'tcp' };
const mixed6: Service = { vip: VIP6, port: 8080, protocol: 'tcp' };
const dns6: Service = { vip: VIP6, port: 53, protocol: 'udp' };
const equal6 = TARGETS6.map((addr) => ({ addr, weight: 1 }));
const v4Targets = TARGETS4.map((addr) => ({ addr, weight: 1 }));
const macOf6 = (t: string) => targetMac(TARGETS6.indexOf(t), 6);

let node: RoutingNode;
let rns: RouterNs;
let fp: FastPath;
const run = (frame: Buffer, prog?: 'distributor' | 'decap') => node.run(frame, prog);

function syn6(extra: Partial<Frame6Spec> = {}): Buffer {
  return buildFrame6({ saddr: CLIENT6, daddr: VIP6, sport: 40000, dport: 80, syn: true, ...extra });
}

/** The target Maglev gives a flow with no CRT entry. */
function predicted(targets: Array<{ addr: string; weight: number }>, f: Parameters<typeof flowHash6>[0]): string {
  const { slots, addrs } = buildMaglevIndexed(targets);
  return addrs[slots[flowHash6(f) % MAGLEV_SIZE] - 1];
}

/** The same for an IPv4 flow. */
function predictedV4(targets: Array<{ addr: string; weight: number }>, f: Parameters<typeof flowHash>[0]): string {
  const { slots, addrs } = buildMaglevIndexed(targets);
  return addrs[slots[flowHash(f) % MAGLEV_SIZE] - 1];
}

/** Checks an IPv6-in-IPv6 frame carrying `input`'s packet and returns the target. */
function assertIn6(out: Buffer, input: Buffer, l2in = 14): string {
  assert.equal(out.readUInt16BE(12), ETH_P_IPV6);
  const outer = readIpv6(out.subarray(14));
  assert.equal(outer.nexthdr, 41, 'IPv6 in IPv6');
  assert.equal(outer.src, CLUSTER6);
  assert.ok(TARGETS6.includes(outer.dst), `target ${outer.dst}`);
  assert.equal(outer.hopLimit, 64);
  assert.equal(outer.payloadLength, input.length - l2in);
  assert.deepEqual(out.subarray(54), input.subarray(l2in), 'inner packet carried unchanged');
  assert.equal(
    out.subarray(0, 6).toString('hex').match(/../g)!.join(':'),
    macOf6(outer.dst),
    'next hop MAC from the FIB',
  );
  return outer.dst;
}

before(() => {
  requireRoot();
  node = openRoutingNode('tr6', { targets: TARGETS4, targets6: TARGETS6, crtMaxEntries: 4096, clusterAddr6: CLUSTER6 });
  ({ rns, fp } = node);
  fp.setTargets(web6, equal6);
  fp.setTargets(dns6, equal6);
  fp.setTargets(mixed6, v4Targets);
});

after(() => node?.close());

describe('IPv6 distributor', () => {
  test('a SYN is encapsulated IPv6-in-IPv6 to the Maglev target, its CRT entry keeps the connection there', () => {
    const flow = { saddr: CLIENT6, daddr: VIP6, sport: 40000, dport: 80, proto: 6 };
    const frame = syn6();
    const r = run(frame);
    assert.deepEqual([r.action, r.reason], ['redirect', 'fwd_redirect']);
    const target = assertIn6(r.frame, frame);
    assert.equal(target, predicted(equal6, flow));
    const entry = fp.crt6.get(flow)!;
    assert.equal(entry.target, target);
    assert.equal(entry.origin, CrtOrigin.First);
    assert.equal(entry.targetIdx, fp.targetIndexOf(fp.serviceId(web6)!, target));

    const id = fp.serviceId(web6)!;
    const hits = fp.serviceStats(id).crtHit;
    fp.setTargets(web6, equal6.filter((t) => t.addr !== target).concat([{ addr: target, weight: 0 }]));
    try {
      const ack = syn6({ syn: false, ack: true, payload: 100 });
      assert.equal(assertIn6(run(ack).frame, ack), target, 'established connection stays');
      assert.equal(fp.serviceStats(id).crtHit, hits + 1n);
    } finally {
      fp.setTargets(web6, equal6);
    }
  });

  test('a mid-connection packet without an entry is recovered by hash; UDP picks on its first datagram', () => {
    const flow = { saddr: CLIENT6, daddr: VIP6, sport: 41000, dport: 80, proto: 6 };
    const ack = syn6({ sport: 41000, syn: false, ack: true });
    assert.equal(assertIn6(run(ack).frame, ack), predicted(equal6, flow));
    assert.equal(fp.crt6.get(flow)!.origin, CrtOrigin.Recovered);

    const q = buildFrame6({ protocol: 'udp', saddr: CLIENT6, daddr: VIP6, sport: 5353, dport: 53, payload: 30 });
    assertIn6(run(q).frame, q);
    assert.equal(
      fp.crt6.get({ saddr: CLIENT6, daddr: VIP6, sport: 5353, dport: 53, proto: 17 })!.origin,
      CrtOrigin.First,
    );
  });

  test('IPv6 UDP is never a confirmed connection: its datagrams do not look in crt6_est, and confirm leaves it out', () => {
    const flow = { saddr: CLIENT6, daddr: VIP6, sport: 5400, dport: 53, proto: 17 };
    const q = buildFrame6({ protocol: 'udp', saddr: CLIENT6, daddr: VIP6, sport: 5400, dport: 53, payload: 30 });
    const svcId = fp.serviceId(dns6)!;
    const hashed = predicted(equal6, flow);
    assertUdpNeverConfirmed({
      fp,
      flow,
      svcId,
      hashed,
      targets: TARGETS6,
      est: fp.crt6Est,
      lru: fp.crt6,
      send: () => assertIn6(run(q).frame, q),
    });
  });

  test('to an IPv4 target: IPv6-in-IPv4 (protocol 41), the CRT entry holding the IPv4 target', () => {
    const frame = syn6({ dport: 8080, sport: 42000, trafficClass: 0x28 });
    const r = run(frame);
    assert.equal(r.reason, 'fwd_redirect');
    const p = parseFrame(r.frame);
    assert.equal(p.eth!.ethertype, ETH_P_IP);
    const outer = p.ipv4!;
    assert.equal(outer.protocol, 41);
    assert.equal(outer.src, ROUTER_NET.clusterAddr);
    assert.ok(TARGETS4.includes(outer.dst));
    assert.ok(outer.checksumOk && outer.df);
    assert.equal(outer.tos, 0x28, 'traffic class carried to the outer header');
    assert.equal(outer.totalLength, frame.length - 14 + 20);
    assert.deepEqual(r.frame.subarray(34), frame.subarray(14));
    const entry = fp.crt6.get({ saddr: CLIENT6, daddr: VIP6, sport: 42000, dport: 8080, proto: 6 })!;
    assert.equal(entry.target, outer.dst);
  });

  test('to an IPv4 target with a VIPAROUTE: IPv6-in-IPv4 to the VIPAROUTE address, new and established', () => {
    const VIA = '198.18.1.21';
    const svcV: Service = { vip: VIP6, port: 8081, protocol: 'tcp' };
    const outerOf = (frame: Buffer) => {
      const r = run(frame);
      assert.equal(r.reason, 'fwd_redirect');
      const p = parseFrame(r.frame);
      assert.equal(p.ipv4!.protocol, 41);
      return `${p.ipv4!.dst} ${p.eth!.dst}`;
    };
    nsIp(rns.ns, 'neigh', 'replace', VIA, 'lladdr', '02:00:00:00:01:21', 'dev', 'int0', 'nud', 'permanent');
    try {
      fp.setTargets(svcV, [{ addr: TARGETS4[0], weight: 1 }]);
      fp.setViaRoutes(new Map([[TARGETS4[0], VIA]]));
      const viaOuter = `${VIA} 02:00:00:00:01:21`;
      assert.equal(outerOf(syn6({ dport: 8081, sport: 42100 })), viaOuter, 'a new flow: the VIPAROUTE address');
      assert.equal(outerOf(syn6({ dport: 8081, sport: 42100, syn: false, ack: true })), viaOuter, 'its next packet');
      const key = { saddr: CLIENT6, daddr: VIP6, sport: 42100, dport: 8081, proto: 6 };
      assert.equal(fp.crt6.get(key)!.target, TARGETS4[0], 'the CRT keeps the target, not the VIPAROUTE address');
      fp.setViaRoutes(new Map());
      const direct = outerOf(syn6({ dport: 8081, sport: 42100, syn: false, ack: true }));
      assert.equal(direct.split(' ')[0], TARGETS4[0], 'without it: the cluster address again');
    } finally {
      fp.setViaRoutes(new Map());
      fp.removeService(svcV);
      nsIp(rns.ns, 'neigh', 'del', VIA, 'dev', 'int0');
    }
  });

  test('an every-port service (port 0): any port served, through the filter bit; pins without the bit get it back', () => {
    const any6: Service = { vip: '2001:db8:10::20', port: 0, protocol: 'tcp' };
    fp.setTargets(any6, equal6);
    try {
      assert.notEqual(fp.nodeConfig().anyPort & anyPortBit(any6.vip), 0, 'its bit is set');
      const served = () =>
        [22, 443, 65535].map((dport) => {
          const f = syn6({ daddr: any6.vip, dport });
          const r = run(f);
          return r.action === 'redirect' ? assertIn6(r.frame, f) : r.action;
        });
      assert.ok(
        served().every((t) => TARGETS6.includes(t)),
        'every port goes to a target',
      );
      // Pins an older version wrote: the service, no filter bit. The data plane then finds no
      // service (the filter says there is none): a reopening control plane restores the bit.
      fp.config.set(0, { ...fp.nodeConfig(), anyPort: 0 });
      assert.deepEqual(served(), ['pass', 'pass', 'pass'], 'without the bit the every-port lookup is skipped');
      FastPath.open({ pinRoot: fp.pinRoot, crtMaxEntries: 4096, netnsPath: netnsPath(rns.ns) }).close();
      assert.ok(
        served().every((t) => TARGETS6.includes(t)),
        'served again after a reopen',
      );
      // Another process's write from a stale read loses the bit: the next write of the config puts it back.
      fp.config.set(0, { ...fp.nodeConfig(), anyPort: 0 });
      fp.configure({ clusterAddr: rns.clusterAddr, clusterAddr6: CLUSTER6 });
      assert.ok(
        served().every((t) => TARGETS6.includes(t)),
        'served again after a configure',
      );
    } finally {
      fp.removeService(any6);
    }
  });

  test('extension headers are walked to a bound; fragments are counted and passed', () => {
    const hop = { type: 'hop', bodyLength: 6 } as const;
    const dest = { type: 'dest', bodyLength: 30 } as const;
    const routing = { type: 'routing', bodyLength: 14 } as const;
    const withExt = syn6({ sport: 43000, ext: [hop, routing, dest] });
    const r = run(withExt);
    assert.equal(r.reason, 'fwd_redirect');
    assertIn6(r.frame, withExt);
    assert.ok(fp.crt6.get({ saddr: CLIENT6, daddr: VIP6, sport: 43000, dport: 80, proto: 6 }));

    const cases: Array<[string, Buffer, XdpAction, Reason]> = [
      ['five extension headers', syn6({ ext: [hop, dest, dest, dest, dest] }), 'drop', 'drop_malformed_l4'],
      ['first fragment', syn6({ ext: [{ type: 'fragment', more: true }] }), 'pass', 'pass_fragment6'],
      [
        'later fragment behind hop-by-hop',
        syn6({ ext: [hop, { type: 'fragment', fragOffset: 100 }] }),
        'pass',
        'pass_fragment6',
      ],
      [
        'fragment to another address',
        syn6({ daddr: '2001:db8::99', ext: [{ type: 'fragment', more: true }] }),
        'pass',
        'pass_not_service',
      ],
      ['truncated TCP header', syn6().subarray(0, 14 + 40 + 10), 'pass', 'pass_malformed'],
    ];
    for (const [what, frame, action, reason] of cases) {
      const out = run(frame);
      assert.deepEqual([out.action, out.reason], [action, reason], what);
      if (action === 'pass') assert.deepEqual(out.frame, frame, `${what}: unchanged`);
    }
  });

  test('what is not a distributed DVIPA:port passes untouched; malformed IPv6 is counted', () => {
    const truncatedL4 = buildIpv6({ saddr: CLIENT6, daddr: VIP6, syn: true }).subarray(0, 50);
    truncatedL4.writeUInt16BE(10, 4); // the length claims only what is there
    const badVersion = syn6();
    badVersion[14] = 0x40;
    const cases: Array<[string, Buffer, XdpAction, Reason]> = [
      ['TCP to another address', syn6({ daddr: '2001:db8::99' }), 'pass', 'pass_not_service'],
      ['an undistributed port', syn6({ dport: 22 }), 'pass', 'pass_not_service'],
      [
        'UDP to a TCP-only port',
        buildFrame6({ protocol: 'udp', saddr: CLIENT6, daddr: VIP6, dport: 80 }),
        'pass',
        'pass_not_service',
      ],
      ['ICMPv6 echo', buildFrame6({ protocol: 'icmpv6', saddr: CLIENT6, daddr: VIP6 }), 'pass', 'pass_not_service'],
      ['version 4 in an IPv6 frame', badVersion, 'pass', 'pass_malformed'],
      ['payload length beyond the frame', syn6().subarray(0, 60), 'pass', 'pass_malformed'],
      ['TCP header cut short', ethernetAround(truncatedL4, ETH_P_IPV6), 'drop', 'drop_malformed_l4'],
    ];
    for (const [what, frame, action, reason] of cases) {
      const r = run(frame);
      assert.deepEqual([r.action, r.reason], [action, reason], what);
      if (action === 'pass') assert.deepEqual(r.frame, frame, `${what}: unchanged`);
    }
  });

  test('too big once encapsulated: ICMPv6 packet too big to the client, from the DVIPA, checksum right', () => {
    const target = predicted(equal6, { saddr: CLIENT6, daddr: VIP6, sport: 44000, dport: 80, proto: 6 });
    // The IPv6 FIB tells a route's MTU only when it is locked (ip6_mtu_from_fib6).
    nsIp(rns.ns, '-6', 'route', 'replace', `${target}/128`, 'dev', 'int0', 'mtu', 'lock', '1400');
    fp.resolveTargets();
    try {
      for (const vlan of [undefined, 7]) {
        const frame = syn6({ sport: 44000, syn: false, ack: true, payload: 1400 - 40 - 20 - 39, vlan });
        const l2 = vlan === undefined ? 14 : 18;
        const r = run(frame);
        assert.deepEqual([r.action, r.reason], ['tx', 'tx_pkt_too_big']);
        assert.equal(
          r.frame.subarray(0, 6).toString('hex'),
          frame.subarray(6, 12).toString('hex'),
          'back to the sender',
        );
        const ip = readIpv6(r.frame.subarray(l2));
        assert.deepEqual([ip.src, ip.dst, ip.nexthdr], [VIP6, CLIENT6, NEXTHDR.icmpv6]);
        const icmp = r.frame.subarray(l2 + 40);
        assert.equal(ip.payloadLength, icmp.length);
        assert.equal(icmp.length, 8 + 1232, 'quotes as much as fits 1280 bytes');
        assert.deepEqual([icmp[0], icmp[1]], [2, 0]);
        assert.equal(icmp.readUInt32BE(4), 1400 - 40, 'the MTU left for the inner packet');
        assert.equal(l4Checksum(parseIpv6(ip.src), parseIpv6(ip.dst), NEXTHDR.icmpv6, icmp), 0, 'ICMPv6 checksum');
        assert.deepEqual(icmp.subarray(8), frame.subarray(l2, l2 + 1232), 'the start of the packet quoted');
      }
      const fits = syn6({ sport: 44000, syn: false, ack: true, payload: 1400 - 40 - 20 - 40 });
      assert.equal(run(fits).reason, 'fwd_redirect', 'exactly the MTU once encapsulated still goes');
    } finally {
      nsIp(rns.ns, '-6', 'route', 'replace', `${target}/128`, 'dev', 'int0');
      fp.resolveTargets();
    }
  });

  test('too big once in IPv4 (IPv6-in-IPv4): packet too big with the MTU less 20, a short packet quoted 512 bytes', () => {
    for (const t of TARGETS4) nsIp(rns.ns, 'route', 'replace', `${t}/32`, 'dev', 'int0', 'mtu', 'lock', '1200');
    fp.resolveTargets();
    try {
      // 1,200 bytes of IPv6: 20 too many once in IPv4, and shorter than a full 1,232-byte quote.
      const frame = syn6({ dport: 8080, sport: 42200, syn: false, ack: true, payload: 1200 - 40 - 20 });
      assert.equal(frame.length - 14, 1200);
      const r = run(frame);
      assert.deepEqual([r.action, r.reason], ['tx', 'tx_pkt_too_big']);
      const ip = readIpv6(r.frame.subarray(14));
      assert.deepEqual([ip.src, ip.dst, ip.nexthdr], [VIP6, CLIENT6, NEXTHDR.icmpv6]);
      const icmp = r.frame.subarray(14 + 40);
      assert.equal(icmp.length, 8 + 512, 'quotes 512 bytes');
      assert.equal(ip.payloadLength, icmp.length);
      assert.deepEqual([icmp[0], icmp[1]], [2, 0]);
      assert.equal(icmp.readUInt32BE(4), 1200 - 20, 'the MTU less the IPv4 outer header');
      assert.equal(l4Checksum(parseIpv6(ip.src), parseIpv6(ip.dst), NEXTHDR.icmpv6, icmp), 0, 'ICMPv6 checksum');
      assert.deepEqual(icmp.subarray(8), frame.subarray(14, 14 + 512), 'the start of the packet quoted');
      const fits = syn6({ dport: 8080, sport: 42200, syn: false, ack: true, payload: 1200 - 40 - 20 - 20 });
      assert.equal(run(fits).reason, 'fwd_redirect', 'exactly the MTU once encapsulated still goes');
    } finally {
      for (const t of TARGETS4) nsIp(rns.ns, 'route', 'replace', `${t}/32`, 'dev', 'int0');
      fp.resolveTargets();
    }
  });

  test('the routing node among its own IPv6 targets passes its flows to its own stack', () => {
    const svc: Service = { vip: VIP6, port: 443, protocol: 'tcp' };
    fp.setTargets(svc, [{ addr: CLUSTER6, weight: 1 }]);
    try {
      const frame = syn6({ dport: 443 });
      const r = run(frame);
      assert.deepEqual([r.action, r.reason], ['pass', 'pass_local_target']);
      assert.deepEqual(r.frame, frame);
    } finally {
      fp.removeService(svc);
    }
  });

  test('no IPv6 cluster address, no target, no route: counted drops', () => {
    const svc: Service = { vip: VIP6, port: 444, protocol: 'tcp' };
    fp.setTargets(svc, [{ addr: '2001:db8:99::1', weight: 1 }]);
    try {
      assert.equal(run(syn6({ dport: 444 })).reason, 'drop_no_route', 'a target the FIB does not know');
      fp.setTargets(svc, [{ addr: TARGETS6[0], weight: 0 }]);
      assert.equal(run(syn6({ dport: 444, sport: 40001 })).reason, 'drop_no_target');
      fp.setTargets(svc, [{ addr: TARGETS6[0], weight: 1 }]);
      fp.configure({ clusterAddr: rns.clusterAddr, clusterAddr6: '::' });
      assert.equal(run(syn6({ dport: 444, sport: 40002 })).reason, 'drop_no_route', 'nothing to send from');
    } finally {
      fp.configure({ clusterAddr: rns.clusterAddr, clusterAddr6: CLUSTER6 });
      fp.removeService(svc);
    }
  });

  test('next hops of IPv6 targets: no neighbour, egress not enabled, the same interface, forwarding off', () => {
    const svc = (port: number): Service => ({ vip: VIP6, port, protocol: 'tcp' });
    // A link the distributor may not redirect to, a target with no neighbour entry, one on the
    // external link itself: the IPv6 counterparts of testrun.test.ts's next-hop cases.
    nsIp(rns.ns, 'link', 'add', 'oth0', 'type', 'veth', 'peer', 'name', 'oth1');
    nsIp(rns.ns, '-6', 'addr', 'add', '2001:db8:2::1/64', 'dev', 'oth0', 'nodad');
    nsIp(rns.ns, 'link', 'set', 'oth0', 'up');
    nsIp(rns.ns, 'link', 'set', 'oth1', 'up');
    nsIp(
      rns.ns,
      '-6',
      'neigh',
      'replace',
      '2001:db8:2::5',
      'lladdr',
      '02:00:00:00:02:05',
      'dev',
      'oth0',
      'nud',
      'permanent',
    );
    nsIp(
      rns.ns,
      '-6',
      'neigh',
      'replace',
      '2001:db8::50',
      'lladdr',
      '02:00:00:00:00:50',
      'dev',
      'ext0',
      'nud',
      'permanent',
    );
    const cases: Array<[number, string, Reason, XdpAction]> = [
      [1003, '2001:db8:1::77', 'drop_no_neigh', 'drop'],
      [1004, '2001:db8:2::5', 'drop_no_egress', 'drop'],
      [1005, '2001:db8::50', 'fwd_tx', 'tx'],
    ];
    const cfg = fp.nodeConfig();
    try {
      for (const [port, target, reason, action] of cases) {
        fp.setTargets(svc(port), [{ addr: target, weight: 1 }]);
        const r = run(syn6({ dport: port }));
        assert.deepEqual([r.action, r.reason], [action, reason], `port ${port}: ${target}`);
        if (action === 'tx') {
          const outer = readIpv6(r.frame.subarray(14));
          assert.deepEqual([outer.nexthdr, outer.dst], [41, target], 'tunnelled back out of the external link');
          assert.equal(r.frame.subarray(0, 6).toString('hex'), '020000000050', "to the target's MAC");
        }
      }
      // Resolved from the distributor's interface, where IPv6 forwarding is a per-interface
      // setting of its own: off there, the targets stay unresolved and the FIB says why.
      fp.config.set(0, { ...cfg, extIfindex: node.ext0, extMac: '02:00:00:00:00:02' });
      sysctl(rns.ns, 'net.ipv6.conf.ext0.forwarding', '0');
      fp.resolveTargets();
      assert.ok(
        fp.nexthops().every((n) => !n.resolved || !n.addr.includes(':')),
        'no IPv6 target resolved while IPv6 forwarding is off',
      );
      const r = run(syn6({ dport: 1005 }));
      assert.deepEqual([r.action, r.reason], ['drop', 'drop_fwd_disabled']);
      const v4 = fp.nexthops().find((n) => n.addr === TARGETS4[0]);
      assert.ok(v4?.resolved, 'IPv4 targets are not affected');
    } finally {
      sysctl(rns.ns, 'net.ipv6.conf.ext0.forwarding', '1');
      fp.config.set(0, cfg);
      for (const [port] of cases) fp.removeService(svc(port));
      fp.resolveTargets();
      nsIp(rns.ns, 'link', 'del', 'oth0');
    }
  });

  test('IPv6 frames: to a foreign MAC on the external interface, or on an unconfigured node, pass untouched', () => {
    const cfg = fp.nodeConfig();
    fp.config.set(0, { ...cfg, extIfindex: node.ext0, extMac: '02:00:00:00:00:02' });
    try {
      const foreign = syn6({ sport: 40010, dstMac: '02:00:00:00:99:99' });
      const r = run(foreign);
      assert.deepEqual([r.action, r.reason], ['pass', 'pass_other_host']);
      assert.deepEqual(r.frame, foreign);
      assert.equal(fp.crt6.get({ saddr: CLIENT6, daddr: VIP6, sport: 40010, dport: 80, proto: 6 }), undefined);
      assert.equal(run(syn6({ sport: 40011 })).reason, 'fwd_redirect', 'its own MAC: taken');
    } finally {
      fp.config.set(0, cfg);
    }
    fp.configure({ clusterAddr: rns.clusterAddr, clusterAddr6: CLUSTER6, enabled: false });
    try {
      const frame = syn6({ sport: 40012 });
      const r = run(frame);
      assert.deepEqual([r.action, r.reason], ['pass', 'pass_disabled']);
      assert.deepEqual(r.frame, frame);
    } finally {
      fp.configure({ clusterAddr: rns.clusterAddr, clusterAddr6: CLUSTER6 });
    }
  });

  test('TIMEDAFFINITY: an IPv6 client keeps its target for new connections', () => {
    const svc: Service = { vip: VIP6, port: 445, protocol: 'tcp' };
    fp.setTargets(svc, equal6, { affinitySec: 60 });
    try {
      const first = assertIn6(run(syn6({ dport: 445, sport: 45000 })).frame, syn6({ dport: 445, sport: 45000 }));
      for (let sport = 45001; sport < 45010; sport++) {
        const f = syn6({ dport: 445, sport });
        assert.equal(assertIn6(run(f).frame, f), first, `sport ${sport}`);
      }
      const [, a] = [...fp.affinity6.entries()].find(([k]) => k.client === CLIENT6 && k.svcId === fp.serviceId(svc))!;
      assert.equal(a.target, first);
    } finally {
      fp.removeService(svc);
    }
  });

  test('fencing: past the deadline, traffic to the IPv6 DVIPA and Neighbour Solicitations for it are dropped', () => {
    const ns = (target: string) =>
      buildFrame6({
        saddr: CLIENT6,
        daddr: 'ff02::1:ff10:10',
        protocol: 'icmpv6',
        icmpType: 135,
        icmpBody: Buffer.concat([Buffer.alloc(4), parseIpv6(target)]),
        dstMac: '33:33:ff:10:00:10',
      });
    assert.deepEqual(run(ns(VIP6)).reason, 'pass_not_service', 'not fenced: the stack answers');
    fp.setFence(VIP6, FENCE_EXPIRED);
    try {
      assert.deepEqual([run(ns(VIP6)).action, run(ns(VIP6)).reason], ['drop', 'drop_fenced_arp']);
      assert.equal(run(ns('2001:db8::2')).reason, 'pass_not_service', 'others answered');
      assert.deepEqual([run(syn6()).action, run(syn6()).reason], ['drop', 'drop_fenced']);
      // Handed over (a drain): Neighbour Solicitations dropped at once, traffic forwarded.
      fp.setFence(VIP6, (process.hrtime.bigint() + 10_000_000_000n) | FENCE_DRAIN);
      assert.deepEqual([run(ns(VIP6)).action, run(ns(VIP6)).reason], ['drop', 'drop_fenced_arp'], 'draining: NS');
      assert.equal(run(syn6({ sport: 40004 })).reason, 'fwd_redirect', 'draining: traffic');
    } finally {
      fp.setFence(VIP6, undefined);
    }
    assert.equal(run(syn6({ sport: 40005 })).reason, 'fwd_redirect');
  });
});

test('new-flow rate guard on the IPv6 paths: over the rate a new flow is hashed, forwarded, counted, not inserted', () => {
  const id = fp.serviceId(web6)!;
  // A budget of 1 per second per CPU: the second new flow of the window is over it (the test
  // runs take well under a second; a window boundary in between gives one more insert).
  fp.configure({ clusterAddr: rns.clusterAddr, clusterAddr6: CLUSTER6, maxNewFlows: 1 });
  try {
    const before = fp.serviceStats(id);
    const flows = [45001, 45002, 45003].map((sport) => ({ saddr: CLIENT6, daddr: VIP6, sport, dport: 80, proto: 6 }));
    for (const f of flows) {
      const frame = syn6({ sport: f.sport });
      const r = run(frame);
      assert.deepEqual([r.action, r.reason], ['redirect', 'fwd_redirect'], 'guarded flows are still forwarded');
      assert.equal(assertIn6(r.frame, frame), predicted(equal6, f), 'where Maglev puts it');
    }
    const after = fp.serviceStats(id);
    const inserted = flows.filter((f) => fp.crt6.get(f) !== undefined).length;
    assert.equal(after.crtGuarded - before.crtGuarded, BigInt(flows.length - inserted));
    assert.ok(inserted >= 1 && inserted <= 2, `inserted ${inserted} of 3`);
    assert.equal(after.crtNew - before.crtNew, BigInt(inserted));
  } finally {
    fp.configure({ clusterAddr: rns.clusterAddr, clusterAddr6: CLUSTER6, maxNewFlows: 0 });
  }
});

describe('IPv4 flows to IPv6 targets (IPv4-in-IPv6)', () => {
  const VIP4 = '192.0.2.30';
  const web4: Service = { vip: VIP4, port: 80, protocol: 'tcp' };
  const mixed = [...equal6, ...v4Targets];
  const syn4 = (sport: number, extra: Partial<Parameters<typeof buildFrame>[0]> = {}) =>
    buildFrame({
      saddr: ROUTER_NET.client,
      daddr: VIP4,
      sport,
      dport: 80,
      tcpFlags: { syn: true },
      df: true,
      ...extra,
    });
  const flowOf = (sport: number) => ({ saddr: ROUTER_NET.client, daddr: VIP4, sport, dport: 80, proto: 6 });

  before(() => fp.setTargets(web4, mixed));
  after(() => fp.removeService(web4));

  /** The target of a forwarded frame, IPv6 (checked as IPv4-in-IPv6) or IPv4. */
  function targetOf(out: Buffer, input: Buffer): string {
    if (out.readUInt16BE(12) === ETH_P_IP) return parseFrame(out).ipv4!.dst;
    const outer = readIpv6(out.subarray(14));
    assert.equal(outer.nexthdr, 4, 'IPv4 in IPv6');
    assert.equal(outer.src, CLUSTER6);
    assert.equal(outer.payloadLength, input.length - 14);
    assert.deepEqual(out.subarray(54), input.subarray(14), 'inner packet carried unchanged');
    return outer.dst;
  }

  test("each flow goes to its Maglev target in that target's family; IPv6 targets keep their CRT entries in crt6", () => {
    const seen = new Set<string>();
    for (let sport = 50000; sport < 50040; sport++) {
      const frame = syn4(sport);
      const r = run(frame);
      assert.equal(r.reason, 'fwd_redirect');
      const target = targetOf(r.frame, frame);
      assert.equal(target, predictedV4(mixed, flowOf(sport)), `sport ${sport}`);
      seen.add(target);
      if (TARGETS6.includes(target)) {
        assert.equal(fp.crt6.get(flowOf(sport))?.target, target);
        assert.equal(fp.crt.get(flowOf(sport)), undefined);
      } else assert.equal(fp.crt.get(flowOf(sport))?.target, target);
    }
    assert.ok(
      [...seen].some((t) => TARGETS6.includes(t)) && [...seen].some((t) => TARGETS4.includes(t)),
      'both families used',
    );
  });

  test('an established IPv4 connection to an IPv6 target stays there when the weights change', () => {
    const sport = [...Array(40).keys()]
      .map((i) => 51000 + i)
      .find((p) => TARGETS6.includes(predictedV4(mixed, flowOf(p))))!;
    const target = targetOf(run(syn4(sport)).frame, syn4(sport));
    const id = fp.serviceId(web4)!;
    const hits = fp.serviceStats(id).crtHit;
    fp.setTargets(
      web4,
      mixed.map((t) => ({ ...t, weight: t.addr === target ? 0 : 1 })),
    );
    try {
      const ack = syn4(sport, { tcpFlags: { ack: true }, payload: 50 });
      assert.equal(targetOf(run(ack).frame, ack), target);
      assert.equal(fp.serviceStats(id).crtHit, hits + 1n);
    } finally {
      fp.setTargets(web4, mixed);
    }
  });

  test('too big once in IPv6: ICMP fragmentation needed with DF, else a counted drop', () => {
    const sport = [...Array(40).keys()]
      .map((i) => 52000 + i)
      .find((p) => TARGETS6.includes(predictedV4(mixed, flowOf(p))))!;
    const big = syn4(sport, { tcpFlags: { ack: true }, payload: 1500 - 20 - 20 - 30 });
    const r = run(big);
    assert.deepEqual([r.action, r.reason], ['tx', 'tx_frag_needed']);
    const icmp = parseFrame(r.frame).ipv4!;
    assert.deepEqual([icmp.src, icmp.dst, icmp.icmp?.type, icmp.icmp?.code], [VIP4, ROUTER_NET.client, 3, 4]);
    assert.equal(icmp.icmp?.mtu, 1500 - 40, 'the IPv6 outer header taken off the MTU');
    assert.ok(icmp.icmp?.checksumOk);
    const noDf = syn4(sport, { tcpFlags: { ack: true }, payload: 1500 - 20 - 20 - 30, df: false });
    assert.deepEqual([run(noDf).action, run(noDf).reason], ['drop', 'drop_too_big']);
  });
});

describe('IPv6 decap', () => {
  const XCF4 = '198.18.1.11';
  const XCF6 = '2001:db8:1::11';
  const ROUTER6 = CLUSTER6;

  before(() => {
    // The same node plays the target here: its decap reads the target maps only.
    fp.configure({ clusterAddr: XCF4, clusterAddr6: XCF6 });
    fp.serve(VIP6);
    fp.serve('192.0.2.10');
    fp.allowDecap(
      [ROUTER_NET.clusterAddr, ROUTER6],
      [
        { vip: VIP6, port: 80, protocol: 'tcp' },
        { vip: '192.0.2.10', port: 80, protocol: 'tcp' },
      ],
    );
  });
  after(() => {
    fp.configure({ clusterAddr: rns.clusterAddr, clusterAddr6: CLUSTER6 });
  });

  const inner6 = (extra: Partial<Frame6Spec> = {}) => syn6({ sport: 46000, ...extra }).subarray(14);
  const inner4 = () =>
    buildFrame({ saddr: '198.18.0.1', daddr: '192.0.2.10', sport: 46000, dport: 80, tcpFlags: { syn: true } }).subarray(
      14,
    );
  const in6 = (inner: Buffer, nh: number, src: string = ROUTER6, dst = XCF6, vlan?: number) => {
    const outer = Buffer.alloc(40);
    outer.writeUInt32BE(0x60000000, 0);
    outer.writeUInt16BE(inner.length, 4);
    outer[6] = nh;
    outer[7] = 64;
    parseIpv6(src).copy(outer, 8);
    parseIpv6(dst).copy(outer, 24);
    return ethernetAround(Buffer.concat([outer, inner]), ETH_P_IPV6, { vlan });
  };
  const in4 = (inner: Buffer, src: string = ROUTER_NET.clusterAddr, dst = XCF4) =>
    ethernetAround(buildIpv4({ saddr: src, daddr: dst, proto: 41, df: true }, inner), ETH_P_IP);

  test('strips all three IPv6 forms, keeping L2 with the inner family as its type', () => {
    const cases: Array<[string, Buffer, Buffer, number, number]> = [
      ['IPv6 in IPv6', in6(inner6(), 41), inner6(), ETH_P_IPV6, 14],
      ['IPv6 in IPv6, tagged', in6(inner6(), 41, ROUTER6, XCF6, 9), inner6(), ETH_P_IPV6, 18],
      ['IPv6 in IPv4', in4(inner6()), inner6(), ETH_P_IPV6, 14],
      ['IPv4 in IPv6', in6(inner4(), 4), inner4(), ETH_P_IP, 14],
    ];
    for (const [what, frame, inner, type, l2] of cases) {
      const r = run(frame, 'decap');
      assert.deepEqual([r.action, r.reason], ['pass', 'decap'], what);
      assert.deepEqual(r.frame.subarray(0, 12), frame.subarray(0, 12), `${what}: MACs kept`);
      assert.equal(r.frame.readUInt16BE(l2 - 2), type, `${what}: ethertype of the inner family`);
      assert.deepEqual(r.frame.subarray(l2), inner, `${what}: exactly the inner packet`);
    }
    const got = fp.receivedStats().find((x) => x.vip === VIP6 && x.port === 80);
    assert.ok(got && got.packets >= 3n, 'counted per IPv6 DVIPA:port');
  });

  test('a 9000-byte IPv6-in-IPv6 frame goes up whole without its outer header', () => {
    const inner = inner6({ sport: 46100, payload: 9000 - 40 - 40 - 20 });
    const frame = in6(inner, 41);
    assert.equal(frame.length, 14 + 9000);
    const r = run(frame, 'decap');
    assert.deepEqual([r.action, r.reason], ['pass', 'decap']);
    assert.deepEqual(r.frame.subarray(14), inner, 'the whole inner packet');
  });

  test('only from its routing nodes, only to distributed ports, only to its addresses', () => {
    const cases: Array<[string, Buffer, XdpAction, Reason]> = [
      ['IPv6 outer from a stranger', in6(inner6(), 41, '2001:db8:66::1'), 'drop', 'decap_drop_not_router'],
      ['IPv4 outer from a stranger', in4(inner6(), '198.18.9.9'), 'drop', 'decap_drop_not_router'],
      ['to an undistributed port', in6(inner6({ dport: 22 }), 41), 'drop', 'decap_drop_not_service'],
      [
        'an inner fragment',
        in6(inner6({ ext: [{ type: 'fragment', more: true }] }), 41),
        'drop',
        'decap_drop_not_service',
      ],
      ['to a DVIPA not served here', in6(inner6({ daddr: '2001:db8:10::99' }), 41), 'pass', 'decap_pass_not_ours'],
      ['to another outer address', in6(inner6(), 41, ROUTER6, '2001:db8:1::99'), 'pass', 'decap_pass_not_ours'],
      ['not a tunnel', syn6(), 'pass', 'decap_pass_not_ours'],
      ['inner header broken', in6(Buffer.alloc(40, 0x45), 41), 'pass', 'decap_pass_malformed'],
    ];
    for (const [what, frame, action, reason] of cases) {
      const r = run(frame, 'decap');
      assert.deepEqual([r.action, r.reason], [action, reason], what);
      if (action === 'pass') assert.deepEqual(r.frame, frame, `${what}: unchanged`);
    }
  });
});

test('jumbo IPv6 frames (xdp.frags): packet too big for a 1500 egress, forwarded whole at 9000, decapsulated whole', () => {
  const JUMBO = 9000;
  // Exactly a 9000-byte packet once in IPv6.
  const big = syn6({ sport: 49000, syn: false, ack: true, payload: JUMBO - 40 - 40 - 20 });
  assert.equal(big.length, 14 + JUMBO - 40);
  const ptb = run(big);
  assert.deepEqual([ptb.action, ptb.reason], ['tx', 'tx_pkt_too_big']);
  assert.equal(ptb.frame.length, 14 + 40 + 8 + 1232, "the jumbo frame's fragments cut away");
  assert.equal(ptb.frame.readUInt32BE(14 + 40 + 4), 1500 - 40);
  nsIp(rns.ns, 'link', 'set', 'int0', 'mtu', String(JUMBO));
  fp.resolveTargets();
  try {
    const r = run(big);
    assert.deepEqual([r.action, r.reason], ['redirect', 'fwd_redirect']);
    assert.equal(r.frame.length, big.length + 40);
    assertIn6(r.frame, big);
    const over = run(syn6({ sport: 49000, syn: false, ack: true, payload: JUMBO - 40 - 40 - 20 + 1 }));
    assert.deepEqual([over.reason, over.frame.readUInt32BE(14 + 40 + 4)], ['tx_pkt_too_big', JUMBO - 40]);
  } finally {
    nsIp(rns.ns, 'link', 'set', 'int0', 'mtu', '1500');
    fp.resolveTargets();
  }
});

test('random and mutated IPv6 frames never crash or abort; each gets one counted verdict', () => {
  let seed = 4242;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const valid = [
    syn6({ sport: 48000 }),
    syn6({ sport: 48001, ext: [{ type: 'hop' }, { type: 'dest', bodyLength: 22 }] }),
    syn6({ sport: 48002, ext: [{ type: 'fragment', more: true }] }),
    buildFrame6({ protocol: 'udp', saddr: CLIENT6, daddr: VIP6, dport: 53, payload: 20, vlan: 3 }),
    syn6({ sport: 48003, payload: 1500 }),
  ];
  const verdicts = new Map<string, number>();
  for (let i = 0; i < 1500; i++) {
    let frame: Buffer;
    if (i % 2) {
      frame = Buffer.from(valid[i % valid.length]);
      for (let k = 0; k < 1 + Math.floor(rand() * 4); k++) {
        // Mostly in the headers, where the parser looks.
        const at = 12 + Math.floor(rand() * Math.min(frame.length - 12, 100));
        frame[at] = Math.floor(rand() * 256);
      }
      if (rand() < 0.3) frame = frame.subarray(0, 14 + Math.floor(rand() * (frame.length - 14)));
    } else {
      frame = Buffer.from(Array.from({ length: 14 + Math.floor(rand() * 160) }, () => Math.floor(rand() * 256)));
      frame.writeUInt16BE(ETH_P_IPV6, 12);
      if (rand() < 0.7) frame[14] = 0x60 | (frame[14] & 0x0f);
    }
    for (const prog of ['distributor', 'decap'] as const) {
      const r = run(frame, prog);
      assert.notEqual(r.action, 'aborted', `frame ${i} (${prog})`);
      verdicts.set(`${prog}:${r.reason}`, (verdicts.get(`${prog}:${r.reason}`) ?? 0) + 1);
      if (prog === 'distributor' && r.action === 'redirect') {
        const outer = readIpv6(r.frame.subarray(14));
        assert.equal(outer.nexthdr, 41, `frame ${i}: redirected frames are tunnelled`);
        assert.ok(TARGETS6.includes(outer.dst), `frame ${i}: to a target`);
      }
    }
  }
  assert.ok((verdicts.get('distributor:pass_malformed') ?? 0) > 0, 'malformed frames seen and counted');
});
