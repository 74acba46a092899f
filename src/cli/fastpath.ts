/* `dvipa fastpath ...`: drive the data plane of this node directly. */
import type { Argv, CommandModule } from 'yargs';
import { FastPath } from '../dataplane/fastpath.js';
import { DEFAULTS } from '../config/settings.js';
import { serviceName } from '../net/service.js';
import { readServiceFile } from '../config/service-file.js';
import { replayPcap, formatReplay } from '../lab/replay.js';
import { command } from './command.js';
import { CliError, EXIT, requireRoot } from './errors.js';

const common = <T>(y: Argv<T>) =>
  y
    .option('pin-root', {
      type: 'string',
      default: DEFAULTS.pinRoot,
      describe: 'bpffs directory of the maps and links',
    })
    .option('json', { type: 'boolean', default: false, describe: 'print JSON' });

function print(json: boolean, value: unknown, text: () => string): void {
  process.stdout.write(
    json ? `${JSON.stringify(value, (_, v: unknown) => (typeof v === 'bigint' ? Number(v) : v), 2)}\n` : `${text()}\n`,
  );
}

function withFastPath<T>(pinRoot: string, fn: (fp: FastPath) => T): T {
  requireRoot('dvipa fastpath');
  const fp = FastPath.open({ pinRoot });
  try {
    return fn(fp);
  } finally {
    fp.close();
  }
}

const apply = command({
  command: 'apply',
  describe: 'configure this node from a service description: cluster address, egress interfaces, services and targets',
  builder: (y) =>
    common(y).option('config', { type: 'string', demandOption: true, describe: 'service description (YAML or JSON)' }),
  handler: (a) => {
    const file = readServiceFile(a.config);
    withFastPath(a.pinRoot, (fp) => {
      fp.configure({ clusterAddr: file.clusterAddress, clusterAddr6: file.clusterAddress6 });
      for (const e of file.egress) fp.enableEgress(e);
      const wanted = new Set(file.services.map(serviceName));
      for (const s of fp.listServices()) if (!wanted.has(serviceName(s))) fp.removeService(s);
      const applied = file.services.map((s) => ({
        service: serviceName(s),
        id: fp.setTargets(s, s.targets, { affinitySec: s.timedAffinity }),
        targets: s.targets,
      }));
      print(a.json, { clusterAddress: file.clusterAddress, egress: file.egress, services: applied }, () =>
        applied
          .map(
            (s) =>
              `${s.service} (id ${s.id}): ${s.targets.map((t) => `${t.addr}×${t.weight}`).join(' ') || 'no targets'}`,
          )
          .join('\n'),
      );
    });
  },
});

const roleOption = <T>(y: Argv<T>) =>
  y.option('role', {
    choices: ['distributor', 'decap'] as const,
    default: 'distributor' as const,
    describe: 'distributor (routing node) or decap (target)',
  });

const attach = command({
  command: 'attach <iface>',
  describe: 'attach (or atomically replace) the XDP program on an interface',
  builder: (y) =>
    roleOption(common(y))
      .positional('iface', { type: 'string', demandOption: true, describe: 'interface name' })
      .option('mode', {
        choices: ['auto', 'native', 'generic'] as const,
        default: 'auto' as const,
        describe: 'auto: native XDP, else generic with a warning',
      }),
  handler: (a) =>
    withFastPath(a.pinRoot, (fp) => {
      const r = fp.attach(a.role, a.iface, a.mode);
      print(
        a.json,
        r,
        () => `${r.program} ${r.replaced ? 'replaced on' : `attached (${r.mode}) to`} ${r.ifname}, link ${r.linkId}`,
      );
    }),
});

const detach = command({
  command: 'detach <iface>',
  describe: "remove dvipa's XDP program from an interface (maps and their entries stay)",
  builder: (y) => roleOption(common(y)).positional('iface', { type: 'string', demandOption: true }),
  handler: (a) =>
    withFastPath(a.pinRoot, (fp) => {
      if (!fp.detach(a.role, a.iface)) throw new CliError(`no dvipa ${a.role} program is attached to ${a.iface}`);
      print(a.json, { detached: a.iface, role: a.role }, () => `detached from ${a.iface}`);
    }),
});

