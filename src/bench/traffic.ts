/*
 * `dvipa bench traffic`: real frames through a routing node, three ways side by side in one
 * run: dvipa's XDP distributor, the kernel's own forwarding (the DVIPA routed to one target)
 * and nftables DNAT round-robin (`numgen inc mod 3`) in place of XDP. The live generator
 * (BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES, bpf/gen.bpf.c) sends UDP frames over
 * many flows out of the lab client's interface; what each target receives is read from its
 * interface counters every sampling interval. Figures are ratios to kernel forwarding.
 *
 * Router only (--router-only): each target's interface gets an XDP sink (bpf/sink.bpf.c) that
 * counts and drops, in place of its decap program and stack, so the figure is what the
 * routing node forwards rather than what the receiving sockets take. And the frames are made
 * at the routing node's external interface instead of sent to it over a veth: the generator
 * hands each to the distributor (a tail call) or to the interface's stack (XDP_PASS), as a
 * NIC's driver would. Over the veth, the frames cross from the generator's CPU to the
 * router's and go back to the generator's page pool under its lock: that cost, the same in
 * every way, was most of each packet's and hid how the ways differ.
 */
import { execFileSync } from 'node:child_process';
import * as os from 'node:os';
import { loadObject, type BpfObject } from '../kernel/object.js';
import { sys } from '../kernel/sys.js';
import { xdpContext, XDP_ACTIONS } from '../dataplane/testrun.js';
import { createFastpathLab, LAB, type FastpathLab } from '../lab/fastpath-lab.js';
import { acceptRedirects, nsIp } from '../lab/netns.js';
import { withCleanup } from '../lab/cleanup.js';
import { interfaceMac } from '../net/iproute.js';
import { buildFrame } from '../net/packet.js';
import { CRT_DEFAULT_ENTRIES, CRT_WAYS } from '../dataplane/structs.js';
import type { ChartSeries } from './svg.js';

export type RouterMode = 'xdp' | 'kernel' | 'nftables' | 'ipvs';
/** The default ways; `ipvs` needs a kernel with IPVS (the kernel lab) and is asked for by name. */
export const ROUTER_MODES: readonly RouterMode[] = ['xdp', 'kernel', 'nftables'];
export const ALL_ROUTER_MODES: readonly RouterMode[] = [...ROUTER_MODES, 'ipvs'];
const DESCRIBE: Record<RouterMode, string> = {
  xdp: "dvipa's XDP distributor (Maglev over 3 targets, IPIP)",
  kernel: "the kernel's forwarding, DVIPA routed to one target",
  nftables: 'nftables DNAT, numgen inc mod 3 over 3 targets',
  ipvs: 'IPVS in tunnel mode (LVS-TUN), round robin over 3 targets, IPIP',
};

const BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1;
const XDP_FLAGS_DRV_MODE = 4;
/**
 * The routing node's CRT: a node's default size, or room for twice the run's flows where that
 * is more (a full CRT would measure eviction). Not larger: at 100,000 flows every packet reads
 * a random set of the cache, and that read costs more the more memory the cache spans
 * (docs/benchmarks.md, 2026-12-03).
 */
const benchCrtEntries = (flows: number) => Math.max(CRT_DEFAULT_ENTRIES, 2 ** Math.ceil(Math.log2(2 * flows)));
const BASE_PORT = 10000;

/** enum gen_action of bpf/gen.bpf.c: what becomes of each generated frame. */
enum GenAction {
  /** Sent out of the interface the run is on. */
  Tx = 0,
  /** Into that interface's stack. */
  Pass = 1,
  /** To the program in gen_route (the distributor). */
  Route = 2,
}
/** struct gen_ctl of bpf/gen.bpf.c: the counters, then the 42 bytes of headers to write into every frame. */
const GEN_HDR_LEN = 42;
function genCtl(flows: number, basePort: number, action: GenAction, frame: Buffer): Buffer {
  const v = Buffer.alloc(16 + GEN_HDR_LEN + 6);
  v.writeUInt32LE(flows, 0);
  v.writeUInt16LE(basePort, 4);
  v.writeUInt16LE(action, 6);
  frame.copy(v, 16, 0, GEN_HDR_LEN);
  return v;
}

