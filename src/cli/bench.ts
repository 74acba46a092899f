/* `dvipa bench ...`: benchmarks that print figures (a table, or JSON). */
import type { Argv, CommandModule } from 'yargs';
import { benchFastpath, FASTPATH_PATHS, formatFastpathBench } from '../bench/fastpath.js';
import { benchTables, formatTablesBench } from '../bench/tables.js';
import { command, type ArgsOf } from './command.js';
import { CliError, EXIT, requireRoot } from './errors.js';
import { checkLimit, DEFAULTS } from '../config/settings.js';
import { CRT_DEFAULT_ENTRIES } from '../dataplane/structs.js';
import * as fs from 'node:fs';
import * as os from 'node:os';
import {
  ALL_ROUTER_MODES,
  benchLive,
  formatTrafficBench,
  ROUTER_MODES,
  trafficSeries,
  type RouterMode,
} from '../bench/traffic.js';
import { configurePktgen, pktgenCommands, PKTGEN_DIR, runPktgen, type PktgenOptions } from '../bench/pktgen.js';
import { chartSvg, type ChartSeries } from '../bench/svg.js';
import { Progress } from '../bench/progress.js';
import { benchIpsec, formatIpsecBench } from '../bench/ipsec.js';
import { benchTransport, formatTransportBench } from '../bench/transport.js';
import { benchAgent, formatAgentBench } from '../bench/agent.js';
import { benchIke, formatIkeBench } from '../bench/ike.js';
import {
  benchFailover,
  DRILL_FAULT_S,
  FAILOVER_SYSTEMS,
  failoverSeries,
  formatFailoverBench,
  PARTITION_DRILLS,
  type FailoverSystem,
  type PartitionDrill,
} from '../bench/failover.js';

const fastpath = command({
  command: 'fastpath',
  describe: "in-kernel ns/packet of the distributor's paths, and their ratio to a trivial XDP_TX program",
  builder: (y) =>
    y
      .option('json', { type: 'boolean', default: false })
      .option('rounds', { type: 'number', default: 5, describe: 'rounds per path (the median is reported)' })
      .option('repeat', {
        type: 'number',
        default: 1_000_000,
        describe: 'packets per round (BPF_PROG_TEST_RUN repeat)',
      })
      .option('paths', {
        type: 'string',
        describe: `only these paths, comma-separated (the baseline always runs): ${FASTPATH_PATHS.join(', ')}`,
      })
      .option('katran', {
        type: 'string',
        describe:
          "a Katran checkout (git clone https://github.com/facebookincubator/katran): its balancer, built from it, runs in the same harness and rounds (katran_* paths) and dvipa's paths are read against it",
      }),
  handler: async (a) => {
    const paths = a.paths === undefined ? undefined : namesFrom('paths', a.paths, FASTPATH_PATHS);
    requireRoot('dvipa bench fastpath');
    for (const [k, v, max] of [
      ['rounds', a.rounds, 1000],
      ['repeat', a.repeat, 100_000_000],
    ] as const) {
      if (!Number.isInteger(v) || v < 1 || v > max)
        throw new CliError(`--${k} must be an integer from 1 to ${max}`, EXIT.usage);
    }
    // About 35 ns per packet per path on average: the bar shows when that exceeds 2 s.
    const count = paths ? paths.length + 1 : FASTPATH_PATHS.filter((p) => a.katran || !p.startsWith('katran_')).length;
    const progress = new Progress('fastpath', (2 * a.rounds * a.repeat * count * 35) / 1e6);
    const r = await benchFastpath({
      rounds: a.rounds,
      repeat: a.repeat,
      paths,
      katran: a.katran,
      onProgress: (d, t) => progress.update(d / t),
    });
    progress.done();
    process.stdout.write(a.json ? `${JSON.stringify(r, null, 2)}\n` : `${formatFastpathBench(r)}\n`);
  },
});

