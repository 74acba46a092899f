/*
 * The anchor dvipa's failover is measured against: Debian's keepalived (VRRPv3) on the HA
 * topology's routing nodes, r1 (priority 200, preempting) and r2 (100) sharing the DVIPA on
 * their external interfaces. keepalived moves the address only, so each node serves HTTP on
 * it itself (http-server.ts): connections do not survive a change of owner, as with VRRP
 * alone.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { buildHaTopology, HA, holdsDvipa, setRouterLinks } from './ha-topology.js';
import { netnsPath, Topology } from './netns.js';
import { startHttpServer } from './procs.js';
import { until } from './wait.js';
import type { HaPair } from './drill.js';

const PRIORITY: Record<string, number> = { r1: 200, r2: 100 };
const VRID = 10;

export function keepalivedConfig(node: string, advertIntS: number): string {
  return [
    'global_defs {',
    `  router_id ${node}`,
    '  vrrp_version 3',
    '}',
    'vrrp_instance dvipa {',
    '  state BACKUP',
    '  interface ext',
    `  virtual_router_id ${VRID}`,
    `  priority ${PRIORITY[node]}`,
    `  advert_int ${advertIntS}`,
    '  virtual_ipaddress {',
    `    ${HA.dvipa}/32 dev ext`,
    '  }',
    '}',
    '',
  ].join('\n');
}

export class KeepalivedPair implements HaPair {
  private readonly daemons: Record<string, ChildProcess> = {};

  private constructor(
    private readonly topo: Topology,
    readonly ns: Record<string, string>,
    private readonly dir: string,
  ) {}

  /** The topology under `prefix`, HTTP servers on r1 and r2, keepalived on both; r1 holding the DVIPA. */
  static async up(o: { prefix: string; dir: string; advertIntS: number; port: number }): Promise<KeepalivedPair> {
    const topo = new Topology(o.prefix);
    fs.mkdirSync(o.dir, { recursive: true, mode: 0o700 });
    const pair = new KeepalivedPair(topo, {}, o.dir);
    try {
      Object.assign(pair.ns, buildHaTopology(topo));
      for (const r of HA.routers) {
        fs.writeFileSync(path.join(o.dir, `${r.name}.conf`), keepalivedConfig(r.name, o.advertIntS));
        await startHttpServer(topo, pair.ns[r.name], r.name, o.port);
      }
      pair.start('r1');
      await until('keepalived on r1 to hold the DVIPA', () => Promise.resolve(pair.holds('r1')), 15000, pair.where);
      pair.start('r2');
      // r2 backs up once it has heard r1's adverts; give it a moment to, as dvipa's r2 waits for its DPT.
      await new Promise((r) => setTimeout(r, 1000));
      if (pair.holds('r2')) throw new Error(`keepalived on r2 holds the DVIPA beside r1${pair.where}`);
      return pair;
    } catch (e) {
      await pair.down();
      throw e;
    }
  }

  private get where(): string {
    return ` (logs in ${this.dir})`;
  }

  /** keepalived in its own process group (it forks its VRRP process), so that a kill or a freeze reaches both. */
  private start(node: string): void {
    const file = (ext: string) => path.join(this.dir, `${node}.${ext}`);
    const log = fs.openSync(path.join(this.dir, `${node}.log`), 'a');
    try {
      this.daemons[node] = spawn(
        'nsenter',
        [
          `--net=${netnsPath(this.ns[node])}`,
          'keepalived',
          '--dont-fork',
          '--log-console',
          '--no-syslog',
          '--vrrp',
          '--use-file',
          file('conf'),
          '--pid',
          file('pid'),
          '--vrrp_pid',
          file('vrrp.pid'),
        ],
        { detached: true, stdio: ['ignore', log, log] },
      );
    } finally {
      fs.closeSync(log);
    }
  }

  private signal(node: string, sig: NodeJS.Signals): void {
    const d = this.daemons[node];
    if (d?.pid !== undefined && d.exitCode === null && d.signalCode === null) process.kill(-d.pid, sig);
  }

  holds(node: string): boolean {
    return holdsDvipa(this.ns[node]);
  }

  /** keepalived's state shows as the address: a running master holds it (a dead node keeps it on its downed link). */
  active(node: string): Promise<boolean> {
    return Promise.resolve(this.daemons[node] !== undefined && this.holds(node));
  }

  async kill(node: string): Promise<number> {
    const t0 = Date.now();
    setRouterLinks(this.ns[node], 'down');
    await this.stop(node);
    return t0;
  }

  private async stop(node: string): Promise<void> {
    const d = this.daemons[node];
    if (!d) return;
    const exited = d.exitCode !== null || d.signalCode !== null ? undefined : new Promise((r) => d.once('exit', r));
    this.signal(node, 'SIGCONT');
    this.signal(node, 'SIGKILL');
    await exited;
    delete this.daemons[node];
  }

  revive(node: string): number {
    const t0 = Date.now();
    setRouterLinks(this.ns[node], 'up');
    this.start(node);
    return t0;
  }

  /** Freezes (SIGSTOP) or thaws (SIGCONT) a node's keepalived, both its processes. */
  freeze(node: string, frozen: boolean): void {
    this.signal(node, frozen ? 'SIGSTOP' : 'SIGCONT');
  }

  async down(): Promise<void> {
    for (const node of Object.keys(this.daemons)) await this.stop(node);
    this.topo.teardown();
  }
}
