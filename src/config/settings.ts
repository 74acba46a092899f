/*
 * Every limit and default of dvipa's settings in one table, read by both configuration
 * syntaxes (profile.ts, yaml.ts), the command line (cli/) and the modules that apply them,
 * and the one rule for who wins: a command-line flag over the configuration file over the
 * default (resolveAgentSettings).
 */
import { DvipaError, EXIT } from '../errors.js';
import type { CouplingConfig, IpsecConfig } from './model.js';
import { DEFAULT_WEIGHT } from '../tables/dpt.js';

/** Inclusive ranges of whole numbers. */
export const LIMITS = {
  /** Seconds a node's etcd lease (membership, owner keys) outlives its last keepalive. */
  leaseTtl: [1, 300],
  /** Milliseconds between two renewals of an owner's claim in etcd. */
  renewMs: [5, 10000],
  /** Seconds the defining node waits, ready, before taking its DVIPA back. */
  takebackDelay: [0, 86400],
  /** Seconds a restarted agent has to adopt its DVIPAs after a clean stop. */
  restartGrace: [0, 3600],
  /** How far outbound ESP sequence numbers of a re-installed SA jump. */
  seqMargin: [1, 2 ** 31],
  /** Milliseconds between two store writes for one SA. */
  recordInterval: [100, 60000],
  /** TCP port of the agents on their cluster addresses. */
  port: [1, 65535],
  /** Milliseconds between reconciliation scans of the sockets. */
  scanMs: [50, 60000],
  /** Targets connected and synced before the readiness gate (takeback, move) opens. */
  readyTargets: [0, 1024],
  /** VIPABACKUP and HOTSTANDBY backup ranks (the primary's is above them). */
  rank: [1, 254],
  /** WEIGHTEDACTIVE weights. */
  weight: [1, 100],
  /** TIMEDAFFINITY seconds. */
  timedAffinity: [0, 99999],
  /** New flows per second per CPU that get a CRT entry (the new-flow rate guard); 0: no guard. */
  newFlowRate: [0, 100_000_000],
  /** Entries of the CRT's tables (crt, crt_est; crt6 and crt6_est take up to 2^18 of them). */
  crtEntries: [1, 1 << 28],
} as const satisfies Record<string, readonly [number, number]>;

export const DEFAULTS = {
  /**
   * Takeovers do not wait for the lease (renewals decide): it bounds how long a dead node stays
   * a member, and a longer one rides out a stall of the agent's main thread, whose keepalives
   * would otherwise miss and take its owner keys with the lease.
   */
  leaseTtl: 3,
  /** 50 renewals a second per owned DVIPA: a fence of 140 ms, a claim delay of 160 ms (docs/ha.md). */
  renewMs: 20,
  takebackDelay: 0,
  restartGrace: 10,
  nopreempt: false,
  seqMargin: 1_000_000,
  recordInterval: 1000,
  port: 7400,
  scanMs: 1000,
  readyTargets: 1,
  /** A VIPABACKUP without a rank. */
  rank: 1,
  /** A WEIGHTEDACTIVE destination without a weight: the DPT applies it. */
  weight: DEFAULT_WEIGHT,
  timedAffinity: 0,
  /**
   * Above this, a CPU's further new flows that second are hashed without a CRT insert. An
   * insert costs hundreds of ns (an LRU eviction, once the table is full), the hash alone tens:
   * at this rate one CPU spends a few percent of its time on inserts, and a flood of SYNs can
   * neither buy more nor age out more than this many unconfirmed entries per second per CPU.
   */
  newFlowRate: 100_000,
  /** Nodes found through etcd member records one agent takes at most (more are counted refusals). */
  maxMembers: 256,
  pinRoot: '/sys/fs/bpf/dvipa',
  controlSocket: '/run/dvipa/agent.sock',
  metricsAddress: '127.0.0.1:9741',
} as const;

export type Limited = keyof typeof LIMITS;

export function withinLimits(name: Limited, v: number): boolean {
  const [min, max] = LIMITS[name];
  return Number.isInteger(v) && v >= min && v <= max;
}

/** A command-line setting out of its range, or missing what it needs. */
export class SettingError extends DvipaError {
  constructor(message: string) {
    super(message, EXIT.usage);
  }
}

