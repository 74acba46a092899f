/*
 * Every documented verdict of the distributor and the decap program, on the real kernel
 * with BPF_PROG_TEST_RUN: frames in, frames out, parsed and checked in TypeScript. FIB
 * lookups are real: the runs happen inside a routing-node namespace with routes and
 * neighbour entries for the targets.
 */
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { FastPath } from '../../src/dataplane/fastpath.js';
import { serviceName, type Service } from '../../src/net/service.js';
import {
  CrtOrigin,
  crtKey,
  FENCE_DRAIN,
  FENCE_EXPIRED,
  flow as flowCodec,
  SVC_UNFENCED,
  svcKey,
  u32,
  type Reason,
} from '../../src/dataplane/structs.js';
import { MAGLEV_SIZE } from '../../src/tables/maglev.js';
import { svcSlotOf, SVC_PROBES } from '../../src/tables/svc-index.js';
import { IPPROTO } from '../../src/net/flow.js';
import { runXdp, type XdpAction } from '../../src/dataplane/testrun.js';
import { ROUTER_NET, type RouterNs } from '../../src/lab/router-ns.js';
import { netnsPath, nsIp, sysctl } from '../../src/lab/netns.js';
import { buildFrame, buildIpv4, buildRawFrame, parseFrame, type FrameSpec } from '../../src/net/packet.js';
import { buildMaglev } from '../../src/tables/maglev.js';
import { flowHash } from '../../src/tables/flowhash.js';
import { crtHashAt, crtKeyOf, crtSetOfHash, type CrtKey } from '../../src/tables/crt-hash.js';
import * as crypto from 'node:crypto';
import { BpfMap } from '../../src/dataplane/map.js';
import { formatIpv4 } from '../../src/net/addr.js';
import { requireRoot, scratchPinRoot } from '../helpers/env.js';
import { assertUdpNeverConfirmed, openRoutingNode, type RoutingNode } from '../helpers/routing-node.js';
import { loopFlow } from '../helpers/testrun-loop.js';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const VIP = '192.0.2.10';
const VIP_ALL_PORTS = '192.0.2.20';
const TARGETS = ['198.18.1.11', '198.18.1.12', '198.18.1.13'];
const web: Service = { vip: VIP, port: 80, protocol: 'tcp' };
const dns: Service = { vip: VIP, port: 53, protocol: 'udp' };
const anyPort: Service = { vip: VIP_ALL_PORTS, port: 0, protocol: 'tcp' };
const CLIENT = ROUTER_NET.client;

let node: RoutingNode;
let rns: RouterNs;
let fp: FastPath;
let ext0: number;
const run = (frame: Buffer, prog?: 'distributor' | 'decap', on?: FastPath) => node.run(frame, prog, on);

function syn(extra: Partial<FrameSpec> = {}): Buffer {
  return buildFrame({
    saddr: CLIENT,
    daddr: VIP,
    sport: 40000,
    dport: 80,
    tcpFlags: { syn: true },
    df: true,
    ...extra,
  });
}

/** Where the data plane must place a flow when it has no CRT entry. */
function predicted(
  targets: Array<{ addr: string; weight: number }>,
  f: { saddr: string; daddr: string; sport: number; dport: number; proto: number },
): string {
  return formatIpv4(buildMaglev(targets)[flowHash(f) % MAGLEV_SIZE]);
}

const equal = TARGETS.map((addr) => ({ addr, weight: 1 }));

/** Checks an encapsulated output frame and returns its target. */
function assertEncapsulated(out: Buffer, input: Buffer, l2in = 14): string {
  const p = parseFrame(out);
  assert.equal(p.error, undefined, p.error);
  const outer = p.ipv4!;
  assert.equal(p.eth!.vlan, undefined, 'forwarded frames leave untagged');
  assert.equal(outer.protocol, 4);
  assert.equal(outer.src, ROUTER_NET.clusterAddr);
  assert.ok(TARGETS.includes(outer.dst), `target ${outer.dst}`);
  assert.ok(outer.checksumOk, 'outer header checksum');
  assert.equal(outer.ihl, 20);
  assert.ok(outer.df);
  assert.equal(outer.ttl, 64);
  assert.equal(outer.totalLength, input.length - l2in + 20);
  assert.deepEqual(out.subarray(34), input.subarray(l2in), 'inner packet carried unchanged');
  assert.equal(
    p.eth!.dst,
    `02:00:00:00:01:${(TARGETS.indexOf(outer.dst) + 16).toString(16)}`,
    'next hop MAC from the FIB',
  );
  assert.ok(outer.inner?.tcp?.checksumOk || outer.inner?.udp?.checksumOk, 'inner transport checksum still valid');
  return outer.dst;
}

/**
 * Starts another process that runs the distributor on `pinRoot` in the routing node's namespace,
 * sending SYNs of new flows to `vip`:80 (test/helpers/testrun-loop.ts; `args`: MS [STOP_FILE
 * MIN_RUNS]), and waits until it runs. `sent` gives each run's target, in order, once it ended
 * well. It is killed when the test ends, passed or not: it would count verdicts of its own.
 */
