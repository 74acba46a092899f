/* `dvipa agent`: the control plane of one node, until SIGINT/SIGTERM. */
import { Agent, CLAIM_RENEWALS, FENCE_RENEWALS } from '../cluster/agent.js';
import { loadConfig } from '../config/load.js';
import { ConfigError } from '../config/model.js';
import { DEFAULTS, resolveAgentSettings } from '../config/settings.js';
import { CRT_DEFAULT_ENTRIES } from '../dataplane/structs.js';
import { loadIdentities, type Identities } from '../cluster/handshake.js';
import { readSecretFile } from '../config/secret-file.js';
import { log, defaultLogLevel } from '../log.js';
import { command } from './command.js';
import { CliError, EXIT, requireRoot } from './errors.js';
import { etcdOptions, withEtcd } from './etcd-args.js';

function metricsAddress(v: string): string | undefined {
  if (v === '') return undefined;
  const m = /^(\[[0-9a-fA-F:]+\]|[\w.-]+):(\d+)$/.exec(v);
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535)
    throw new CliError(
      `--metrics ${v}: expected host:port (e.g. ${DEFAULTS.metricsAddress}, [::1]:9741) or ''`,
      EXIT.usage,
    );
  return v;
}

export const agentCommand = command({
  command: 'agent',
  describe:
    "run this node's agent: roles from the configuration, reports to routing nodes, DPT and CRT as routing node",
  builder: (y) =>
    withEtcd(y)
      .option('config', {
        type: 'string',
        demandOption: true,
        describe: 'cluster configuration (VIPADynamic language or YAML)',
      })
      .option('node', { type: 'string', demandOption: true, describe: 'which NODE of the configuration this is' })
      .option('key-file', {
        type: 'string',
        describe: 'cluster key (at least 32 bytes, mode 0600); default: CLUSTER KEYFILE of the configuration',
      })
      .option('identities', {
        type: 'string',
        describe:
          'directory of per-node Ed25519 keys (NODE.key of this node, NODE.pub of every peer); default: CLUSTER IDENTITIES',
      })
      .option('pin-root', { type: 'string', default: DEFAULTS.pinRoot })
      .option('port', {
        type: 'number',
        default: DEFAULTS.port,
        describe: 'TCP port of the agents on their cluster addresses',
      })
      .option('scan-ms', {
        type: 'number',
        default: DEFAULTS.scanMs,
        describe: 'reconciliation scan of the sockets, besides kernel events (ms)',
      })
      .option('load-file', {
        type: 'string',
        describe: "a file with this node's load, 0 (idle) to 1 (saturated), for DISTMethod SERVERWLM",
      })
      .option('lease-ttl', {
        type: 'number',
        describe: `seconds a node's etcd lease (membership, owner keys) outlives its last keepalive; takeovers do not wait for it (see --renew-ms) (default: LEASETTL of CLUSTER ETCD, else ${DEFAULTS.leaseTtl}; etcd must allow it: election timeout <= TTL/1.5)`,
      })
      .option('renew-ms', {
        type: 'number',
        default: DEFAULTS.renewMs,
        describe: `with etcd: an owner renews its claim this often; its data plane stops answering for a DVIPA ${FENCE_RENEWALS} intervals after the last confirmed renewal, a backup claims after ${CLAIM_RENEWALS} without one`,
      })
      .option('nopreempt', {
        type: 'boolean',
        describe: 'never take a DVIPA back automatically from a backup (move it with dvipa dvipa move)',
      })
      .option('takeback-delay', {
        type: 'number',
        describe: `seconds the defining node waits, ready, before taking its DVIPA back (default: TAKEBACKDELAY of CLUSTER ETCD, else ${DEFAULTS.takebackDelay})`,
      })
      .option('control', {
        type: 'string',
        default: DEFAULTS.controlSocket,
        describe: "the control socket for dvipa netstat (mode 0600); '' for none",
      })
      .option('metrics', {
        type: 'string',
        default: DEFAULTS.metricsAddress,
        describe: "host:port serving Prometheus metrics at /metrics; '' for none",
      })
      .option('ipsec-seq-margin', {
        type: 'number',
        describe: `IPsec recovery: outbound ESP sequence numbers of re-installed SAs jump this far (default: SEQMARGIN of CLUSTER IPSEC, else ${DEFAULTS.seqMargin}); turns IPsec recovery on`,
      })
      .option('ipsec-interval', {
        type: 'number',
        describe: `IPsec recovery: at most one coupling-facility write per SA this often, ms (default: INTERVAL of CLUSTER IPSEC, else ${DEFAULTS.recordInterval}); turns IPsec recovery on`,
      })
      .option('ready-targets', {
        type: 'number',
        default: DEFAULTS.readyTargets,
        describe:
          'the readiness gate (takeback, move) opens with at least this many targets connected and synced (or all, if fewer)',
      })
      .option('new-flow-rate', {
        type: 'number',
        describe: `routing: new flows per second per CPU that get a CRT entry; above it they are hashed without one, so a flood cannot churn the CRT (default: CLUSTER NEWFLOWRATE, else ${DEFAULTS.newFlowRate}; 0: no guard)`,
      })
      .option('crt-entries', {
        type: 'number',
        describe: `routing: the CRT's size where its maps are made (first start, after dvipa fastpath purge); pinned maps keep theirs, and another size given then is an error (default ${CRT_DEFAULT_ENTRIES}, about 110 MB of kernel memory)`,
      })
      .option('ipsec-vici', {
        type: 'string',
        describe:
          "IKE continuity: charon's VICI socket (e.g. /run/charon.vici); IKE SAs of the DVIPAs are recorded, renegotiated by a new owner and forgotten by the old; turns IPsec recovery on",
      })
      .option('restart-grace', {
        type: 'number',
        default: DEFAULTS.restartGrace,
        describe: 'on a clean stop, seconds a restarted agent has to adopt the DVIPAs before backups take over',
      }),
  handler: async (a) => {
    requireRoot('dvipa agent');
    defaultLogLevel('info');
    let config;
    try {
      config = loadConfig(a.config);
    } catch (e) {
      if (e instanceof ConfigError) throw new CliError(`${a.config}:\n${e.message}`, EXIT.usage);
      throw e;
    }
    const keyFile = a.keyFile ?? config.keyFile;
    if (!keyFile)
      throw new CliError('no cluster key: give --key-file or CLUSTER KEYFILE in the configuration', EXIT.usage);
    let key: Buffer;
    try {
      key = readSecretFile(keyFile, 32);
    } catch (e) {
      throw new CliError(
        `cluster key ${(e as Error).message} (e.g. (umask 077; head -c 32 /dev/urandom > ${keyFile}))`,
        EXIT.usage,
      );
    }
    const idDir = a.identities ?? config.identities;
    let identities: Identities | undefined;
    if (idDir) {
      const peers = [...config.nodes.map((n) => n.name), ...config.peers.map((p) => p.name)].filter(
        (n) => n !== a.node,
      );
      try {
        identities = loadIdentities(idDir, a.node, peers);
      } catch (e) {
        throw new CliError(
          `${(e as Error).message} (dvipa config identity ${a.node} --dir ${idDir} makes a key pair)`,
          EXIT.usage,
        );
      }
    }
    const s = resolveAgentSettings(config, a);
    const etcd = etcdOptions({ ...a, etcd: a.etcd ?? config.coupling?.etcd.join(',') });
    if (s.ipsec && !etcd)
      throw new CliError('IPsec recovery keeps SAs in the coupling facility: give --etcd or CLUSTER ETCD', EXIT.usage);
    const ha = {
      nopreempt: s.nopreempt,
      takebackDelayMs: s.takebackDelaySec * 1000,
      restartGraceSec: s.restartGraceSec,
      renewMs: s.renewMs,
      ...(etcd ? { etcd: { ...etcd, ttlSec: s.leaseTtlSec } } : {}),
    };
    if (ha.etcd && a.insecureEtcd) log.warn("--insecure-etcd: anyone who reaches etcd can move this cluster's DVIPAs");
    if (!identities) log.warn('no CLUSTER IDENTITIES: any holder of the cluster key can speak as any node');
    const agent = new Agent({
      config,
      node: a.node,
      key,
      identities,
      pinRoot: a.pinRoot,
      port: s.port,
      loadFile: a.loadFile,
      scanMs: s.scanMs,
      readyTargets: s.readyTargets,
      newFlowRate: s.newFlowRate,
      crtEntries: s.crtEntries,
      ha,
      controlSocket: a.control || undefined,
      metricsAddress: metricsAddress(a.metrics),
      ipsec: s.ipsec,
      logger: log,
    });
    try {
      await agent.start();
    } catch (e) {
      await agent.stop();
      throw e;
    }
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    await agent.stop();
    log.info('agent stopped; the data plane keeps forwarding with its pinned programs and maps');
  },
});