export interface TrafficRun {
  mode: RouterMode;
  describe: string;
  sent: number;
  delivered: number;
  seconds: number;
  sentPps: number;
  deliveredPps: number;
  perTarget: Record<string, number>;
  /** Delivered packets per second, sampled. */
  series: Array<{ t: number; pps: number }>;
  /** deliveredPps / kernel forwarding's. */
  ratio?: number;
}

/** A way's figures: each sum over its rounds, its rates the median round's. */
export interface TrafficWay extends TrafficRun {
  /** Delivered packets per second in each round. */
  rounds: number[];
  /** The rounds' samples one after the other. */
  series: TrafficRun['series'];
}

/** XDP's rate over another way's, each round's taken within that round, and their median. */
export interface XdpOver {
  median: number;
  rounds: number[];
}

export interface TrafficBench {
  generator: 'live';
  kernel: string;
  cpu: string;
  flows: number;
  size: number;
  seconds: number;
  /** Targets were XDP sinks (count and drop): the figures are the routing node's forwarding alone. */
  routerOnly: boolean;
  /** Where frames were made: sent from the client, or (router only) at the router's external interface. */
  generatedAt: 'client' | 'router';
  /** The routing node's CRT size (entries). */
  crtEntries: number;
  /** Rounds of every way, interleaved: xdp, kernel, nftables, xdp, kernel, ... */
  rounds: number;
  runs: TrafficWay[];
  /** With `xdp` among the ways: XDP ÷ each other way. */
  xdpOver: Partial<Record<RouterMode, XdpOver>>;
}

function rxPackets(ns: string, ifname: string): number {
  const [link] = JSON.parse(nsIp(ns, '-s', '-j', 'link', 'show', 'dev', ifname)) as Array<{
    stats64: { rx: { packets: number } };
  }>;
  return link.stats64.rx.packets;
}