async function startLoop(t: TestContext, pinRoot: string, vip: string, ...args: string[]) {
  const loop = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'helpers', 'testrun-loop.js');
  const child = spawn(
    'nsenter',
    [`--net=${netnsPath(rns.ns)}`, process.execPath, loop, pinRoot, String(ext0), vip, '80', ...args],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  t.after(() => child.kill('SIGKILL'));
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  let exited = false;
  const done = new Promise<number | null>((resolve) => child.once('exit', resolve)).finally(() => (exited = true));
  const end = Date.now() + 60000;
  while (!out.startsWith('ready\n')) {
    if (Date.now() > end) assert.fail(`the loop did not start: ${out}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  const sent = async () => {
    assert.equal(await done, 0);
    return JSON.parse(out.slice('ready\n'.length)) as string[];
  };
  return { exited: () => exited, sent };
}

before(() => {
  requireRoot();
  node = openRoutingNode('tr', { targets: TARGETS, crtMaxEntries: 65536 });
  ({ rns, fp, ext0 } = node);
  // An interface the distributor may not redirect to, and an unresolved neighbour.
  nsIp(rns.ns, 'link', 'add', 'oth0', 'type', 'veth', 'peer', 'name', 'oth1');
  nsIp(rns.ns, 'addr', 'add', '198.18.2.1/24', 'dev', 'oth0');
  nsIp(rns.ns, 'link', 'set', 'oth0', 'up');
  nsIp(rns.ns, 'link', 'set', 'oth1', 'up');
  nsIp(rns.ns, 'neigh', 'replace', '198.18.2.5', 'lladdr', '02:00:00:00:02:05', 'dev', 'oth0', 'nud', 'permanent');
  nsIp(rns.ns, 'neigh', 'replace', '198.18.0.50', 'lladdr', '02:00:00:00:00:50', 'dev', 'ext0', 'nud', 'permanent');
  fp.setTargets(web, equal);
  fp.setTargets(dns, equal);
  fp.setTargets(anyPort, equal);
});

after(() => node?.close());

describe('distributor', () => {
  test('a SYN to DVIPA:port is encapsulated to the Maglev target and gets a CRT entry', () => {
    const frame = syn({ sport: 40001, payload: 0 });
    const r = run(frame);
    assert.equal(r.action, 'redirect');
    assert.equal(r.reason, 'fwd_redirect');
    const target = assertEncapsulated(r.frame, frame);
    const flow = { saddr: CLIENT, daddr: VIP, sport: 40001, dport: 80, proto: 6 };
    assert.equal(target, predicted(equal, flow), 'user space and kernel agree on hash and table');
    const entry = fp.crt.get(flow)!;
    assert.equal(entry.target, target);
    assert.equal(entry.origin, CrtOrigin.First);
    assert.ok(entry.createdNs > 0n);
  });

  test('the CRT keeps a connection on its target when the weights change; new flows follow the new table', () => {
    const flow = { saddr: CLIENT, daddr: VIP, sport: 40002, dport: 80, proto: 6 };
    const first = assertEncapsulated(run(syn({ sport: 40002 })).frame, syn({ sport: 40002 }));
    const others = TARGETS.filter((t) => t !== first);
    const reweighted = others.map((addr) => ({ addr, weight: 1 }));
    fp.setTargets(web, reweighted);
    try {
      const ack = buildFrame({
        saddr: CLIENT,
        daddr: VIP,
        sport: 40002,
        dport: 80,
        tcpFlags: { ack: true },
        payload: 100,
      });
      const before = fp.serviceStats(fp.serviceId(web)!).crtHit;
      const r = run(ack);
      assert.equal(assertEncapsulated(r.frame, ack), first, 'established connection stays');
      assert.equal(fp.serviceStats(fp.serviceId(web)!).crtHit, before + 1n);
      assert.equal(fp.crt.get(flow)!.target, first);

      const fresh = syn({ sport: 40003 });
      assert.ok(
        others.includes(assertEncapsulated(run(fresh).frame, fresh)),
        'a new connection avoids the removed target',
      );
    } finally {
      fp.setTargets(web, equal);
    }
  });

  test('a retransmitted SYN keeps the target its first one got, counted as a CRT hit, not a new connection', () => {
    // A SYN inserts without looking first; the insert finds the entry of a retransmission.
    const flow = { saddr: CLIENT, daddr: VIP, sport: 40004, dport: 80, proto: 6 };
    const first = assertEncapsulated(run(syn({ sport: 40004 })).frame, syn({ sport: 40004 }));
    const entry = fp.crt.get(flow)!;
    const id = fp.serviceId(web)!;
    // Its target out of the table: a SYN hashed afresh could not go there.
    fp.setTargets(
      web,
      TARGETS.filter((t) => t !== first).map((addr) => ({ addr, weight: 1 })),
    );
    try {
      const stats = fp.serviceStats(id);
      const conns = fp.targetCounts(id, first).conns;
      const again = syn({ sport: 40004 });
      assert.equal(assertEncapsulated(run(again).frame, again), first, 'the retransmission went where the SYN went');
      const now = fp.serviceStats(id);
      assert.deepEqual(
        [now.crtHit - stats.crtHit, now.crtMiss - stats.crtMiss, now.crtNew - stats.crtNew],
        [1n, 0n, 0n],
        'one CRT hit, no miss, no new connection',
      );
      assert.equal(fp.targetCounts(id, first).conns, conns, 'TOTALCONN counts the connection once');
      assert.deepEqual(fp.crt.get(flow), entry, "the entry is the first SYN's");
    } finally {
      fp.setTargets(web, equal);
    }
  });

  /** A flow to the VIP's port 80 from `saddr`:`sport`. */
  const flowAt = (saddr: number, sport: number) => ({
    saddr: formatIpv4(saddr),
    daddr: VIP,
    sport,
    dport: 80,
    proto: 6,
  });

  /** Sends flow `f`'s packet with these flags (an ACK carries 10 bytes); returns the target it went to. */
  const send = (f: ReturnType<typeof flowAt>, tcpFlags: FrameSpec['tcpFlags']) => {
    const frame = buildFrame({ ...f, tcpFlags, df: true, payload: tcpFlags?.ack ? 10 : 0 });
    return assertEncapsulated(run(frame).frame, frame);
  };
  const recoveredNow = () => fp.serviceStats(fp.serviceId(web)!).recovered;
  /** Flow `f` still in the slot its SYN took, to `target`, and no packet recovered by hash since `recovered`. */
  const assertKept = (f: ReturnType<typeof flowAt>, target: string, recovered: bigint, message: string) =>
    assert.deepEqual(
      [fp.crt.get(f)?.target, fp.crt.get(f)?.origin, recoveredNow()],
      [target, CrtOrigin.First, recovered],
      message,
    );

  /** 16 flows from 198.18.0.0/15 that crt_hash under `k` puts in `home`, the set of one flow among fp.crt's sets. */
  function sameSet(home: number, k: CrtKey): Array<ReturnType<typeof flowAt>> {
    const same: Array<ReturnType<typeof flowAt>> = [];
    // One encoded flow, its source and port rewritten in place: millions of tries take a second.
    const key = flowCodec.encode(flowAt(0, 0));
    for (let sport = 42000; same.length < 16; sport++)
      for (let a = 0xc6120001; a < 0xc6140000 && same.length < 16; a++) {
        key.writeUInt32BE(a, 0);
        key.writeUInt16BE(sport, 8);
        if (crtSetOfHash(crtHashAt(key, 0, 6, k), fp.crt.sets) === home) same.push(flowAt(a, sport));
      }
    return same;
  }

  test('a full set of the CRT cache gives up a slot no packet used: a flow that keeps sending outlives a flood into its set', () => {
    // Flows that share one set (4 slots): from the fifth on, every insert takes a slot.
    const same = sameSet(fp.crt.setIndex(flowAt(0xc6120000, 42000)), fp.crt.key);
    const kept = flowAt(0xc6120000, 42000);
    for (const f of [kept, ...same]) fp.crt.delete(f);
    const target = send(kept, { syn: true });
    const recovered = recoveredNow();
    for (const f of same) {
      send(kept, { ack: true });
      send(f, { syn: true });
    }
    // Evicted, its next packet would have been recovered by hash into a new slot: to the same target, but counted.
    assertKept(kept, target, recovered, 'the flow that kept sending kept its slot');
    // The hand goes round: the slots no packet used go in the order they were filled.
    assert.deepEqual(
      same.filter((f) => fp.crt.get(f)),
      same.slice(-3),
      `the set's other slots hold the last 3 of the ${same.length} SYNs sent into it`,
    );
    for (const f of [kept, ...same]) fp.crt.delete(f);
  });

  test("a new flow in a set full of flows no packet followed keeps its slot over the set's next 3 inserts", () => {
    // A SYN flood's leftovers fill the set; then a client's SYN, and 3 more new flows before its ACK.
    const [client, ...others] = sameSet(fp.crt.setIndex(flowAt(0xc6120000, 42200)), fp.crt.key);
    const flood = others.slice(0, 4);
    const after = others.slice(4, 7);
    for (const f of [client, ...others]) fp.crt.delete(f);
    for (const f of flood) send(f, { syn: true });
    const target = send(client, { syn: true });
    for (const f of after) send(f, { syn: true });
    const recovered = recoveredNow();
    send(client, { ack: true });
    assertKept(client, target, recovered, "the client's ACK found its SYN's slot");
    assert.deepEqual(
      flood.map((f) => fp.crt.get(f) !== undefined),
      [false, false, false, false],
      'the flood gave up all four of its slots to the client and the 3 after it',
    );
    for (const f of [client, ...others]) fp.crt.delete(f);
  });

  test("SYNs aimed at an idle flow's set without the cache's key miss it: the flow keeps its slot", () => {
    const victim = flowAt(0xc6120000, 42100);
    fp.crt.delete(victim);
    const syn1 = buildFrame({ ...victim, tcpFlags: { syn: true }, df: true });
    const target = assertEncapsulated(run(syn1).frame, syn1);
    // What an outsider can compute: the sets under the previous version's unkeyed multipliers,
    // or under another node's key (the test's own draw); 16 SYNs each would have taken its set.
    const guesses: Array<[string, CrtKey]> = [
      ['unkeyed', { saddrMul: 0x9e3779b1, daddrMul: 0x85ebca77, portsMul: 0xc2b2ae3d, salt: 0 }],
      ['another key', crtKeyOf(crypto.randomBytes(16))],
    ];
    for (const [guess, k] of guesses) {
      const aimed = sameSet(crtSetOfHash(crtHashAt(flowCodec.encode(victim), 0, 6, k), fp.crt.sets), k);
      for (const f of aimed) {
        const s = buildFrame({ ...f, tcpFlags: { syn: true }, df: true });
        assertEncapsulated(run(s).frame, s);
      }
      const hit = aimed.filter((f) => fp.crt.setIndex(f) === fp.crt.setIndex(victim)).length;
      assert.ok(hit < 4, `${guess}: ${hit} of the 16 SYNs landed in the victim's set`);
      assert.deepEqual([fp.crt.get(victim)?.target, fp.crt.get(victim)?.origin], [target, CrtOrigin.First], guess);
      for (const f of aimed) fp.crt.delete(f);
    }
    fp.crt.delete(victim);
  });

  test('with no key in crt_key nothing is cached: a SYN goes to its Maglev target, counted as hashed alone', () => {
    const keys = new BpfMap('crt_key', fp.crt.keyFd, u32, crtKey);
    const flow = { saddr: CLIENT, daddr: VIP, sport: 40005, dport: 80, proto: 6 };
    const id = fp.serviceId(web)!;
    const frame = syn({ sport: 40005 });
    keys.set(0, { saddrMul: 0, daddrMul: 0, portsMul: 0, salt: 0 });
    try {
      const before = fp.serviceStats(id);
      const cached = fp.crt.count();
      assert.equal(assertEncapsulated(run(frame).frame, frame), predicted(equal, flow));
      const now = fp.serviceStats(id);
      assert.deepEqual([now.crtGuarded - before.crtGuarded, now.crtNew - before.crtNew], [1n, 0n]);
      assert.equal(fp.crt.count(), cached, 'nothing cached');
    } finally {
      keys.set(0, fp.crt.key);
    }
    run(frame);
    assert.equal(fp.crt.get(flow)?.origin, CrtOrigin.First, 'the key back, cached where user space looks');
    fp.crt.delete(flow);
  });

  test('the agent and the data plane write the cache by one protocol: neither ever takes half of a slot the other writes', async (t) => {
    // A cache of 2 sets (8 slots): another process inserts new flows as fast as it can while
    // this one writes, reads and deletes flows of its own, to a target Maglev may not pick.
    const own = scratchPinRoot('trcache');
    const small = FastPath.open({ pinRoot: own.pinRoot, crtMaxEntries: 8 });
    t.after(() => {
      small.close();
      own.remove();
    });
    small.configure({ clusterAddr: rns.clusterAddr });
    rns.inside(() => small.enableEgress('int0'));
    small.setTargets(web, equal);
    const svcId = small.serviceId(web)!;
    // Both sides take turns enough times, however slow the machine (TCG is several times slower):
    // the other process stops when this one has done its rounds and leaves the stop file.
    const ROUNDS = 1000;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvipa-trcache-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const stop = path.join(dir, 'stop');
    const other = await startLoop(t, own.pinRoot, VIP, '60000', stop, String(ROUNDS));
    const mine = Array.from({ length: 16 }, (_, i) => ({
      saddr: formatIpv4(0xc6130000 + i),
      daddr: VIP,
      sport: 7000,
      dport: 80,
      proto: 6,
    }));
    const written = {
      target: TARGETS[0],
      svcId,
      origin: CrtOrigin.Control,
      targetIdx: small.targetIndexOf(svcId, TARGETS[0]),
      createdNs: 0n,
    };
    const isMine = (f: { saddr: string }) => mine.some((m) => m.saddr === f.saddr);
    const table = buildMaglev(equal);
    const maglevTarget = (f: { saddr: string; sport: number }) =>
      formatIpv4(table[flowHash({ ...f, daddr: VIP, dport: 80, proto: 6 }) % MAGLEV_SIZE]);
    let rounds = 0;
    let theirs = 0;
    while (!other.exited()) {
      for (const f of mine) small.crt.set(f, written);
      for (const [f, e] of small.crt.entries()) {
        if (isMine(f))
          assert.deepEqual(e, written, `a slot of ours: ${f.saddr}:${f.sport} -> ${e.target} (origin ${e.origin})`);
        else {
          theirs++;
          assert.deepEqual(
            [e.target, e.origin],
            [maglevTarget(f), CrtOrigin.First],
            `a slot of the other process: ${f.saddr}:${f.sport} -> ${e.target} (origin ${e.origin})`,
          );
        }
      }
      for (const f of mine.filter((_, i) => i % 2 === rounds % 2)) small.crt.delete(f);
      if (++rounds === ROUNDS) fs.writeFileSync(stop, '');
      // The child's exit is seen between turns of the loop: one every 100 rounds.
      if (rounds % 100 === 0) await new Promise((r) => setImmediate(r));
    }
    const sent = await other.sent();
    sent.forEach((target, i) => assert.equal(target, maglevTarget(loopFlow(i)), `the other process's flow ${i}`));
    t.diagnostic(
      `${rounds} rounds of ours beside ${sent.length} SYNs of the other process; ${theirs} of its slots read`,
    );
    assert.ok(rounds >= ROUNDS && sent.length >= ROUNDS && theirs > 0, 'both wrote the same slots');
  });

  test('a mid-connection packet with no CRT entry is recovered by hash and counted', () => {
    const flow = { saddr: CLIENT, daddr: VIP, sport: 41000, dport: 80, proto: 6 };
    const ack = buildFrame({ ...flow, tcpFlags: { ack: true }, payload: 10 });
    const before = fp.serviceStats(fp.serviceId(web)!).recovered;
    const r = run(ack);
    assert.equal(assertEncapsulated(r.frame, ack), predicted(equal, flow));
    assert.equal(fp.crt.get(flow)!.origin, CrtOrigin.Recovered);
    assert.equal(fp.serviceStats(fp.serviceId(web)!).recovered, before + 1n);
  });

  test('UDP: the first datagram picks the target; a port-0 service takes every port', () => {
    const q = buildFrame({ protocol: 'udp', saddr: CLIENT, daddr: VIP, sport: 5353, dport: 53, payload: 30 });
    const r = run(q);
    assertEncapsulated(r.frame, q);
    assert.equal(fp.crt.get({ saddr: CLIENT, daddr: VIP, sport: 5353, dport: 53, proto: 17 })!.origin, CrtOrigin.First);

    for (const dport of [1, 22, 65535]) {
      const f = buildFrame({ saddr: CLIENT, daddr: VIP_ALL_PORTS, sport: 40000, dport, tcpFlags: { syn: true } });
      assertEncapsulated(run(f).frame, f);
    }
  });

  test('services whose keys start their probe at one index slot are found up to the last probe; one more is refused, nothing written', () => {
    const startOf = (o: Service) => svcSlotOf(svcKey.encode({ vip: o.vip, port: o.port, proto: IPPROTO[o.protocol] }));
    // A start slot away from the slots of the services the suite already has.
    const taken = fp.listServices().filter((o) => !o.vip.includes(':'));
    const key = (i: number): Service => ({
      vip: `192.0.2.${100 + (i % 100)}`,
      port: 1 + Math.floor(i / 100),
      protocol: 'tcp',
    });
    let first = 0;
    while (taken.some((o) => Math.abs(startOf(o) - startOf(key(first))) <= SVC_PROBES)) first++;
    const start = startOf(key(first));
    const colliding: Service[] = [];
    for (let i = first; colliding.length < SVC_PROBES + 1; i++) if (startOf(key(i)) === start) colliding.push(key(i));
    const synTo = (o: Service) => syn({ daddr: o.vip, dport: o.port, sport: 40900 });
    const last = colliding[SVC_PROBES];
    try {
      for (const o of colliding.slice(0, SVC_PROBES)) fp.setTargets(o, equal);
      // In whatever order they were placed, one of them is SVC_PROBES - 1 slots from the start.
      for (const o of colliding.slice(0, SVC_PROBES)) assert.equal(run(synTo(o)).action, 'redirect', serviceName(o));
      assert.throws(
        () => fp.setTargets(last, equal),
        new RegExp(`service index: ${serviceName(last)}: the ${SVC_PROBES} slots from ${start} are taken`),
      );
      assert.equal(fp.serviceId(last), undefined, 'the refused service was not written');
      assert.equal(run(synTo(last)).reason, 'pass_not_service', 'a probe reads no further than its bound');
      // Removing one rebuilds the index: the others are still found, the removed one is not.
      fp.removeService(colliding[1]);
      assert.equal(run(synTo(colliding[1])).reason, 'pass_not_service');
      fp.setTargets(last, equal);
      for (const o of [...colliding.slice(0, SVC_PROBES), last].filter((o) => o !== colliding[1]))
        assert.equal(run(synTo(o)).action, 'redirect', `${serviceName(o)}, the freed slot taken by another`);
    } finally {
      for (const o of colliding) fp.removeService(o);
    }
    assert.equal(run(syn()).action, 'redirect', "the suite's services are still found");
  });

  test("the index is built from the services map, not from one writer's memory: two writers on the same pins keep each other's services", () => {
    // As `dvipa fastpath apply` beside an agent: another FastPath on the node's pins.
    const other = FastPath.open({ pinRoot: fp.pinRoot, crtMaxEntries: 65536, netnsPath: netnsPath(rns.ns) });
    const theirs: Service = { vip: '192.0.2.41', port: 80, protocol: 'tcp' };
    const ours: Service = { vip: '192.0.2.42', port: 80, protocol: 'tcp' };
    const synTo = (o: Service) => syn({ daddr: o.vip, sport: 40901 });
    try {
      assert.equal(run(syn()).action, 'redirect', "opening the pins again kept the suite's services in the index");
      other.setTargets(theirs, equal);
      assert.equal(run(synTo(theirs)).action, 'redirect');
      assert.equal(run(syn()).action, 'redirect', "the other writer's index has the suite's services");
      fp.setTargets(ours, equal);
      for (const o of [theirs, ours, web]) assert.equal(run(synTo(o)).action, 'redirect', serviceName(o));
    } finally {
      other.removeService(theirs);
      fp.removeService(ours);
      other.close();
    }
    assert.equal(run(synTo(theirs)).reason, 'pass_not_service');
  });

  test('UDP is never a confirmed connection: its datagrams do not look in crt_est, and confirm leaves it out', () => {
    const flow = { saddr: CLIENT, daddr: VIP, sport: 5400, dport: 53, proto: 17 };
    const q = buildFrame({ protocol: 'udp', saddr: CLIENT, daddr: VIP, sport: 5400, dport: 53, payload: 30 });
    const svcId = fp.serviceId(dns)!;
    const hashed = predicted(equal, flow);
    assertUdpNeverConfirmed({
      fp,
      flow,
      svcId,
      hashed,
      targets: TARGETS,
      est: fp.crtEst,
      lru: fp.crt,
      send: () => assertEncapsulated(run(q).frame, q),
    });
  });

  test('traffic that is not for a distributed DVIPA:port passes untouched', () => {
    const cases: Array<[string, Buffer, Reason]> = [
      [
        'TCP to another address',
        buildFrame({ saddr: CLIENT, daddr: '198.18.0.2', dport: 22, tcpFlags: { syn: true } }),
        'pass_not_service',
      ],
      ['TCP to an undistributed port of the DVIPA', syn({ dport: 8443 }), 'pass_not_service'],
      [
        'UDP to a TCP-only port',
        buildFrame({ protocol: 'udp', saddr: CLIENT, daddr: VIP, dport: 80 }),
        'pass_not_service',
      ],
      ['ICMP echo to the DVIPA', buildFrame({ protocol: 'icmp', saddr: CLIENT, daddr: VIP }), 'pass_not_service'],
      ['ARP', buildRawFrame(0x0806, Buffer.alloc(28, 1)), 'pass_not_ipv4'],
      ['LLDP', buildRawFrame(0x88cc, Buffer.alloc(60, 0x60)), 'pass_not_ipv4'],
    ];
    for (const [what, frame, reason] of cases) {
      const r = run(frame);
      assert.equal(r.action, 'pass', what);
      assert.equal(r.reason, reason, what);
      assert.deepEqual(r.frame, frame, `${what}: frame unchanged`);
    }
  });

  test('malformed frames get their documented verdicts', () => {
    const good = syn({ sport: 42000 });
    const badIhl = Buffer.from(good);
    badIhl[14] = 0x44; // IHL 4
    const badVersion = Buffer.from(good);
    badVersion[14] = 0x65;
    const longTotal = Buffer.from(good);
    longTotal.writeUInt16BE(1500, 16);
    const l4Cut = Buffer.concat([
      good.subarray(0, 14),
      buildIpv4({ saddr: CLIENT, daddr: VIP, proto: 6 }, Buffer.alloc(10)),
    ]);
    const l4CutOther = Buffer.concat([
      good.subarray(0, 14),
      buildIpv4({ saddr: CLIENT, daddr: '198.18.0.2', proto: 6 }, Buffer.alloc(10)),
    ]);
    const cases: Array<[string, Buffer, XdpAction, Reason]> = [
      ['Ethernet header only', good.subarray(0, 14), 'pass', 'pass_malformed'],
      ['IPv4 header cut short', good.subarray(0, 30), 'pass', 'pass_malformed'],
      ['IHL below 5', badIhl, 'pass', 'pass_malformed'],
      ['IP version 6 in an IPv4 ethertype', badVersion, 'pass', 'pass_malformed'],
      ['total length beyond the frame', longTotal, 'pass', 'pass_malformed'],
      ['VLAN tag cut short', buildRawFrame(0x8100, Buffer.alloc(2)), 'pass', 'pass_malformed'],
      ['TCP header cut short, to the DVIPA', l4Cut, 'drop', 'drop_malformed_l4'],
      ['TCP header cut short, elsewhere', l4CutOther, 'pass', 'pass_not_service'],
    ];
    for (const [what, frame, action, reason] of cases) {
      const r = run(frame);
      assert.equal(r.action, action, what);
      assert.equal(r.reason, reason, what);
      if (action === 'pass') assert.deepEqual(r.frame, frame, `${what}: frame unchanged`);
    }
  });

  test('IP options and an 802.1Q tag are handled; the tag is not forwarded', () => {
    const withOptions = syn({ sport: 43000, ipOptions: Buffer.from([1, 1, 1, 0]) });
    const r = run(withOptions);
    assertEncapsulated(r.frame, withOptions);
    assert.deepEqual(parseFrame(r.frame).ipv4!.inner!.options, Buffer.from([1, 1, 1, 0]));

    const tagged = syn({ sport: 43001, vlan: 42 });
    const t = run(tagged);
    assert.equal(t.action, 'redirect');
    assertEncapsulated(t.frame, tagged, 18);

    // 802.1ad (S-tag, TPID 0x88a8): one tag, understood the same way.
    const sTagged = syn({ sport: 43002, vlan: 42 });
    sTagged.writeUInt16BE(0x88a8, 12);
    const ad = run(sTagged);
    assert.deepEqual([ad.action, ad.reason], ['redirect', 'fwd_redirect']);
    assertEncapsulated(ad.frame, sTagged, 18);
    // QinQ (an S-tag, then a C-tag): only one tag is understood, so it is not IPv4 here.
    const inner = syn({ sport: 43003, vlan: 7 });
    const qinq = Buffer.concat([inner.subarray(0, 12), Buffer.from([0x88, 0xa8, 0x00, 42]), inner.subarray(12)]);
    const q = run(qinq);
    assert.deepEqual([q.action, q.reason], ['pass', 'pass_not_ipv4']);
    assert.deepEqual(q.frame, qinq, 'untouched');
  });

  test('fragments to a distributed DVIPA are dropped; elsewhere they pass', () => {
    const firstFrag = syn({ sport: 44000, df: false, mf: true, payload: 64 });
    const laterFrag = buildFrame({ saddr: CLIENT, daddr: VIP, df: false, fragOffset: 100, payload: 8 });
    const laterFragElsewhere = buildFrame({
      saddr: CLIENT,
      daddr: '198.18.0.2',
      df: false,
      fragOffset: 100,
      payload: 8,
    });
    assert.deepEqual([run(firstFrag).action, run(firstFrag).reason], ['drop', 'drop_fragment']);
    assert.deepEqual([run(laterFrag).action, run(laterFrag).reason], ['drop', 'drop_fragment']);
    const r = run(laterFragElsewhere);
    assert.deepEqual([r.action, r.reason], ['pass', 'pass_not_service']);
    assert.deepEqual(r.frame, laterFragElsewhere);
  });

  test('too big once encapsulated: ICMP fragmentation needed back to the client when DF is set', () => {
    const big = syn({ sport: 45000, payload: 1460 }); // 1500-byte IP packet, 1520 once encapsulated
    const r = run(big);
    assert.equal(r.action, 'tx');
    assert.equal(r.reason, 'tx_frag_needed');
    const p = parseFrame(r.frame);
    assert.equal(p.error, undefined, p.error);
    assert.equal(p.eth!.dst, parseFrame(big).eth!.src, 'sent back to the sender');
    assert.equal(p.eth!.src, parseFrame(big).eth!.dst);
    assert.equal(p.ipv4!.src, VIP);
    assert.equal(p.ipv4!.dst, CLIENT);
    assert.ok(p.ipv4!.checksumOk);
    assert.equal(p.ipv4!.icmp!.type, 3);
    assert.equal(p.ipv4!.icmp!.code, 4);
    assert.equal(p.ipv4!.icmp!.mtu, 1480);
    assert.ok(p.ipv4!.icmp!.checksumOk, 'ICMP checksum');
    const quoted = p.ipv4!.icmp!.quoted!;
    assert.equal(quoted.src, CLIENT);
    assert.equal(quoted.dst, VIP);
    assert.equal(quoted.quotedPorts!.sport, 45000);
    assert.equal(r.frame.length, 14 + 20 + 8 + 20 + 8);
    assert.equal(fp.serviceStats(fp.serviceId(web)!).fragNeeded >= 1n, true);

    const tagged = run(syn({ sport: 45001, payload: 1460, vlan: 7 }));
    assert.equal(tagged.action, 'tx');
    assert.equal(parseFrame(tagged.frame).eth!.vlan, 7, 'the reply keeps the VLAN tag');
    assert.ok(parseFrame(tagged.frame).ipv4!.icmp!.checksumOk);

    const noDf = run(syn({ sport: 45002, payload: 1460, df: false }));
    assert.deepEqual([noDf.action, noDf.reason], ['drop', 'drop_too_big']);
  });

  test('no target, no route, no neighbour, egress not enabled, forwarding off: counted drops', () => {
    const svc = (port: number): Service => ({ vip: VIP, port, protocol: 'tcp' });
    const cases: Array<[number, string[], Reason, XdpAction]> = [
      [1001, [], 'drop_no_target', 'drop'],
      [1002, ['198.19.99.1'], 'drop_no_route', 'drop'],
      [1003, ['198.18.1.77'], 'drop_no_neigh', 'drop'],
      [1004, ['198.18.2.5'], 'drop_no_egress', 'drop'],
      [1005, ['198.18.0.50'], 'fwd_tx', 'tx'],
    ];
    try {
      for (const [port, targets, reason, action] of cases) {
        fp.setTargets(
          svc(port),
          targets.map((addr) => ({ addr, weight: 1 })),
        );
        const r = run(syn({ dport: port }));
        assert.deepEqual([r.action, r.reason], [action, reason], `port ${port}`);
      }
      // Next hops are resolved from the distributor's interface: forwarding off there leaves
      // them unresolved, and the data plane's own FIB lookup then says why it drops.
      const cfg = fp.nodeConfig();
      fp.config.set(0, { ...cfg, extIfindex: ext0, extMac: parseFrame(syn()).eth!.dst });
      sysctl(rns.ns, 'net.ipv4.conf.ext0.forwarding', '0');
      fp.resolveTargets();
      try {
        assert.ok(
          fp.nexthops().every((n) => !n.resolved),
          'no target resolved while forwarding is off',
        );
        const r = run(syn({ dport: 1005 }));
        assert.deepEqual([r.action, r.reason], ['drop', 'drop_fwd_disabled']);
      } finally {
        sysctl(rns.ns, 'net.ipv4.conf.ext0.forwarding', '1');
        fp.config.set(0, cfg);
        fp.resolveTargets();
      }
      const st = fp.serviceStats(fp.serviceId(svc(1002))!);
      assert.equal(st.dropped, 1n);
    } finally {
      for (const [port] of cases) fp.removeService(svc(port));
    }
  });

  test('TIMEDAFFINITY: a client keeps its target for new connections, until it expires or the target leaves', async () => {
    const svcA: Service = { vip: VIP, port: 2000, protocol: 'tcp' };
    const flowFor = (sport: number, saddr: string = CLIENT) => ({ saddr, daddr: VIP, sport, dport: 2000, proto: 6 });
    const target = (sport: number, saddr: string = CLIENT) =>
      assertEncapsulated(run(syn({ saddr, sport, dport: 2000 })).frame, syn({ saddr, sport, dport: 2000 }));
    // Source ports whose own Maglev slots pick a target other than `x`.
    const elsewhere = (x: string, ts: typeof equal, from: number) => {
      for (let p = from; ; p++) if (predicted(ts, flowFor(p)) !== x) return p;
    };
    try {
      fp.setTargets(svcA, equal, { affinitySec: 60 });
      const x = target(50000);
      const p2 = elsewhere(x, equal, 50001);
      assert.equal(target(p2), x, 'the second connection follows the first, not its own slot');
      const other = '198.18.0.77';
      assert.equal(target(p2, other), predicted(equal, flowFor(p2, other)), 'another client follows Maglev');

      const rest = equal.filter((t) => t.addr !== x);
      fp.setTargets(svcA, rest, { affinitySec: 60 });
      assert.ok(
        ![...fp.affinity.entries()].some(([k, v]) => k.client === CLIENT && v.target === x),
        'affinity to a departed target is forgotten',
      );
      const p3 = 50100;
      assert.equal(target(p3), predicted(rest, flowFor(p3)));

      // Expiry: one second of silence and the client's next connection is placed afresh.
      fp.setTargets(svcA, equal, { affinitySec: 1 });
      const y = target(50200);
      const p4 = elsewhere(y, equal, 50201);
      await new Promise((r) => setTimeout(r, 1200));
      assert.equal(target(p4), predicted(equal, flowFor(p4)), 'after expiry: its own slot');

      // Without TIMEDAFFINITY, no affinity at all.
      fp.setTargets(svcA, equal);
      const z = target(50300);
      const p5 = elsewhere(z, equal, 50301);
      assert.equal(target(p5), predicted(equal, flowFor(p5)));
    } finally {
      fp.removeService(svcA);
    }
  });

  test('the foreign-MAC filter: on the external interface only frames to its MAC or a group are taken; others pass untouched', () => {
    const own = scratchPinRoot('trmac');
    const ext = FastPath.open({ pinRoot: own.pinRoot, crtMaxEntries: 1024 });
    try {
      ext.configure({ clusterAddr: rns.clusterAddr });
      rns.inside(() => ext.enableEgress('int0'));
      ext.setTargets(web, equal);
      rns.inside(() => ext.attach('distributor', 'ext0', 'generic'));
      const mac = nsIp(rns.ns, '-j', 'link', 'show', 'ext0');
      const extMac = (JSON.parse(mac) as Array<{ address: string }>)[0].address;
      for (const [dstMac, sport, want] of [
        [extMac, 41001, 'fwd_redirect'],
        ['ff:ff:ff:ff:ff:ff', 41002, 'fwd_redirect'],
        ['01:00:5e:00:00:01', 41003, 'fwd_redirect'],
        ['02:00:00:00:99:99', 41004, 'pass_other_host'],
      ] as const) {
        const frame = syn({ sport, dstMac });
        const r = run(frame, 'distributor', ext);
        assert.equal(r.reason, want, `to ${dstMac}`);
        if (want === 'pass_other_host') {
          assert.equal(r.action, 'pass');
          assert.deepEqual(r.frame, frame, 'untouched');
          assert.equal(
            ext.crt.get({ saddr: CLIENT, daddr: VIP, sport, dport: 80, proto: 6 }),
            undefined,
            'and not placed',
          );
        }
      }
      // Another interface (a target-side one) is not filtered: the filter is the external interface's.
      const other = rns.inside(() =>
        runXdp(ext.progFd('distributor'), 'distributor', syn({ sport: 41005, dstMac: '02:00:00:00:99:99' }), {
          ingressIfindex: rns.ifindex('int0'),
        }),
      );
      assert.equal(other.action, 'tx', 'forwarded (back out of int0, where its target is)');
    } finally {
      rns.inside(() => ext.detach('distributor', 'ext0'));
      ext.close();
      own.remove();
    }
  });

  test('no packet sees half a Maglev table: another process forwarding while the table is swapped sees the old one, then the new', async (t) => {
    const svc: Service = { vip: '192.0.2.30', port: 80, protocol: 'tcp' };
    const tables = [equal, TARGETS.slice(0, 2).map((addr) => ({ addr, weight: 1 }))];
    const maglev = tables.map((t) => buildMaglev(t));
    fp.setTargets(svc, tables[0]);
    try {
      const other = await startLoop(t, fp.pinRoot, svc.vip, '2500');
      // Swap back and forth while the other process runs; the event loop is blocked meanwhile.
      let swaps = 0;
      const swapEnd = Date.now() + 1500;
      while (Date.now() < swapEnd) {
        fp.setTargets(svc, tables[++swaps % 2]);
        await new Promise((r) => setImmediate(r));
      }
      const seen = await other.sent();
      // Each flow's target in table 0 and table 1: 'a' only in the first, 'b' only in the second.
      let last = '';
      let flips = 0;
      seen.forEach((target, i) => {
        const f = loopFlow(i);
        const slot = flowHash({ saddr: f.saddr, daddr: svc.vip, sport: f.sport, dport: 80, proto: 6 }) % MAGLEV_SIZE;
        const [a, b] = maglev.map((m) => formatIpv4(m[slot]));
        assert.ok(target === a || target === b, `flow ${i}: ${target}, in neither table (${a}, ${b})`);
        if (a === b) return;
        const now = target === a ? 'a' : 'b';
        if (last && now !== last) flips++;
        last = now;
      });
      // A table written slot by slot would flip between old and new within one swap, many times.
      t.diagnostic(
        `Maglev swap: ${seen.length} runs in another process, ${swaps} swaps, ${flips} changes of table seen`,
      );
      assert.ok(flips >= 2 && flips <= swaps, `${seen.length} runs, ${swaps} swaps, ${flips} changes of table seen`);
    } finally {
      fp.removeService(svc);
    }
  });

  test('the routing node among its own targets: its flows pass unencapsulated to its own stack, and stay there', () => {
    const svcL: Service = { vip: VIP, port: 3000, protocol: 'tcp' };
    const mixed = [...equal, { addr: rns.clusterAddr, weight: 1 }];
    let local = 0;
    let remote = 0;
    try {
      fp.setTargets(svcL, mixed);
      for (let sport = 47000; sport < 47040; sport++) {
        const flow = { saddr: CLIENT, daddr: VIP, sport, dport: 3000, proto: 6 };
        const frame = syn({ sport, dport: 3000 });
        const r = run(frame);
        if (predicted(mixed, flow) !== rns.clusterAddr) {
          assertEncapsulated(r.frame, frame);
          remote++;
          continue;
        }
        assert.deepEqual([r.action, r.reason], ['pass', 'pass_local_target'], `port ${sport}`);
        assert.deepEqual(r.frame, frame, 'passed untouched');
        assert.equal(fp.crt.get(flow)!.target, rns.clusterAddr);
        const ack = buildFrame({ ...flow, tcpFlags: { ack: true }, payload: 10 });
        assert.equal(run(ack).reason, 'pass_local_target', 'the connection stays on this node');
        local++;
      }
      assert.ok(local > 0 && remote > 0, `both kinds seen: ${local} local, ${remote} encapsulated`);
    } finally {
      fp.removeService(svcL);
    }
  });

  test('VIPAROUTE: a target reached at another of its addresses is encapsulated to it; CRT keeps the target', () => {
    const VIA = '198.18.1.21';
    const svcV: Service = { vip: VIP, port: 3100, protocol: 'tcp' };
    nsIp(rns.ns, 'neigh', 'replace', VIA, 'lladdr', '02:00:00:00:01:21', 'dev', 'int0', 'nud', 'permanent');
    const outerOf = (sport: number) => {
      const r = run(syn({ sport, dport: 3100 }));
      assert.equal(r.reason, 'fwd_redirect');
      const p = parseFrame(r.frame);
      return `${p.ipv4!.dst} ${p.eth!.dst}`;
    };
    try {
      fp.setTargets(svcV, [{ addr: TARGETS[0], weight: 1 }]);
      fp.setViaRoutes(new Map([[TARGETS[0], VIA]]));
      assert.equal(outerOf(48000), `${VIA} 02:00:00:00:01:21`, 'outer destination and next hop: the VIPAROUTE address');
      assert.equal(fp.crt.get({ saddr: CLIENT, daddr: VIP, sport: 48000, dport: 3100, proto: 6 })!.target, TARGETS[0]);
      fp.setViaRoutes(new Map());
      assert.equal(outerOf(48001), `${TARGETS[0]} 02:00:00:00:01:10`, 'without it: the cluster address again');
    } finally {
      fp.setViaRoutes(new Map());
      fp.removeService(svcV);
    }
  });

  test('fencing: past its deadline, ARP requests for the DVIPA and its traffic are dropped and counted; before it, served', async () => {
    const arp = (op: number, tpa: string) => {
      const b = Buffer.alloc(28);
      b.writeUInt16BE(1, 0);
      b.writeUInt16BE(0x0800, 2);
      b[4] = 6;
      b[5] = 4;
      b.writeUInt16BE(op, 6);
      Buffer.from([2, 0, 0, 0, 0, 1]).copy(b, 8);
      Buffer.from(CLIENT.split('.').map(Number)).copy(b, 14);
      Buffer.from(tpa.split('.').map(Number)).copy(b, 24);
      return buildRawFrame(0x0806, b, { dstMac: 'ff:ff:ff:ff:ff:ff' });
    };
    const ping = buildRawFrame(
      0x0800,
      buildIpv4({ saddr: CLIENT, daddr: VIP, proto: 1 }, Buffer.from([8, 0, 0xf7, 0xff, 0, 0, 0, 0])),
    );
    const udp = buildFrame({ saddr: CLIENT, daddr: VIP, sport: 5353, dport: 53, protocol: 'udp' });
    const other = buildFrame({ saddr: CLIENT, daddr: '192.0.2.99', sport: 40000, dport: 80, tcpFlags: { syn: true } });
    try {
      assert.equal(run(arp(1, VIP)).reason, 'pass_not_ipv4', 'no deadline: never fenced');
      // Both sides of one deadline, 300 ms ahead on the kernel's CLOCK_MONOTONIC.
      const deadline = process.hrtime.bigint() + 300_000_000n;
      fp.setFence(VIP, deadline);
      assert.equal(run(arp(1, VIP)).reason, 'pass_not_ipv4', 'before the deadline the stack answers ARP');
      assert.equal(run(syn({ sport: 42001 })).reason, 'fwd_redirect', 'before the deadline traffic is forwarded');
      while (process.hrtime.bigint() <= deadline) await new Promise((r) => setTimeout(r, 20));
      const before = fp.reasonCounts();
      for (const [what, frame, action, reason] of [
        ['ARP request for the DVIPA', arp(1, VIP), 'drop', 'drop_fenced_arp'],
        ['SYN', syn({ sport: 42002 }), 'drop', 'drop_fenced'],
        [
          'ACK of a known connection',
          buildFrame({ saddr: CLIENT, daddr: VIP, sport: 42001, dport: 80, tcpFlags: { ack: true }, payload: 10 }),
          'drop',
          'drop_fenced',
        ],
        ['UDP', udp, 'drop', 'drop_fenced'],
        ['ICMP echo (the stack would answer it)', ping, 'drop', 'drop_fenced'],
        [
          'a fragment',
          buildFrame({ saddr: CLIENT, daddr: VIP, sport: 1, dport: 80, fragOffset: 8 }),
          'drop',
          'drop_fenced',
        ],
        ['ARP reply about the DVIPA (not a request)', arp(2, VIP), 'pass', 'pass_not_ipv4'],
        ['ARP request for another address', arp(1, '198.18.0.2'), 'pass', 'pass_not_ipv4'],
        ['traffic to another address', other, 'pass', 'pass_not_service'],
      ] as const) {
        const r = run(frame);
        assert.deepEqual([r.action, r.reason], [action, reason], what);
      }
      const after = fp.reasonCounts();
      assert.equal(after.drop_fenced_arp - before.drop_fenced_arp, 1n);
      assert.equal(after.drop_fenced - before.drop_fenced, 5n);
      // Extended again (the coupling facility confirmed): served at once.
      fp.setFence(VIP, process.hrtime.bigint() + 10_000_000_000n);
      assert.equal(run(syn({ sport: 42003 })).reason, 'fwd_redirect');
      assert.equal(run(arp(1, VIP)).reason, 'pass_not_ipv4');
      // Handed over (a drain): ARP requests dropped at once, traffic forwarded until the deadline.
      const drained = process.hrtime.bigint() + 300_000_000n;
      fp.setFence(VIP, drained | FENCE_DRAIN);
      assert.deepEqual(fp.fenceOf(VIP), { deadlineNs: drained, draining: true });
      const known = buildFrame({ saddr: CLIENT, daddr: VIP, sport: 42001, dport: 80, tcpFlags: { ack: true } });
      for (const [what, frame, action, reason] of [
        ['draining: ARP request for the DVIPA', arp(1, VIP), 'drop', 'drop_fenced_arp'],
        ['draining: a known connection', known, 'redirect', 'fwd_redirect'],
        ['draining: a new connection', syn({ sport: 42004 }), 'redirect', 'fwd_redirect'],
      ] as const)
        assert.deepEqual([run(frame).action, run(frame).reason], [action, reason], what);
      while (process.hrtime.bigint() <= drained) await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual([run(known).action, run(known).reason], ['drop', 'drop_fenced'], 'drained: dropped');
    } finally {
      fp.setFence(VIP, undefined);
    }
  });

  test('a DVIPA without a deadline: its services skip the fence lookup, until one is set, also for a service added under it', () => {
    const unfenced = (s: Service) =>
      (fp.services.get({ vip: s.vip, port: s.port, proto: 6 })!.flags & SVC_UNFENCED) !== 0;
    const extra: Service = { vip: VIP, port: 8080, protocol: 'tcp' };
    assert.ok(unfenced(web), 'no deadline: no lookup');
    fp.setFence(VIP, FENCE_EXPIRED);
    try {
      assert.ok(!unfenced(web), 'a deadline: looked up');
      fp.setTargets(extra, equal);
      assert.ok(!unfenced(extra), 'added under a deadline: looked up');
      assert.deepEqual(
        [run(syn({ sport: 42101, dport: 8080 })).action, run(syn({ sport: 42101, dport: 8080 })).reason],
        ['drop', 'drop_fenced'],
      );
      assert.equal(run(syn({ sport: 42102 })).reason, 'drop_fenced');
    } finally {
      fp.setFence(VIP, undefined);
    }
    assert.ok(unfenced(web) && unfenced(extra), 'deadline gone: no lookup');
    assert.equal(run(syn({ sport: 42103, dport: 8080 })).reason, 'fwd_redirect');
    fp.removeService(extra);
  });

  test('an unconfigured node passes everything', () => {
    fp.configure({ clusterAddr: rns.clusterAddr, enabled: false });
    try {
      const frame = syn({ sport: 46000 });
      const r = run(frame);
      assert.deepEqual([r.action, r.reason], ['pass', 'pass_disabled']);
      assert.deepEqual(r.frame, frame);
    } finally {
      fp.configure({ clusterAddr: rns.clusterAddr });
    }
  });
});