const tables = command({
  command: 'tables',
  describe: 'Maglev build time, balance and disruption; CRT batch insert and dump',
  builder: (y) =>
    y
      .option('json', { type: 'boolean', default: false })
      .option('crt-entries', { type: 'number', default: 1_000_000, describe: 'CRT entries to insert and dump' }),
  handler: (a) => {
    requireRoot('dvipa bench tables');
    if (!Number.isInteger(a.crtEntries) || a.crtEntries < 1 || a.crtEntries > 50_000_000)
      throw new CliError('--crt-entries must be an integer from 1 to 50000000', EXIT.usage);
    const r = benchTables({ crtEntries: a.crtEntries });
    process.stdout.write(a.json ? `${JSON.stringify(r, null, 2)}\n` : `${formatTablesBench(r)}\n`);
  },
});

const trafficOptions = (y: Argv) =>
  y
    .option('generator', {
      choices: ['live', 'pktgen', 'testrun'] as const,
      default: 'live' as const,
      describe:
        'live: XDP live frames through the lab (works anywhere); pktgen: the kernel module on a real router; testrun: in-kernel per-path figures',
    })
    .option('json', { type: 'boolean', default: false })
    .option('svg', { type: 'string', describe: 'write a chart: packets/s over time per way, and per target' })
    .option('seconds', { type: 'number', default: 3, describe: 'how long each way runs (per round)' })
    .option('rounds', {
      type: 'number',
      default: 1,
      describe:
        "live: rounds of every way, interleaved; rates are the median round, XDP ratios the median of each round's",
    })
    .option('flows', { type: 'number', default: 1000, describe: 'distinct UDP flows (source ports)' })
    .option('size', { type: 'number', default: 64, describe: 'frame size in bytes' })
    .option('modes', {
      type: 'string',
      default: ROUTER_MODES.join(','),
      describe: 'live: which ways to compare (ipvs: IPVS tunnel mode, where the kernel has IPVS)',
    })
    .option('crt-entries', {
      type: 'number',
      describe: `live: the routing node's CRT size (default: a node's, ${CRT_DEFAULT_ENTRIES}, or twice --flows where that is more)`,
    })
    .option('router-only', {
      type: 'boolean',
      default: false,
      describe: 'live: targets are XDP sinks that count and drop, so only the routing node is measured',
    })
    .option('device', { type: 'string', describe: 'pktgen: the interface to send from' })
    .option('dst-mac', { type: 'string', describe: "pktgen: the routing node's external MAC" })
    .option('threads', { type: 'number', default: 1, describe: 'pktgen: kernel threads (one device queue each)' })
    .option('rate', {
      type: 'number',
      default: 0,
      describe: 'pktgen: packets per second per thread (0: as fast as possible)',
    })
    .option('pktgen-dir', { type: 'string', default: PKTGEN_DIR, describe: 'pktgen: its control directory' });

function whole(v: number, name: string, min: number, max: number): void {
  if (!Number.isInteger(v) || v < min || v > max)
    throw new CliError(`--${name} must be an integer from ${min} to ${max}`, EXIT.usage);
}

