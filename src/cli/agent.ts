/* `dvipa agent`: the control plane of one node, until SIGINT/SIGTERM. */
import * as fs from 'node:fs';
import type { CommandModule } from 'yargs';
import { Agent, CLAIM_RENEWALS, DEFAULT_LEASE_TTL_SEC, DEFAULT_RENEW_MS, FENCE_RENEWALS, type HaOptions } from '../cluster/agent.js';
import { loadConfig } from '../config/load.js';
import { ConfigError, IPSEC_LIMITS, type CouplingConfig, type IpsecConfig } from '../config/model.js';
import { DEFAULT_RECORD_INTERVAL_MS, DEFAULT_SEQ_MARGIN, type IpsecOptions } from '../ipsec/ipsec-role.js';
import { DEFAULT_PIN_ROOT } from '../dataplane/fastpath.js';
import { DEFAULT_PORT } from '../cluster/transport.js';
import { DEFAULT_CONTROL_SOCKET } from '../cluster/control.js';
import { DEFAULT_METRICS_ADDRESS } from '../cluster/metrics.js';
import { log, defaultLogLevel } from '../log.js';
import { CliError, EXIT, requireRoot } from './errors.js';
import { etcdOptions, withEtcd, type EtcdArgs } from './etcd-args.js';

interface AgentArgs extends EtcdArgs {
  config: string; node: string; keyFile?: string; pinRoot: string; port: number; loadFile?: string; scanMs: number;
  leaseTtl?: number; nopreempt?: boolean; takebackDelay?: number; restartGrace: number; renewMs: number; control: string; metrics: string;
  ipsecSeqMargin?: number; ipsecInterval?: number;
}

/** IPsec recovery: on with CLUSTER IPSEC (or either --ipsec option), the command line over the configuration. */
function ipsecOptions(a: AgentArgs, c: IpsecConfig | undefined, etcd: boolean): IpsecOptions | undefined {
  if (!c && a.ipsecSeqMargin === undefined && a.ipsecInterval === undefined) return undefined;
  const within = (v: number, name: string, [min, max]: readonly [number, number]) => {
    if (!Number.isInteger(v) || v < min || v > max) throw new CliError(`--${name} must be a whole number from ${min} to ${max}`, EXIT.usage);
    return v;
  };
  if (!etcd) throw new CliError('IPsec recovery keeps SAs in the coupling facility: give --etcd or CLUSTER ETCD', EXIT.usage);
  return {
    seqMargin: within(a.ipsecSeqMargin ?? c?.seqMargin ?? DEFAULT_SEQ_MARGIN, 'ipsec-seq-margin', IPSEC_LIMITS.seqMargin),
    intervalMs: within(a.ipsecInterval ?? c?.interval ?? DEFAULT_RECORD_INTERVAL_MS, 'ipsec-interval', IPSEC_LIMITS.interval),
  };
}

/** The command line's HA options over the configuration's (CLUSTER ETCD ...). */
function haOptions(a: AgentArgs, c: CouplingConfig | undefined): HaOptions {
  const whole = (v: number, name: string, min: number, max: number) => {
    if (!Number.isInteger(v) || v < min || v > max) throw new CliError(`--${name} must be whole seconds from ${min} to ${max}`, EXIT.usage);
    return v;
  };
  const ttlSec = whole(a.leaseTtl ?? c?.leaseTtl ?? DEFAULT_LEASE_TTL_SEC, 'lease-ttl', 1, 300);
  const takebackDelay = whole(a.takebackDelay ?? c?.takebackDelay ?? 0, 'takeback-delay', 0, 86400);
  whole(a.restartGrace, 'restart-grace', 0, 3600);
  if (!Number.isInteger(a.renewMs) || a.renewMs < 5 || a.renewMs > 10000) throw new CliError('--renew-ms must be whole milliseconds from 5 to 10000', EXIT.usage);
  const etcd = etcdOptions({ ...a, etcd: a.etcd ?? c?.etcd.join(',') });
  return {
    nopreempt: a.nopreempt ?? c?.nopreempt ?? false,
    takebackDelayMs: takebackDelay * 1000,
    restartGraceSec: a.restartGrace,
    renewMs: a.renewMs,
    ...(etcd ? { etcd: { ...etcd, ttlSec } } : {}),
  };
}

function metricsAddress(v: string): string | undefined {
  if (v === '') return undefined;
  const m = /^(\[[0-9a-fA-F:]+\]|[\w.-]+):(\d+)$/.exec(v);
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new CliError(`--metrics ${v}: expected host:port (e.g. ${DEFAULT_METRICS_ADDRESS}, [::1]:9741) or ''`, EXIT.usage);
  return v;
}

