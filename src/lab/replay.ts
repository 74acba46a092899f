/*
 * `dvipa fastpath replay`: every packet of a pcap through the real distributor program
 * (BPF_PROG_TEST_RUN), with the node configured from a service description. Each packet's
 * reason is the one counter of `reasons` its run moved; its target is the outer
 * destination of the tunnelled output, or its CRT entry when it was dropped later on.
 */
import { FastPath } from '../dataplane/fastpath.js';
import { serviceName } from '../net/service.js';
import { enterNetns } from '../kernel/netns.js';
import { sys } from '../kernel/sys.js';
import { SyscallError } from '../kernel/errors.js';
import { CrtOrigin, type Reason } from '../dataplane/structs.js';
import { runCounted, type XdpAction } from '../dataplane/testrun.js';
import { createRouterNs, type RouterNs } from './router-ns.js';
import { PCAP_MAX_RECORD, readPcap } from '../net/pcap.js';
import { describeFrame, flowOf, parseFrame } from '../net/packet.js';
import { describeFrame6, flowOf6, tunnelTarget } from '../net/packet6.js';
import { ipFamily } from '../net/addr.js';
import type { ServiceFile } from '../config/service-file.js';
import { withCleanup } from './cleanup.js';

/** The kernel runs XDP only on frames of at least an Ethernet header. */
const MIN_FRAME = 14;
/**
 * A test run holds a frame in one page and at most MAX_SKB_FRAGS more (about 73 KB with 4 KiB
 * pages; the distributor takes fragments, xdp.frags); a larger one (a GRO/GSO super-frame, a
 * capture of a 256 KiB snaplen) fails with ENOMEM. No frame that fits one page fails so.
 */
const ONE_PAGE = 4096;
const TOO_LARGE = new Set(['ENOMEM', 'E2BIG', 'EINVAL']);

export interface ReplayPacket {
  index: number;
  packet: string;
  /** `not-run` for frames no NIC would deliver (shorter than an Ethernet header) or too large for a test run. */
  verdict: XdpAction | 'not-run';
  reason: Reason | 'frame_too_short' | 'frame_too_large';
  target?: string;
  /** What the packet did to the CRT: hit an entry, created one (first packet), or recovered one by hash. */
  crt?: 'hit' | 'new' | 'recovered';
}

export interface ReplayResult {
  environment: string;
  services: string[];
  packets: ReplayPacket[];
  totals: Partial<Record<ReplayPacket['reason'], number>>;
}