async function trafficHandler(a: ArgsOf<typeof trafficOptions>): Promise<void> {
  requireRoot('dvipa bench traffic');
  whole(a.seconds, 'seconds', 1, 3600);
  whole(a.rounds, 'rounds', 1, 100);
  // pktgen varies only source ports; the live generator moves to further sources past 50,000.
  whole(a.flows, 'flows', 1, a.generator === 'pktgen' ? 65535 - 10000 : 1_000_000);
  whole(a.size, 'size', 60, 1500);
  if (a.crtEntries !== undefined) checkLimit('crtEntries', 'crt-entries', a.crtEntries);
  const modes = namesFrom<RouterMode>('modes', a.modes, ALL_ROUTER_MODES);
  // pktgen's own limit is far above what one thread sends; 0 is as fast as it can.
  whole(a.rate, 'rate', 0, 100_000_000);
  const write = (text: string, svg?: string) => {
    process.stdout.write(text);
    if (a.svg && svg) fs.writeFileSync(a.svg, svg);
  };
  if (a.generator === 'pktgen') {
    if (!a.device || !a.dstMac)
      throw new CliError(
        '--generator pktgen needs --device (the interface towards the routing node) and --dst-mac (its MAC)',
        EXIT.usage,
      );
    whole(a.threads, 'threads', 1, os.cpus().length);
    const opts: PktgenOptions = {
      device: a.device,
      threads: a.threads,
      dst: '192.0.2.10',
      dstMac: a.dstMac,
      dport: 9999,
      srcMin: '198.18.0.1',
      srcMax: '198.18.0.254',
      sportMin: 10000,
      sportMax: 10000 + a.flows - 1,
      flows: a.flows,
      flowLen: 8,
      ratePps: a.rate,
      size: a.size,
      durationS: a.seconds,
    };
    configurePktgen(pktgenCommands(opts), a.pktgenDir);
    const results = await runPktgen(a.pktgenDir, opts);
    write(
      a.json
        ? `${JSON.stringify({ generator: 'pktgen', results }, null, 2)}\n`
        : `${results.map((r) => `${r.device}: ${r.packets} packets in ${(r.usec / 1e6).toFixed(2)} s, ${r.pps} pps, ${r.errors} errors`).join('\n')}\n`,
    );
    return;
  }
  if (a.generator === 'testrun') {
    const progress = new Progress('testrun', 10000);
    const r = await benchFastpath({ rounds: 5, repeat: 1_000_000, onProgress: (d, t) => progress.update(d / t) });
    progress.done();
    const series: ChartSeries[] = [
      {
        name: 'in-kernel packets/s per path',
        points: r.paths.map((p, i) => ({ t: i, pps: 1e9 / p.nsPerPacket })),
        perTarget: Object.fromEntries(r.paths.map((p) => [p.path, Math.round(1e9 / p.nsPerPacket)])),
      },
    ];
    write(
      a.json ? `${JSON.stringify({ generator: 'testrun', ...r }, null, 2)}\n` : `${formatFastpathBench(r)}\n`,
      chartSvg('dvipa fast path, per path (BPF_PROG_TEST_RUN)', series),
    );
    return;
  }
  const progress = new Progress('live', a.seconds * modes.length * a.rounds * 1000);
  const b = await benchLive({
    seconds: a.seconds,
    rounds: a.rounds,
    flows: a.flows,
    size: a.size,
    modes,
    routerOnly: a.routerOnly,
    crtEntries: a.crtEntries,
    onProgress: (f, note) => progress.update(f, note),
  });
  progress.done();
  write(
    a.json ? `${JSON.stringify(b, null, 2)}\n` : `${formatTrafficBench(b)}\n`,
    chartSvg(`dvipa bench traffic (live frames, ${b.flows} flows)`, trafficSeries(b)),
  );
}

const traffic = command({
  command: 'traffic',
  describe: 'real frames through a routing node: XDP distributor vs kernel forwarding vs nftables DNAT, side by side',
  builder: trafficOptions,
  handler: trafficHandler,
});

const ipsec = command({
  command: 'ipsec',
  describe:
    "a takeover's IPsec work: N SA records read from etcd, SAs and policies installed, records rewritten (needs ESP: run it in scripts/kernel-lab)",
  builder: (y) =>
    y
      .option('json', { type: 'boolean', default: false })
      .option('sas', { type: 'string', default: '1000,5000,10000', describe: 'SA counts, comma-separated' })
      .option('peers', {
        type: 'string',
        describe: "instead: a new owner's charon renegotiating N peers' IKE SAs (e.g. 1,10,100; real charons)",
      }),
  handler: async (a) => {
    requireRoot('dvipa bench ipsec');
    if (a.peers !== undefined) {
      const peers = a.peers.split(',').map(Number);
      if (peers.some((n) => !Number.isInteger(n) || n < 1 || n > 200))
        throw new CliError('--peers: whole numbers from 1 to 200, comma-separated', EXIT.usage);
      const rows = await benchIke(peers);
      process.stdout.write(a.json ? `${JSON.stringify(rows, null, 2)}\n` : `${formatIkeBench(rows)}\n`);
      return;
    }
    const counts = a.sas.split(',').map(Number);
    if (!counts.length || counts.some((n) => !Number.isInteger(n) || n < 1 || n > 100000))
      throw new CliError('--sas: whole numbers from 1 to 100000, comma-separated', EXIT.usage);
    const rows = await benchIpsec(counts);
    process.stdout.write(a.json ? `${JSON.stringify(rows, null, 2)}\n` : `${formatIpsecBench(rows)}\n`);
  },
});