function ipvsadm(ns: string, ...args: string[]): void {
  try {
    execFileSync('ip', ['netns', 'exec', ns, 'ipvsadm', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: Buffer };
    throw new Error(
      `ipvsadm ${args.join(' ')}: ${String(err.stderr ?? e).trim()} (IPVS needs ip_vs in the kernel: run it in scripts/kernel-lab)`,
      { cause: e },
    );
  }
}

function nft(ns: string, script: string): void {
  try {
    execFileSync('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], { input: script, stdio: ['pipe', 'ignore', 'pipe'] });
  } catch (e) {
    const err = e as { code?: string; stderr?: Buffer };
    if (err.code === 'ENOENT') throw new Error('nft not found: install nftables (scripts/setup does)', { cause: e });
    throw new Error(`nft: ${String(err.stderr ?? e).trim()}`, { cause: e });
  }
}

export interface LiveOptions {
  seconds: number;
  flows: number;
  size: number;
  modes: readonly RouterMode[];
  /**
   * Rounds of every way, interleaved (default 1). The machine's neighbours move each way's
   * rate between runs: a way's median round, and ratios taken within each round, move less.
   */
  rounds?: number;
  routerOnly?: boolean;
  /** The routing node's CRT size in entries (default benchCrtEntries(flows)). */
  crtEntries?: number;
  onProgress?: (fraction: number, note: string) => void;
}

/** An XDP sink on each target's interface; closing it restores nothing (the caller re-attaches decap). */
interface Sinks {
  count: () => Record<string, number>;
  close: () => void;
}

function attachSinks(l: FastpathLab): Sinks {
  const objs: Array<{ name: string; obj: BpfObject; link: number; countFd: number }> = [];
  const cpus = sys.numPossibleCpus('sink_count');
  const close = () => {
    for (const s of objs) {
      sys.closeFd('up0', s.link);
      s.obj.close();
    }
  };
  try {
    for (const t of l.targets) {
      l.inside(t.ns, () => t.fastpath.detach('decap', 'up0'));
      const obj = loadObject('sink');
      const link = l.inside(t.ns, () =>
        sys.xdpLinkCreate('up0', obj.progFd('xdp_sink'), sys.ifNameToIndex('up0', 'up0'), XDP_FLAGS_DRV_MODE),
      );
      objs.push({ name: t.name, obj, link, countFd: obj.mapFd('sink_count') });
    }
  } catch (e) {
    close();
    throw e;
  }
  return {
    count: () =>
      Object.fromEntries(
        objs.map((s) => {
          const v = Buffer.alloc(8 * cpus);
          sys.mapLookup('sink_count', s.countFd, Buffer.alloc(4), v);
          let n = 0n;
          for (let c = 0; c < cpus; c++) n += v.readBigUInt64LE(c * 8);
          return [s.name, Number(n)];
        }),
      ),
    close,
  };
}

export async function benchLive(o: LiveOptions): Promise<TrafficBench> {
  const prefix = `dvb${process.pid % 100000}-`;
  let lab: FastpathLab | undefined;
  let gen: BpfObject | undefined;
  let sinks: Sinks | undefined;
  return withCleanup(
    () => {
      sinks?.close();
      gen?.close();
      lab?.teardown();
    },
    async () => {
      const crtEntries = o.crtEntries ?? benchCrtEntries(o.flows);
      lab = await createFastpathLab(prefix, 3, {
        routerCrtEntries: crtEntries,
        nameServers: !o.routerOnly,
      });
      const l = lab;
      const g = (gen = loadObject('gen'));
      const ctlFd = g.mapFd('gen_ctl');
      const genFd = g.progFd('gen_udp');
      const udp = l.udpService;
      const extMac = l.inside(l.routerNs, () => interfaceMac('ext'));
      const c0 = l.inside(l.clientNs, () => ({ mac: interfaceMac('c0'), ifindex: sys.ifNameToIndex('c0', 'c0') }));
      const frame = buildFrame({
        srcMac: c0.mac,
        dstMac: extMac,
        saddr: LAB.client,
        daddr: LAB.dvipa,
        protocol: 'udp',
        sport: BASE_PORT,
        dport: udp.port,
        payload: Math.max(0, o.size - 42),
      });
      // Where the generator runs: the client's interface, or router only the router's own.
      const at = o.routerOnly
        ? { ns: l.routerNs, ifindex: l.inside(l.routerNs, () => sys.ifNameToIndex('ext', 'ext')) }
        : { ns: l.clientNs, ifindex: c0.ifindex };
      const ctxIn = xdpContext(frame, at.ifindex);
      const actionOf = (mode: RouterMode) =>
        !o.routerOnly ? GenAction.Tx : mode === 'xdp' ? GenAction.Route : GenAction.Pass;
      const setCtl = (mode: RouterMode) =>
        sys.mapUpdate('gen_ctl', ctlFd, Buffer.alloc(4), genCtl(o.flows, BASE_PORT, actionOf(mode), frame), 0);
      if (o.routerOnly) {
        const slot = Buffer.alloc(4);
        slot.writeUInt32LE(l.router.progFd('distributor'));
        sys.mapUpdate('gen_route', g.mapFd('gen_route'), Buffer.alloc(4), slot, 0);
      }
      // Frames the generator transmits reach the router's veth only on a NAPI queue: GRO on.
      acceptRedirects(l.routerNs, 'ext');
      const targetNs = Object.fromEntries(l.targets.map((t) => [t.name, t.ns]));
      if (o.routerOnly) sinks = attachSinks(l);
      const counts = sinks
        ? sinks.count
        : () => Object.fromEntries(Object.entries(targetNs).map(([n, ns]) => [n, rxPackets(ns, 'up0')]));

      const setMode = (mode: RouterMode) => {
        const r = l.routerNs;
        l.inside(r, () => l.router.detach('distributor', 'ext'));
        try {
          nsIp(r, 'route', 'del', `${LAB.dvipa}/32`);
        } catch {
          // not routed yet
        }
        nft(r, 'table ip dvipa_bench\ndelete table ip dvipa_bench\n');
        if (o.modes.includes('ipvs')) {
          ipvsadm(r, '-C');
          nsIp(r, 'addr', 'flush', 'dev', 'lo', 'to', `${LAB.dvipa}/32`);
        }
        if (mode === 'xdp') l.inside(r, () => l.router.attach('distributor', 'ext', 'native'));
        if (mode === 'kernel') nsIp(r, 'route', 'add', `${LAB.dvipa}/32`, 'via', l.targets[0].xcf);
        if (mode === 'nftables') {
          nsIp(r, 'route', 'add', `${LAB.dvipa}/32`, 'via', l.targets[0].xcf);
          const map = l.targets.map((t, i) => `${i} : ${t.xcf}`).join(', ');
          nft(
            r,
            `table ip dvipa_bench {\n chain pre {\n  type nat hook prerouting priority dstnat;\n  ip daddr ${LAB.dvipa} udp dport ${udp.port} dnat to numgen inc mod ${l.targets.length} map { ${map} }\n }\n}\n`,
          );
        }
        if (mode === 'ipvs') {
          // LVS-TUN: the virtual address is local to the director, which tunnels (IPIP) each
          // connection to a real server; round robin, as nftables' numgen.
          nsIp(r, 'addr', 'add', `${LAB.dvipa}/32`, 'dev', 'lo');
          const vs = `${LAB.dvipa}:${udp.port}`;
          ipvsadm(r, '-A', '-u', vs, '-s', 'rr');
          for (const t of l.targets) ipvsadm(r, '-a', '-u', vs, '-r', `${t.xcf}:${udp.port}`, '-i');
        }
      };

      const rounds = o.rounds ?? 1;
      const done: Array<TrafficRun & { round: number }> = [];
      /*
       * Frames per test run, sized to about SLICE_S at the rate the last run reached. Each run
       * swaps the kernel's XDP dispatcher to the generator and back, patching kernel text on
       * every CPU. With runs of 20,000 frames perf found about a fifth of the generating CPU's
       * busy time there (2026-12-02, this VM), a cost the same in every way that narrowed their
       * ratios: XDP / nftables 3.3 with them, 3.9 with runs of 200,000.
       */
      const SLICE_S = 0.1;
      const nextSlice = (frames: number, ns: bigint) =>
        Math.min(2_000_000, Math.max(10_000, Math.round((frames * SLICE_S * 1e9) / Math.max(1, Number(ns)))));
      const expect: Record<GenAction, string> = {
        [GenAction.Tx]: 'tx',
        [GenAction.Pass]: 'pass',
        [GenAction.Route]: 'redirect',
      };
      /** One way's run, the `step`th of the whole bench (for the progress). */
      const measure = async (mode: RouterMode, step: number): Promise<TrafficRun> => {
        setMode(mode);
        setCtl(mode);
        // Live runs do not report the program's verdict: one ordinary run checks it first.
        const dry = l.inside(at.ns, () => sys.progTestRun('gen_udp', genFd, { data: frame, ctxIn, repeat: 1 }));
        const verdict = XDP_ACTIONS[dry.retval] ?? String(dry.retval);
        const want = expect[actionOf(mode)];
        if (verdict !== want) throw new Error(`the generator (${mode}) returned ${verdict}, not ${want}`);
        setCtl(mode);
        const start = counts();
        let last = start;
        const series: Array<{ t: number; pps: number }> = [];
        const t0 = process.hrtime.bigint();
        let lastT = t0;
        let sent = 0;
        let slice = 20000;
        for (;;) {
          const before = process.hrtime.bigint();
          l.inside(at.ns, () =>
            sys.progTestRun('gen_udp', genFd, {
              data: frame,
              ctxIn,
              repeat: slice,
              flags: BPF_F_TEST_XDP_LIVE_FRAMES,
              batchSize: 64,
            }),
          );
          sent += slice;
          const now = process.hrtime.bigint();
          slice = nextSlice(slice, now - before);
          if (now - lastT >= 100_000_000n) {
            const c = counts();
            const dt = Number(now - lastT) / 1e9;
            const delta = Object.keys(c).reduce((a, k) => a + c[k] - last[k], 0);
            series.push({ t: Number(now - t0) / 1e9, pps: delta / dt });
            last = c;
            lastT = now;
          }
          const elapsed = Number(now - t0) / 1e9;
          o.onProgress?.((step + Math.min(1, elapsed / o.seconds)) / (rounds * o.modes.length), mode);
          if (elapsed >= o.seconds) break;
        }
        // Let the last frames drain through the softirqs before the final count.
        await new Promise((r) => setTimeout(r, 200));
        const end = counts();
        const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
        const perTarget = Object.fromEntries(Object.keys(end).map((k) => [k, end[k] - start[k]]));
        const delivered = Object.values(perTarget).reduce((a, b) => a + b, 0);
        return {
          mode,
          describe: DESCRIBE[mode],
          sent,
          delivered,
          seconds,
          sentPps: sent / seconds,
          deliveredPps: delivered / seconds,
          perTarget,
          series,
        };
      };
      for (let round = 0; round < rounds; round++)
        for (const [mi, mode] of o.modes.entries())
          done.push({ ...(await measure(mode, round * o.modes.length + mi)), round });
      const runs = o.modes.map((mode) => combineRounds(done.filter((r) => r.mode === mode)));
      const base = runs.find((r) => r.mode === 'kernel')?.deliveredPps;
      if (base) for (const r of runs) r.ratio = r.deliveredPps / base;
      const xdp = done.filter((r) => r.mode === 'xdp');
      const xdpOver: TrafficBench['xdpOver'] = {};
      if (xdp.length)
        for (const mode of o.modes.filter((m) => m !== 'xdp')) {
          const each = done.filter((r) => r.mode === mode).map((r) => xdp[r.round].deliveredPps / r.deliveredPps);
          xdpOver[mode] = { median: median(each), rounds: each };
        }
      return {
        generator: 'live',
        kernel: os.release(),
        cpu: os.cpus()[0]?.model ?? 'unknown',
        flows: o.flows,
        size: o.size,
        seconds: o.seconds,
        routerOnly: !!o.routerOnly,
        generatedAt: o.routerOnly ? 'router' : 'client',
        // What the routing node's cache holds, as made (whole sets), not what was asked for.
        crtEntries: l.router.crt.sets * CRT_WAYS,
        rounds,
        runs,
        xdpOver,
      };
    },
  );
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** One way's rounds as one: counts summed, rates the median round's, the samples end to end. */
function combineRounds(rs: TrafficRun[]): TrafficWay {
  const sum = (f: (r: TrafficRun) => number) => rs.reduce((a, r) => a + f(r), 0);
  const perTarget: Record<string, number> = {};
  for (const r of rs) for (const [k, v] of Object.entries(r.perTarget)) perTarget[k] = (perTarget[k] ?? 0) + v;
  let offset = 0;
  const series: TrafficRun['series'] = [];
  for (const r of rs) {
    series.push(...r.series.map((p) => ({ t: p.t + offset, pps: p.pps })));
    offset += r.seconds;
  }
  return {
    mode: rs[0].mode,
    describe: rs[0].describe,
    sent: sum((r) => r.sent),
    delivered: sum((r) => r.delivered),
    seconds: sum((r) => r.seconds),
    sentPps: median(rs.map((r) => r.sentPps)),
    deliveredPps: median(rs.map((r) => r.deliveredPps)),
    perTarget,
    series,
    rounds: rs.map((r) => r.deliveredPps),
  };
}

export function trafficSeries(b: TrafficBench): ChartSeries[] {
  return b.runs.map((r) => ({
    name: `${r.mode}: ${Math.round(r.deliveredPps).toLocaleString('en')} pps`,
    points: r.series,
    perTarget: r.perTarget,
  }));
}

export function formatTrafficBench(b: TrafficBench): string {
  const lines = [
    `dvipa bench traffic, generator ${b.generator}: UDP ${b.size}-byte frames over ${b.flows} flows, ${b.seconds} s per way and round, ${b.rounds} round${b.rounds === 1 ? '' : 's'} (kernel ${b.kernel}, ${b.cpu})`,
    b.routerOnly
      ? "router only: frames made at the router's external interface, targets are XDP sinks (count and drop); delivered = what the routing node forwarded"
      : "delivered = what the targets' interfaces received",
    `the routing node's CRT: ${b.crtEntries.toLocaleString('en')} entries`,
    '',
    `${'way'.padEnd(9)} ${'sent/s'.padStart(11)} ${'delivered/s'.padStart(12)} ${'× kernel'.padStart(9)}  ${'per target'.padEnd(30)} what`,
  ];
  for (const r of b.runs) {
    const per = Object.entries(r.perTarget)
      .sort()
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
    lines.push(
      `${r.mode.padEnd(9)} ${Math.round(r.sentPps).toLocaleString('en').padStart(11)} ${Math.round(r.deliveredPps).toLocaleString('en').padStart(12)} ${(r.ratio?.toFixed(2) ?? '-').padStart(9)}  ${per.padEnd(30)} ${r.describe}`,
    );
  }
  if (b.rounds > 1) lines.push('', 'rates: the median round of each way');
  const over = Object.entries(b.xdpOver);
  if (over.length) lines.push('');
  for (const [mode, x] of over)
    lines.push(
      `XDP ÷ ${mode}: ${x.median.toFixed(2)}${b.rounds > 1 ? ` (median; each round: ${x.rounds.map((v) => v.toFixed(2)).join(', ')})` : ''}`,
    );
  return lines.join('\n');
}