describe('decap', () => {
  let target: FastPath;
  let targetPins: ReturnType<typeof scratchPinRoot>;
  const XCF = '198.18.1.11';

  before(() => {
    targetPins = scratchPinRoot('trt');
    target = FastPath.open({ pinRoot: targetPins.pinRoot, crtMaxEntries: 1024 });
    target.configure({ clusterAddr: XCF });
    target.serve(VIP);
    target.allowDecap(
      [ROUTER_NET.clusterAddr],
      [
        { vip: VIP, port: 80, protocol: 'tcp' },
        { vip: VIP, port: 0, protocol: 'udp' },
      ],
    );
  });
  after(() => {
    target?.close();
    targetPins?.remove();
  });

  function tunnelled(inner: Buffer, outerDst = XCF, vlan?: number): Buffer {
    const l2 = buildRawFrame(0x0800, Buffer.alloc(0), { vlan });
    return Buffer.concat([
      l2,
      buildIpv4({ saddr: ROUTER_NET.clusterAddr, daddr: outerDst, proto: 4, df: true }, inner),
    ]);
  }

  test('strips the outer header of packets for a served DVIPA, keeping L2 and its tag', () => {
    const inner = syn({ sport: 47000 }).subarray(14);
    for (const vlan of [undefined, 12]) {
      const frame = tunnelled(inner, XCF, vlan);
      const r = run(frame, 'decap', target);
      assert.deepEqual([r.action, r.reason], ['pass', 'decap']);
      const l2 = vlan === undefined ? 14 : 18;
      assert.deepEqual(r.frame.subarray(0, l2), frame.subarray(0, l2), 'L2 header kept');
      assert.deepEqual(r.frame.subarray(l2), inner, 'exactly the inner packet');
    }
  });

  test('counts what it received per DVIPA:port', () => {
    const count = (port: number) =>
      target.receivedStats().find((x) => x.vip === VIP && x.port === port && x.protocol === 'tcp') ?? {
        packets: 0n,
        bytes: 0n,
      };
    const before = count(80);
    const inner = syn({ sport: 47002 }).subarray(14);
    for (let i = 0; i < 3; i++) assert.equal(run(tunnelled(inner), 'decap', target).reason, 'decap');
    assert.deepEqual(count(80), {
      ...count(80),
      packets: before.packets + 3n,
      bytes: before.bytes + BigInt(3 * inner.length),
    });
  });

  test('decapsulates only from its routing nodes and for distributed DVIPA:ports; the rest is dropped and counted', () => {
    const from = (saddr: string, inner: Buffer) =>
      Buffer.concat([
        buildRawFrame(0x0800, Buffer.alloc(0)),
        buildIpv4({ saddr, daddr: XCF, proto: 4, df: true }, inner),
      ]);
    const to = (dport: number, protocol: 'tcp' | 'udp' = 'tcp') =>
      buildFrame({ protocol, saddr: CLIENT, daddr: VIP, sport: 47010, dport, tcpFlags: { syn: true } }).subarray(14);
    const stats = () => target.receivedStats().length;
    const statsBefore = stats();
    const cases: Array<[string, Buffer, 'drop' | 'pass', Reason]> = [
      ['a stranger tunnelling to the service', from('198.18.9.9', to(80)), 'drop', 'decap_drop_not_router'],
      ['a routing node, to :22 of the DVIPA', tunnelled(to(22)), 'drop', 'decap_drop_not_service'],
      ['a routing node, to a UDP port (every UDP port allowed)', tunnelled(to(5353, 'udp')), 'pass', 'decap'],
      [
        'a routing node, an inner fragment',
        tunnelled(
          buildFrame({
            saddr: CLIENT,
            daddr: VIP,
            sport: 47003,
            dport: 80,
            mf: true,
            tcpFlags: { syn: true },
          }).subarray(14),
        ),
        'drop',
        'decap_drop_not_service',
      ],
      ['a routing node, to the service', tunnelled(to(80)), 'pass', 'decap'],
    ];
    for (const [what, frame, action, reason] of cases) {
      const r = run(frame, 'decap', target);
      assert.deepEqual([r.action, r.reason], [action, reason], what);
    }
    // Random ports from a stranger no longer fill the per-port statistics.
    for (let port = 1000; port < 1200; port++)
      assert.equal(run(from('198.18.9.9', to(port)), 'decap', target).reason, 'decap_drop_not_router');
    assert.ok(stats() <= statsBefore + 1, `${stats()} stats entries`);
    // The allow lists follow the agent: without the router, its packets are dropped too.
    target.allowDecap([], [{ vip: VIP, port: 80, protocol: 'tcp' }]);
    assert.equal(run(tunnelled(to(80)), 'decap', target).reason, 'decap_drop_not_router');
    assert.deepEqual(
      [...target.decapServices.keys()].map((k) => k.port),
      [80],
    );
    target.allowDecap(
      [ROUTER_NET.clusterAddr],
      [
        { vip: VIP, port: 80, protocol: 'tcp' },
        { vip: VIP, port: 0, protocol: 'udp' },
      ],
    );
  });

  test('VIPAROUTE: packets tunnelled to another address of the target are taken only when it is listed', () => {
    const VIA = '198.18.1.21';
    const frame = tunnelled(syn({ sport: 47100 }).subarray(14), VIA);
    assert.equal(run(frame, 'decap', target).reason, 'decap_pass_not_ours');
    target.setDecapAddrs([VIA]);
    try {
      assert.equal(run(frame, 'decap', target).reason, 'decap');
    } finally {
      target.setDecapAddrs([]);
    }
    assert.equal(run(frame, 'decap', target).reason, 'decap_pass_not_ours');
  });

  test('leaves alone what is not for it', () => {
    const inner = syn({ sport: 47001 }).subarray(14);
    const otherVip = buildFrame({ saddr: CLIENT, daddr: '192.0.2.99', tcpFlags: { syn: true } }).subarray(14);
    const cases: Array<[string, Buffer, Reason]> = [
      ['plain TCP', syn(), 'decap_pass_not_ours'],
      ['IPIP to another node', tunnelled(inner, '198.18.1.12'), 'decap_pass_not_ours'],
      ['IPIP for a DVIPA not served here', tunnelled(otherVip), 'decap_pass_not_ours'],
      ['IPIP with a garbage inner header', tunnelled(Buffer.alloc(40, 0xff)), 'decap_pass_malformed'],
      ['ARP', buildRawFrame(0x0806, Buffer.alloc(28)), 'pass_not_ipv4'],
    ];
    for (const [what, frame, reason] of cases) {
      const r = run(frame, 'decap', target);
      assert.deepEqual([r.action, r.reason], ['pass', reason], what);
      assert.deepEqual(r.frame, frame, `${what}: unchanged`);
    }
  });

  test('random and mutated tunnelled frames never crash or abort; only well-formed IPIP from a routing node to a distributed port is stripped', () => {
    let seed = 54321;
    const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
    const valid = [
      tunnelled(syn({ sport: 47100 }).subarray(14)),
      tunnelled(syn({ sport: 47101, payload: 30 }).subarray(14), XCF, 5),
    ];
    const seen = new Set<string>();
    for (let i = 0; i < 1500; i++) {
      const frame = Buffer.from(valid[i % valid.length]);
      for (let k = 0; k < 1 + Math.floor(rand() * 4); k++)
        frame[Math.floor(rand() * frame.length)] = Math.floor(rand() * 256);
      const cut = rand() < 0.3 ? frame.subarray(0, 14 + Math.floor(rand() * (frame.length - 14))) : frame;
      const r = run(cut, 'decap', target);
      seen.add(r.reason);
      // Dropped only as foreign IPIP (a mutated outer source or inner port); everything else passes.
      if (r.action === 'drop' && r.reason.startsWith('decap_drop_')) continue;
      assert.equal(
        r.action,
        'pass',
        `frame ${i}: the decap program passes what it does not drop as foreign (${r.reason})`,
      );
      if (r.reason !== 'decap') {
        assert.deepEqual(r.frame, cut, `frame ${i}: ${r.reason}, untouched`);
        continue;
      }
      // Stripped: what is left is the inner IPv4 packet to the served DVIPA, its lengths consistent.
      const p = parseFrame(r.frame);
      assert.equal(p.ipv4?.dst, VIP, `frame ${i}: stripped only for a served DVIPA`);
      assert.equal(r.frame.length, cut.length - 20, `frame ${i}: exactly the outer header removed`);
    }
    assert.ok(
      seen.has('decap') &&
        seen.has('decap_pass_malformed') &&
        seen.has('decap_pass_not_ours') &&
        seen.has('decap_drop_not_router'),
      `every verdict reached: ${[...seen].join(', ')}`,
    );
  });
});