export async function replayPcap(
  file: ServiceFile,
  pcapPath: string,
  opts: { netns?: string; ingress?: string },
): Promise<ReplayResult> {
  const records = readPcap(pcapPath);
  const tag = `dvipa-replay-${process.pid}-`;
  const pinRoot = `/sys/fs/bpf/${tag}pins`;
  const targets = [...new Set(file.services.flatMap((s) => s.targets.map((t) => t.addr)))];
  let rns: RouterNs | undefined;
  let fp: FastPath | undefined;
  let leaveNs: (() => void) | undefined;
  const cleanup = () => {
    fp?.close();
    leaveNs?.();
    FastPath.purge(pinRoot);
    rns?.teardown();
  };
  return withCleanup(cleanup, () => {
    let egress = file.egress;
    let ingressName = opts.ingress;
    if (opts.netns) {
      leaveNs = enterNetns(opts.netns);
    } else {
      rns = createRouterNs(
        tag,
        targets.filter((t) => ipFamily(t) === 4),
        targets.filter((t) => ipFamily(t) === 6),
      );
      leaveNs = enterNetns(rns.ns);
      egress = [rns.int];
      ingressName = rns.ext;
    }
    const ingressIfindex = ingressName ? sys.ifNameToIndex(ingressName, ingressName) : undefined;

    fp = FastPath.open({ pinRoot, crtMaxEntries: 65536 });
    fp.configure({ clusterAddr: file.clusterAddress, clusterAddr6: file.clusterAddress6 });
    for (const e of egress) fp.enableEgress(e);
    for (const s of file.services) fp.setTargets(s, s.targets, { affinitySec: s.timedAffinity });
    const progFd = fp.progFd('distributor');

    const packets: ReplayPacket[] = [];
    const totals: ReplayResult['totals'] = {};
    /** A frame no NIC would deliver, or that a test run cannot take: said, counted, not run. */
    const notRun = (index: number, packet: string, reason: 'frame_too_short' | 'frame_too_large') => {
      packets.push({ index, packet, verdict: 'not-run', reason });
      totals[reason] = (totals[reason] ?? 0) + 1;
    };
    records.forEach(({ frame: captured, wireLength }, i) => {
      /*
       * A capture cut at its snap length (tcpdump -s 96) holds the headers, which is what the
       * distributor reads: the rest is zero-filled, so the packet is as long as it was on the
       * wire rather than malformed. Not past what a capture may hold: a record may claim any length.
       */
      const cut = captured.length < wireLength;
      const frame = cut
        ? Buffer.concat([captured, Buffer.alloc(Math.min(wireLength, PCAP_MAX_RECORD) - captured.length)])
        : captured;
      const note = cut ? ` (captured ${captured.length} of ${wireLength} bytes, the rest zero-filled)` : '';
      if (frame.length < wireLength)
        return notRun(i + 1, `${wireLength}-byte frame, larger than a test run takes${note}`, 'frame_too_large');
      if (frame.length < MIN_FRAME) return notRun(i + 1, `${frame.length}-byte frame`, 'frame_too_short');
      const parsed = parseFrame(frame);
      const flow = flowOf(parsed) ?? flowOf6(frame);
      // An IPv6 flow's entry, or an IPv4 one's to an IPv6 target, is in crt6.
      const entryOf = (f: typeof flow) => f && ((ipFamily(f.saddr) === 4 && fp!.crt.get(f)) || fp!.crt6.get(f));
      const known = entryOf(flow) !== undefined;
      let run: ReturnType<typeof runCounted>;
      try {
        run = runCounted(progFd, `xdp_distributor (packet ${i + 1})`, frame, () => fp!.reasonCounts(), {
          ingressIfindex,
        });
      } catch (e) {
        if (!(e instanceof SyscallError && TOO_LARGE.has(e.code) && frame.length > ONE_PAGE)) throw e;
        return notRun(
          i + 1,
          `${frame.length}-byte frame, larger than a test run takes (${e.code})${note}`,
          'frame_too_large',
        );
      }
      const reason = run.reason;
      totals[reason] = (totals[reason] ?? 0) + 1;

      const packet = ((!parsed.ipv4 && describeFrame6(frame)) || describeFrame(parsed)) + note;
      const p: ReplayPacket = { index: i + 1, packet, verdict: run.action, reason };
      if (run.action === 'tx' || run.action === 'redirect') p.target = tunnelTarget(run.frame);
      const entry = entryOf(flow);
      if (entry) {
        p.target ??= entry.target;
        p.crt = known ? 'hit' : entry.origin === CrtOrigin.Recovered ? 'recovered' : 'new';
      }
      packets.push(p);
    });
    return {
      environment: opts.netns ? `namespace ${opts.netns}` : 'scratch namespace with a route to every target',
      services: file.services.map(serviceName),
      packets,
      totals,
    };
  });
}

export function formatReplay(r: ReplayResult): string {
  const lines = r.packets.map(
    (p) =>
      `${String(p.index).padStart(5)}  ${p.verdict.padEnd(8)} ${p.reason.padEnd(18)} ${(p.target ?? '-').padEnd(15)} ${(p.crt ?? '').padEnd(9)} ${p.packet}`,
  );
  return [
    `replay in ${r.environment}; services ${r.services.join(', ')}`,
    `${'#'.padStart(5)}  ${'verdict'.padEnd(8)} ${'reason'.padEnd(18)} ${'target'.padEnd(15)} ${'crt'.padEnd(9)} packet`,
    ...lines,
    '',
    `totals: ${Object.entries(r.totals)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}`,
  ].join('\n');
}