/** `v`, given as `--flag`, if LIMITS allow it; else a usage error naming the range. */
export function checkLimit(name: Limited, flag: string, v: number): number {
  if (!withinLimits(name, v))
    throw new SettingError(`--${flag} must be a whole number from ${LIMITS[name][0]} to ${LIMITS[name][1]}`);
  return v;
}

/** The agent's settings the command line may override. Undefined: not given. */
export interface AgentFlags {
  leaseTtl?: number;
  renewMs?: number;
  takebackDelay?: number;
  nopreempt?: boolean;
  restartGrace?: number;
  ipsecSeqMargin?: number;
  ipsecInterval?: number;
  ipsecVici?: string;
  port?: number;
  scanMs?: number;
  readyTargets?: number;
  newFlowRate?: number;
  crtEntries?: number;
}

export interface AgentSettings {
  leaseTtlSec: number;
  renewMs: number;
  takebackDelaySec: number;
  nopreempt: boolean;
  restartGraceSec: number;
  /** Undefined: IPsec recovery is off. */
  ipsec?: { seqMargin: number; intervalMs: number; vici?: string };
  port: number;
  scanMs: number;
  readyTargets: number;
  /** New flows per second per CPU that get a CRT entry; 0: no guard. */
  newFlowRate: number;
  /** The CRT's size when its maps are made; undefined: the pinned maps' size, else the default. */
  crtEntries?: number;
}

/** What a file says, where the agent's settings come from. */
export interface AgentFileSettings {
  coupling?: CouplingConfig;
  ipsec?: IpsecConfig;
  newFlowRate?: number;
}

/**
 * The agent's settings: each flag over the file over the default, checked against LIMITS
 * (a file's values were checked as it was parsed). IPsec recovery is on with CLUSTER IPSEC
 * or any IPsec flag.
 */
export function resolveAgentSettings(file: AgentFileSettings, flags: AgentFlags): AgentSettings {
  const pick = (
    name: Limited,
    flag: string,
    given: number | undefined,
    fromFile: number | undefined,
    dflt: number,
  ): number => checkLimit(name, flag, given ?? fromFile ?? dflt);
  const c = file.coupling;
  const ipsecOn =
    file.ipsec !== undefined ||
    flags.ipsecSeqMargin !== undefined ||
    flags.ipsecInterval !== undefined ||
    !!flags.ipsecVici;
  return {
    leaseTtlSec: pick('leaseTtl', 'lease-ttl', flags.leaseTtl, c?.leaseTtl, DEFAULTS.leaseTtl),
    renewMs: pick('renewMs', 'renew-ms', flags.renewMs, undefined, DEFAULTS.renewMs),
    takebackDelaySec: pick(
      'takebackDelay',
      'takeback-delay',
      flags.takebackDelay,
      c?.takebackDelay,
      DEFAULTS.takebackDelay,
    ),
    nopreempt: flags.nopreempt ?? c?.nopreempt ?? DEFAULTS.nopreempt,
    restartGraceSec: pick('restartGrace', 'restart-grace', flags.restartGrace, undefined, DEFAULTS.restartGrace),
    ...(ipsecOn
      ? {
          ipsec: {
            seqMargin: pick(
              'seqMargin',
              'ipsec-seq-margin',
              flags.ipsecSeqMargin,
              file.ipsec?.seqMargin,
              DEFAULTS.seqMargin,
            ),
            intervalMs: pick(
              'recordInterval',
              'ipsec-interval',
              flags.ipsecInterval,
              file.ipsec?.interval,
              DEFAULTS.recordInterval,
            ),
            ...(flags.ipsecVici ? { vici: flags.ipsecVici } : {}),
          },
        }
      : {}),
    port: pick('port', 'port', flags.port, undefined, DEFAULTS.port),
    scanMs: pick('scanMs', 'scan-ms', flags.scanMs, undefined, DEFAULTS.scanMs),
    readyTargets: pick('readyTargets', 'ready-targets', flags.readyTargets, undefined, DEFAULTS.readyTargets),
    newFlowRate: pick('newFlowRate', 'new-flow-rate', flags.newFlowRate, file.newFlowRate, DEFAULTS.newFlowRate),
    ...(flags.crtEntries !== undefined
      ? { crtEntries: checkLimit('crtEntries', 'crt-entries', flags.crtEntries) }
      : {}),
  };
}