export const agentCommand: CommandModule<object, AgentArgs> = {
  command: 'agent',
  describe: "run this node's agent: roles from the configuration, reports to routing nodes, DPT and CRT as routing node",
  builder: (y) =>
    withEtcd(y)
      .option('config', { type: 'string', demandOption: true, describe: 'cluster configuration (VIPADynamic language or YAML)' })
      .option('node', { type: 'string', demandOption: true, describe: 'which NODE of the configuration this is' })
      .option('key-file', { type: 'string', describe: 'cluster key (at least 32 bytes); default: CLUSTER KEYFILE of the configuration' })
      .option('pin-root', { type: 'string', default: DEFAULT_PIN_ROOT })
      .option('port', { type: 'number', default: DEFAULT_PORT, describe: 'TCP port of the agents on their cluster addresses' })
      .option('scan-ms', { type: 'number', default: 1000, describe: 'reconciliation scan of the sockets, besides kernel events (ms)' })
      .option('load-file', { type: 'string', describe: "a file with this node's load, 0 (idle) to 1 (saturated), for DISTMethod SERVERWLM" })
      .option('lease-ttl', { type: 'number', describe: `seconds a node's etcd lease (membership, owner keys) outlives its last keepalive; takeovers do not wait for it (see --renew-ms) (default: LEASETTL of CLUSTER ETCD, else ${DEFAULT_LEASE_TTL_SEC})` })
      .option('nopreempt', { type: 'boolean', describe: 'never take a DVIPA back automatically from a backup (move it with dvipa dvipa move)' })
      .option('takeback-delay', { type: 'number', describe: 'seconds the defining node waits, ready, before taking its DVIPA back (default: TAKEBACKDELAY of CLUSTER ETCD, else 0)' })
      .option('control', { type: 'string', default: DEFAULT_CONTROL_SOCKET, describe: "the control socket for dvipa netstat (mode 0600); '' for none" })
      .option('metrics', { type: 'string', default: DEFAULT_METRICS_ADDRESS, describe: "host:port serving Prometheus metrics at /metrics; '' for none" })
      .option('ipsec-seq-margin', { type: 'number', describe: `IPsec recovery: outbound ESP sequence numbers of re-installed SAs jump this far (default: SEQMARGIN of CLUSTER IPSEC, else ${DEFAULT_SEQ_MARGIN}); turns IPsec recovery on` })
      .option('ipsec-interval', { type: 'number', describe: `IPsec recovery: at most one coupling-facility write per SA this often, ms (default: INTERVAL of CLUSTER IPSEC, else ${DEFAULT_RECORD_INTERVAL_MS}); turns IPsec recovery on` })
      .option('restart-grace', { type: 'number', default: 10, describe: 'on a clean stop, seconds a restarted agent has to adopt the DVIPAs before backups take over' })
      .option('renew-ms', { type: 'number', default: DEFAULT_RENEW_MS,
        describe: `with etcd: an owner renews its claim this often; its data plane stops answering for a DVIPA ${FENCE_RENEWALS} intervals after the last confirmed renewal, a backup claims after ${CLAIM_RENEWALS} without one` }) as never,
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
    if (!keyFile) throw new CliError('no cluster key: give --key-file or CLUSTER KEYFILE in the configuration', EXIT.usage);
    let key: Buffer;
    try {
      key = fs.readFileSync(keyFile);
    } catch (e) {
      throw new CliError(`cluster key ${keyFile}: ${(e as Error).message}`, EXIT.usage);
    }
    if (key.length < 32) throw new CliError(`cluster key ${keyFile}: ${key.length} bytes, at least 32 needed (e.g. head -c 32 /dev/urandom > ${keyFile})`, EXIT.usage);
    if (!Number.isInteger(a.port) || a.port < 1 || a.port > 65535) throw new CliError('--port must be from 1 to 65535', EXIT.usage);
    if (!Number.isInteger(a.scanMs) || a.scanMs < 50 || a.scanMs > 60000) throw new CliError('--scan-ms must be from 50 to 60000', EXIT.usage);

    const ha = haOptions(a, config.coupling);
    const ipsec = ipsecOptions(a, config.ipsec, !!ha.etcd);
    const agent = new Agent({ config, node: a.node, key, pinRoot: a.pinRoot, port: a.port, loadFile: a.loadFile, scanMs: a.scanMs, ha, controlSocket: a.control || undefined, metricsAddress: metricsAddress(a.metrics), ipsec, logger: log });
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
};