const status = command({
  command: 'status',
  describe: 'services, counters per service and per reason, attached programs',
  builder: (y) => common(y),
  handler: (a) =>
    withFastPath(a.pinRoot, (fp) => {
      const nexthops = fp.nexthops();
      const services = fp.listServices().map((s) => ({
        service: serviceName(s),
        ...s,
        // What the service's table points to (a backup's follows its owner's distribution).
        targets: nexthops.filter((n) => n.svcId === s.id).map((n) => n.addr),
        stats: fp.serviceStats(s.id),
      }));
      const reasons = Object.fromEntries(Object.entries(fp.reasonCounts()).filter(([, n]) => n > 0n));
      const value = {
        config: fp.nodeConfig(),
        links: fp.links(),
        crtEntries: fp.crt.count() + fp.crtEst.count() + fp.crt6.count() + fp.crt6Est.count(),
        crtConfirmed: fp.crtEst.count() + fp.crt6Est.count(),
        services,
        reasons,
      };
      print(a.json, value, () =>
        [
          `cluster address ${value.config.clusterAddr}${value.config.enabled ? '' : ' (not enabled)'}, CRT entries ${value.crtEntries} (${value.crtConfirmed} confirmed), new-flow rate guard ${value.config.maxNewFlows || 'off'}`,
          ...value.links.map((l) => `${l.program} on ${l.ifname}`),
          ...services.map(
            (s) =>
              `${s.service} id ${s.id} → ${s.targets.join(' ') || 'no targets'}: packets ${s.stats.packets} bytes ${s.stats.bytes} hit ${s.stats.crtHit} new ${s.stats.crtNew} recovered ${s.stats.recovered} guarded ${s.stats.crtGuarded} forwarded ${s.stats.forwarded} dropped ${s.stats.dropped}`,
          ),
          ...Object.entries(reasons).map(([r, n]) => `  ${r.padEnd(22)} ${n}`),
        ].join('\n'),
      );
    }),
});

const purge = command({
  command: 'purge',
  describe: 'detach every dvipa program and remove all pinned maps (forwarding stops)',
  builder: (y) => common(y),
  handler: (a) => {
    requireRoot('dvipa fastpath purge');
    FastPath.purge(a.pinRoot);
    print(a.json, { purged: a.pinRoot }, () => `removed ${a.pinRoot}`);
  },
});

const replay = command({
  command: 'replay',
  describe: 'run each packet of a pcap through the distributor (BPF_PROG_TEST_RUN): verdict, target, reason',
  builder: (y) =>
    common(y)
      .option('config', { type: 'string', demandOption: true, describe: 'service description (YAML or JSON)' })
      .option('pcap', { type: 'string', demandOption: true, describe: 'classic pcap, Ethernet link type' })
      .option('netns', {
        type: 'string',
        describe:
          'run in this existing namespace, with its FIB (default: a scratch namespace with routes to every target)',
      })
      .option('ingress', { type: 'string', describe: 'with --netns: the interface packets arrive on' }),
  handler: async (a) => {
    requireRoot('dvipa fastpath replay');
    if (a.ingress && !a.netns)
      throw new CliError('--ingress needs --netns (the scratch namespace has its own interfaces)', EXIT.usage);
    const file = readServiceFile(a.config);
    const result = await replayPcap(file, a.pcap, { netns: a.netns, ingress: a.ingress });
    print(a.json, result, () => formatReplay(result));
  },
});

export const fastpathCommand: CommandModule = {
  command: 'fastpath <command>',
  describe: 'the XDP data path of this node',
  builder: (y) =>
    y.command(apply).command(attach).command(detach).command(status).command(replay).command(purge).demandCommand(1),
  handler: () => undefined,
};