const transport = command({
  command: 'transport',
  describe:
    "an agent's transport under a connection flood (strangers and a peer's address, 1 MiB frames announced): loop delay, RSS, CPU, a real peer's service",
  builder: (y) =>
    y
      .option('json', { type: 'boolean', default: false })
      .option('connections', { type: 'number', default: 10000, describe: 'connections opened by the attacker' })
      .option('hold-ms', { type: 'number', default: 5000, describe: 'how long the attacker holds them' }),
  handler: async (a) => {
    whole(a.connections, 'connections', 1, 18000);
    whole(a.holdMs, 'hold-ms', 100, 600_000);
    const r = await benchTransport({ connections: a.connections, holdMs: a.holdMs });
    process.stdout.write(a.json ? `${JSON.stringify(r, null, 2)}\n` : `${formatTransportBench(r)}\n`);
  },
});

const agent = command({
  command: 'agent',
  describe:
    'a routing agent that owns its DVIPA through etcd, with a full CRT while a target resyncs, /metrics is scraped and junk connections knock: loop delay, RSS, CPU, whether it kept its lease and its DVIPA',
  builder: (y) =>
    y
      .option('json', { type: 'boolean', default: false })
      .option('crt-entries', {
        type: 'number',
        default: 1 << 20,
        describe: 'CRT entries (a SYN flood fills the default 1,048,576)',
      })
      .option('seconds', { type: 'number', default: 10 })
      .option('junk', { type: 'number', default: 10000, describe: 'junk connections held on the agent port' })
      .option('resync', {
        type: 'boolean',
        default: true,
        describe: 'the target sends a full CONNS report every second (--no-resync: never)',
      })
      .option('scrape', {
        type: 'boolean',
        default: true,
        describe: '/metrics scraped every second (--no-scrape: never)',
      })
      .option('etcd-log', {
        type: 'string',
        describe: "append etcd's whole log to this file (its warnings are in the report anyway)",
      })
      .option('lease-ttl', {
        type: 'number',
        default: 1,
        describe: `the agent's etcd lease, seconds (the agent's default is ${DEFAULTS.leaseTtl}; 1 is the shortest)`,
      }),
  handler: async (a) => {
    requireRoot('dvipa bench agent');
    whole(a.crtEntries, 'crt-entries', 1, 1 << 24);
    whole(a.seconds, 'seconds', 1, 600);
    whole(a.junk, 'junk', 0, 18000);
    checkLimit('leaseTtl', 'lease-ttl', a.leaseTtl);
    const r = await benchAgent({
      crtEntries: a.crtEntries,
      seconds: a.seconds,
      junk: a.junk,
      leaseTtlSec: a.leaseTtl,
      resync: a.resync,
      scrape: a.scrape,
      etcdLog: a.etcdLog,
    });
    process.stdout.write(a.json ? `${JSON.stringify(r, null, 2)}\n` : `${formatAgentBench(r)}\n`);
  },
});

/** A comma-separated list of names from `all` ('none' for none, where allowed). */
function namesFrom<T extends string>(flag: string, value: string, all: readonly T[], none = false): T[] {
  if (none && value.trim() === 'none') return [];
  const names = value.split(',').map((m) => m.trim());
  const bad = names.filter((m) => !all.includes(m as T));
  if (bad.length || !names.length || new Set(names).size !== names.length)
    throw new CliError(
      `--${flag}: ${bad.join(', ') || value}: expected a list of ${all.join(', ')}${none ? " (or 'none')" : ''}, each once`,
      EXIT.usage,
    );
  return names as T[];
}