describe('jumbo frames (xdp.frags)', () => {
  const JUMBO = 9000;
  const jumbo = (ipLen: number, sport: number, df = true) => syn({ sport, payload: ipLen - 40, df });

  test('the distributor forwards a 9000-byte frame whole, and answers one too big for the egress', () => {
    // Egress at 1500: too big once encapsulated; ICMP back, the jumbo frame's fragments cut away.
    const big = jumbo(8980, 49000);
    assert.equal(big.length, 14 + 8980);
    const icmp = run(big);
    assert.deepEqual([icmp.action, icmp.reason], ['tx', 'tx_frag_needed']);
    assert.equal(parseFrame(icmp.frame).ipv4!.icmp!.mtu, 1480);
    assert.equal(icmp.frame.length, 14 + 20 + 8 + 20 + 8);
    assert.deepEqual([run(jumbo(8980, 49001, false)).reason], ['drop_too_big']);

    nsIp(rns.ns, 'link', 'set', 'int0', 'mtu', String(JUMBO));
    fp.resolveTargets();
    try {
      const r = run(big);
      assert.deepEqual([r.action, r.reason], ['redirect', 'fwd_redirect']);
      assert.equal(r.frame.length, big.length + 20);
      assertEncapsulated(r.frame, big);
      const over = run(jumbo(8990, 49002));
      assert.deepEqual([over.reason, parseFrame(over.frame).ipv4!.icmp!.mtu], ['tx_frag_needed', JUMBO - 20]);
    } finally {
      nsIp(rns.ns, 'link', 'set', 'int0', 'mtu', '1500');
      fp.resolveTargets();
    }
  });

  test('decap passes a 9000-byte tunnelled frame up without its outer header', () => {
    const pins = scratchPinRoot('trj');
    const target = FastPath.open({ pinRoot: pins.pinRoot, crtMaxEntries: 1024 });
    try {
      target.configure({ clusterAddr: '198.18.1.11' });
      target.serve(VIP);
      target.allowDecap([ROUTER_NET.clusterAddr], [{ vip: VIP, port: 80, protocol: 'tcp' }]);
      const inner = jumbo(JUMBO - 20, 49003).subarray(14);
      const frame = Buffer.concat([
        buildRawFrame(0x0800, Buffer.alloc(0)),
        buildIpv4({ saddr: ROUTER_NET.clusterAddr, daddr: '198.18.1.11', proto: 4, df: true }, inner),
      ]);
      assert.equal(frame.length, 14 + JUMBO);
      const r = run(frame, 'decap', target);
      assert.deepEqual([r.action, r.reason], ['pass', 'decap']);
      assert.deepEqual(r.frame.subarray(14), inner, 'the whole inner packet');
      assert.equal(target.receivedStats().find((x) => x.port === 80)!.bytes, BigInt(inner.length));
    } finally {
      target.close();
      pins.remove();
    }
  });

  test('both programs attach natively to a 9000-MTU interface', () => {
    nsIp(
      rns.ns,
      'link',
      'add',
      'jmb0',
      'mtu',
      String(JUMBO),
      'type',
      'veth',
      'peer',
      'name',
      'jmb1',
      'mtu',
      String(JUMBO),
    );
    try {
      // One end each: a detached link may still hold its interface for a moment (EBUSY seen).
      for (const [role, dev] of [
        ['distributor', 'jmb0'],
        ['decap', 'jmb1'],
      ] as const) {
        const a = rns.inside(() => fp.attach(role, dev, 'native'));
        assert.equal(a.mode, 'native', role);
        assert.ok(fp.detach(role, dev));
      }
    } finally {
      nsIp(rns.ns, 'link', 'del', 'jmb0');
      fp.configure({ clusterAddr: rns.clusterAddr });
      fp.config.set(0, { ...fp.nodeConfig(), extIfindex: 0 });
    }
  });
});

