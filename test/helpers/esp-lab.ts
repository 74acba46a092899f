/*
 * The ESP lab of the kernel-lab IPsec tests (ipsec-failover, ipsec-ike): the HA lab's network,
 * a real etcd, the cluster key and a configuration where r1 defines the DVIPA and r2 backs it
 * up with CLUSTER IPSEC, the agents' fleet, and a ping from the peer to the DVIPA whose replies
 * are timed. Everything is removed after the test, also after a failure.
 */
import type { TestContext } from 'node:test';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { inNetns, netnsPath, Topology } from '../../src/lab/netns.js';
import { buildHaTopology, HA } from '../../src/lab/ha-topology.js';
import { startEtcd, type EtcdServer } from '../../src/lab/etcd.js';
import { addSa } from '../../src/ipsec/xfrm.js';
import { askAgent } from '../../src/cluster/control.js';
import type { IpsecDvipaRow } from '../../src/ipsec/ipsec-role.js';
import { uniquePrefix } from './env.js';
import { Agents } from './agents.js';
import { ESP_SA, skipWithoutEsp } from './xfrm.js';

export const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.js');
/** Outbound sequence numbers of re-installed SAs jump this far. */
export const SEQ_MARGIN = 100000;
/** The agents' lease: a dead owner's DVIPA moves after this long. */
export const LEASE_TTL_S = 2;
const [R1, R2] = HA.routers;

const CONFIG = [
  `CLUSTER IPSEC SEQMARGIN ${SEQ_MARGIN} INTERVAL 200`,
  `NODE r1 XCF ${R1.xcf} EXTERNAL ext INTERNAL core0`,
  'VIPADYNAMIC',
  `  VIPADEFINE 255.255.255.255 ${HA.dvipa}`,
  'ENDVIPADYNAMIC',
  `NODE r2 XCF ${R2.xcf} EXTERNAL ext INTERNAL core0`,
  'VIPADYNAMIC',
  `  VIPABACKUP 100 ${HA.dvipa}`,
  'ENDVIPADYNAMIC',
  '',
].join('\n');

const run = (file: string, args: string[]) =>
  new Promise<string>((resolve, reject) =>
    execFile(file, args, { encoding: 'utf8' }, (err, stdout) => (err ? reject(err) : resolve(stdout))),
  );

/** Pings from the peer to the DVIPA every `intervalS`, each reply's arrival and sequence number kept. */
export class Pinger {
  readonly replies: number[] = [];
  private readonly seqs = new Set<number>();
  private readonly proc;

  constructor(topo: Topology, ns: string, intervalS: number) {
    this.proc = topo.spawn(ns, 'ping', ['-n', '-i', String(intervalS), '-W', '1', HA.dvipa], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    readline.createInterface({ input: this.proc.stdout! }).on('line', (l) => {
      const m = /bytes from .* icmp_seq=(\d+)/.exec(l);
      if (!m) return;
      this.replies.push(Date.now());
      this.seqs.add(Number(m[1]));
    });
  }

  since(at: number): number {
    return this.replies.filter((x) => x >= at).length;
  }

  /** The longest time without a reply from a second before `from` on: how long ESP was interrupted. */
  outage(from: number): number {
    const around = this.replies.filter((x) => x >= from - 1000);
    return Math.max(0, ...around.slice(1).map((x, i) => x - around[i]));
  }

  /** Echo requests never answered (up to the last one answered). */
  lost(): number {
    return this.seqs.size ? Math.max(...this.seqs) - this.seqs.size + 1 : 0;
  }

  signal(s: NodeJS.Signals): void {
    this.proc.kill(s);
  }
}

export interface EspLab {
  topo: Topology;
  ns: ReturnType<typeof buildHaTopology>;
  dir: string;
  etcd: EtcdServer;
  agents: Agents;
  /** The agents' arguments for this lab's etcd (plain http, no auth: a lab, said so). */
  args: string[];
  /** What `dvipa netstat ipsec --json` shows of the DVIPA, asked in-process (a node process per poll is slow under TCG). */
  ipsec: (node: string) => Promise<IpsecDvipaRow>;
  /** `dvipa netstat ipsec` as a user runs it. */
  netstat: (node: string) => Promise<string>;
  /** The node's Prometheus metrics, fetched inside its namespace. */
  metrics: (node: string) => Promise<string>;
  /** Waits for `cond` (an error or an agent not answering yet is "not yet"; `waitMs` unless given), then says when it came. */
  waitFor: (what: string, cond: () => Promise<boolean> | boolean, ms?: number) => Promise<void>;
  ping: (intervalS: number) => Pinger;
}

/**
 * Builds the lab for `t`; undefined when this kernel has no ESP (the test is then skipped,
 * visibly, and must return). `cleanup` runs first after the test (what the test started on top).
 * `explain` adds to a timeout's message (the agents' last logs are always there).
 */
export async function espLab(
  t: TestContext,
  tag: string,
  o: { pollMs: number; waitMs: number; cleanup?: () => Promise<void>; explain?: () => string },
): Promise<EspLab | undefined> {
  const t0 = Date.now();
  const topo = new Topology(uniquePrefix(tag));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `dvipa-${tag}-`));
  let etcd: EtcdServer | undefined;
  let agents: Agents | undefined;
  t.after(async () => {
    await o.cleanup?.();
    topo.teardown();
    await etcd?.stop();
    agents?.purge();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  try {
    inNetns(topo.ns('probe'), () => addSa(ESP_SA));
  } catch (e) {
    skipWithoutEsp(t, e);
    return undefined;
  }
  const ns = buildHaTopology(topo);
  fs.writeFileSync(path.join(dir, 'cluster.key'), randomBytes(32), { mode: 0o600 });
  fs.writeFileSync(path.join(dir, 'cluster.cfg'), CONFIG);
  etcd = await startEtcd({ place: { topo, ns: ns.cf, host: HA.cf } });
  const fleet = (agents = new Agents(topo, ns, dir, topo.prefix));
  return {
    topo,
    ns,
    dir,
    etcd,
    agents: fleet,
    args: ['--etcd', etcd.url, '--insecure-etcd', '--lease-ttl', String(LEASE_TTL_S)],
    ipsec: async (node) => (await askAgent(fleet.socket(node), { cmd: 'ipsec' }))[0],
    netstat: (node) => run(process.execPath, [CLI, 'netstat', 'ipsec', '--socket', fleet.socket(node)]),
    metrics: (node) =>
      run('nsenter', [
        `--net=${netnsPath(ns[node])}`,
        process.execPath,
        '-e',
        "fetch('http://127.0.0.1:9741/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))",
      ]),
    waitFor: async (what, cond, ms = o.waitMs) => {
      const end = Date.now() + ms;
      while (
        !(await Promise.resolve()
          .then(cond)
          .catch(() => false))
      ) {
        if (Date.now() > end) await fleet.until(`${what}\n${o.explain?.() ?? ''}`, () => false, 0);
        await new Promise((r) => setTimeout(r, o.pollMs));
      }
      t.diagnostic(`${((Date.now() - t0) / 1000).toFixed(1)} s: ${what}`);
    },
    ping: (intervalS) => new Pinger(topo, ns.client, intervalS),
  };
}