const failover = command({
  command: 'failover',
  describe:
    'the owner dies N times (links down, then its process killed) and comes back, for dvipa and keepalived (VRRPv3) in one run (one lab up at a time, 5 runs each in turn): the outage a client sees; then partition drills (owner frozen, owner isolated): how long both held the address',
  builder: (y) =>
    y
      .option('json', { type: 'boolean', default: false })
      .option('svg', { type: 'string', describe: "write a chart: each run's outage, and median / p90 / max" })
      .option('runs', { type: 'number', default: 20, describe: 'takeovers (and takebacks) per system' })
      .option('advert-int', { type: 'number', default: 0.05, describe: "keepalived's advert_int, seconds (VRRPv3)" })
      .option('systems', { type: 'string', default: FAILOVER_SYSTEMS.join(','), describe: 'which to measure' })
      .option('renew-ms', {
        type: 'string',
        default: String(DEFAULTS.renewMs),
        describe:
          "dvipa's renewal intervals, ms, comma-separated: one lab each, in turn with the others (fence 7, claim delay 8 renewals)",
      })
      .option('drills', {
        type: 'string',
        default: PARTITION_DRILLS.join(','),
        describe:
          "partition drills: freeze (owner's process SIGSTOPped), isolate (owner cut off from etcd and peers, not from clients), or 'none'",
      })
      .option('freeze-seconds', {
        type: 'number',
        default: DRILL_FAULT_S.freeze,
        describe: 'how long the owner stays frozen',
      })
      .option('isolate-seconds', {
        type: 'number',
        default: DRILL_FAULT_S.isolate,
        describe: 'how long the owner stays isolated',
      })
      .option('prefix', {
        type: 'string',
        default: 'dvbf-',
        describe: "names the bench's namespaces and pin roots (its labs are its own, beside 'dvipa lab')",
      }),
  handler: async (a) => {
    requireRoot('dvipa bench failover');
    whole(a.runs, 'runs', 1, 1000);
    // VRRPv3 counts advert_int in centiseconds, up to 40.95 s.
    if (
      !(a.advertInt >= 0.01 && a.advertInt <= 40.95) ||
      Math.abs(Math.round(a.advertInt * 100) - a.advertInt * 100) > 1e-9
    )
      throw new CliError('--advert-int must be from 0.01 to 40.95 seconds, in hundredths', EXIT.usage);
    if (!/^[a-z][a-z0-9-]{0,15}$/.test(a.prefix))
      throw new CliError(
        '--prefix: up to 16 lower-case letters, digits and dashes, starting with a letter',
        EXIT.usage,
      );
    whole(a.freezeSeconds, 'freeze-seconds', 1, 600);
    whole(a.isolateSeconds, 'isolate-seconds', 1, 600);
    const systems = namesFrom<FailoverSystem>('systems', a.systems, FAILOVER_SYSTEMS);
    const drills = namesFrom<PartitionDrill>('drills', a.drills, PARTITION_DRILLS, true);
    const renewMs = a.renewMs.split(',').map((v) => Number(v.trim()));
    for (const r of renewMs) checkLimit('renewMs', 'renew-ms', r);
    if (new Set(renewMs).size !== renewMs.length) throw new CliError('--renew-ms: each interval once', EXIT.usage);
    const progress = new Progress('failover', a.runs * systems.length * 8000);
    const b = await benchFailover({
      runs: a.runs,
      advertIntS: a.advertInt,
      systems,
      renewMs,
      drills,
      faultS: { freeze: a.freezeSeconds, isolate: a.isolateSeconds },
      prefix: a.prefix,
      onProgress: (f, note) => progress.update(f, note),
    });
    progress.done();
    process.stdout.write(a.json ? `${JSON.stringify(b, null, 2)}\n` : `${formatFailoverBench(b)}\n`);
    if (a.svg)
      fs.writeFileSync(
        a.svg,
        chartSvg(`dvipa bench failover: client-observed outage per run (${b.runs} runs)`, failoverSeries(b), {
          x: 'run',
          y: 'longest ping gap, ms (10 ms pings)',
          bars: 'outage ms: median, p90, max',
        }),
      );
  },
});

export const benchCommand: CommandModule = {
  command: 'bench <generator>',
  describe: 'benchmarks',
  builder: (y) =>
    y
      .command(fastpath)
      .command(tables)
      .command(traffic)
      .command(ipsec)
      .command(transport)
      .command(agent)
      .command(failover)
      .demandCommand(1),
  handler: () => undefined,
};