test('random and mutated frames never crash, never abort, never forward anywhere but a target', () => {
  let seed = 12345;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const valid = [
    syn({ sport: 48000 }),
    buildFrame({ protocol: 'udp', saddr: CLIENT, daddr: VIP, dport: 53, payload: 20 }),
    syn({ vlan: 3, sport: 48001 }),
  ];
  for (let i = 0; i < 2000; i++) {
    let frame: Buffer;
    if (i % 2) {
      frame = Buffer.from(valid[i % valid.length]);
      for (let k = 0; k < 1 + Math.floor(rand() * 4); k++)
        frame[Math.floor(rand() * frame.length)] = Math.floor(rand() * 256);
      if (rand() < 0.3) frame = frame.subarray(0, 14 + Math.floor(rand() * (frame.length - 14)));
    } else {
      frame = Buffer.from(Array.from({ length: 14 + Math.floor(rand() * 120) }, () => Math.floor(rand() * 256)));
      if (rand() < 0.5) frame.writeUInt16BE(0x0800, 12);
    }
    const r = run(frame);
    assert.notEqual(r.action, 'aborted', `frame ${i}`);
    if (r.action === 'redirect') {
      const p = parseFrame(r.frame);
      assert.equal(p.ipv4?.protocol, 4, `frame ${i}: redirected frames are tunnelled`);
      assert.ok(TARGETS.includes(p.ipv4.dst), `frame ${i}: to a target`);
      assert.ok(p.ipv4.checksumOk);
    }
    if (r.action === 'tx') assert.equal(r.reason, 'tx_frag_needed', `frame ${i}`);
  }
});
