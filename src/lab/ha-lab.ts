/*
 * `dvipa lab`: the HA topology (ha-topology.ts) brought up on this machine and left running
 * between commands: a real etcd, HTTP and line servers on the targets, an agent per node,
 * each process detached with its log and control socket in the state directory. `down`
 * removes all of it, from the state file or, if that is gone, by the lab's name prefix.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { askAgent } from '../cluster/control.js';
import { newIdentity } from '../cluster/handshake.js';
import { FastPath } from '../dataplane/fastpath.js';
import { ip } from '../net/iproute.js';
import { buildHaTopology, haConfig, HA, HA_DVIPAS, holdsDvipa, setRouterLinks } from './ha-topology.js';
import { netnsPath, Topology } from './netns.js';
import { DEFAULTS } from '../config/settings.js';
import { MEMORY_DIR, startEtcd } from './etcd.js';
import { LAB_CRT_ENTRIES, LAB_NICE } from './procs.js';
import { LabError, until } from './wait.js';
import type { VdptRow, VipadynRow } from '../cluster/views.js';

/** The fields of an agent's log line the lab reads. */
type LogEntry = {
  msg?: string;
  time?: number;
  level?: number;
  dvipa?: string;
  err?: string;
  peer?: string;
  reason?: string;
  why?: string;
};

export const LAB_PREFIX = 'dvlab-';
export const DEFAULT_LAB_DIR = '/run/dvipa-lab';
/** The lab's etcd data, in memory (see etcd.ts). */
/** etcd's data in memory, one directory per lab (its prefix): a bench's labs never share it with `dvipa lab`. */
const etcdDir = (prefix: string) => path.join(MEMORY_DIR, `${prefix}etcd`);
export const HTTP_PORT = 80;
export const LINE_PORT = 8080;

const here = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.join(here, '..', 'cli', 'main.js');

export interface LabState {
  prefix: string;
  dir: string;
  ns: Record<string, string>;
  pids: Record<string, number>;
  etcd: string;
  up: string;
  /** The routing agents' --renew-ms, when not the default (a benchmark comparing settings). */
  renewMs?: number;
}

const pinRoot = (prefix: string, node: string) => `/sys/fs/bpf/${prefix}${node}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export { LabError };

/** The verdict counters of the data plane pinned at `root` (a lab node's, the HA tests'). */
export function reasonsAt(root: string): Record<string, bigint> {
  const fp = FastPath.open({ pinRoot: root });
  try {
    return fp.reasonCounts();
  } finally {
    fp.close();
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export class HaLab {
  private constructor(readonly state: LabState) {}

  static stateFile(dir: string): string {
    return path.join(dir, 'state.json');
  }

  /** The running lab, or undefined. */
  static open(dir = DEFAULT_LAB_DIR): HaLab | undefined {
    const f = HaLab.stateFile(dir);
    if (!fs.existsSync(f)) return undefined;
    return new HaLab(JSON.parse(fs.readFileSync(f, 'utf8')) as LabState);
  }

  /**
   * `prefix` names its namespaces and pin roots: another than LAB_PREFIX makes a lab of one's
   * own (the benchmark, tests). `renewMs`: the routing agents' renewal interval (docs/ha.md).
   */
  static async up(
    dir = DEFAULT_LAB_DIR,
    progress: (m: string) => void = () => undefined,
    prefix = LAB_PREFIX,
    renewMs?: number,
  ): Promise<HaLab> {
    if (fs.existsSync(HaLab.stateFile(dir)))
      throw new LabError(`the lab is already up (state in ${dir}): 'dvipa lab down' first`);
    if (
      ip('netns', 'list')
        .split('\n')
        .some((l) => l.startsWith(prefix))
    )
      throw new LabError(`namespaces named ${prefix}* exist without a lab state: 'dvipa lab down' removes them`);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const state: LabState = { prefix, dir, ns: {}, pids: {}, etcd: '', up: new Date().toISOString(), renewMs };
    const lab = new HaLab(state);
    try {
      fs.writeFileSync(path.join(dir, 'cluster.key'), randomBytes(32), { mode: 0o600 });
      fs.rmSync(path.join(dir, 'nodes'), { recursive: true, force: true });
      for (const n of [...HA.routers, ...HA.targets]) newIdentity(path.join(dir, 'nodes'), n.name);
      fs.writeFileSync(path.join(dir, 'cluster.cfg'), haConfig([HTTP_PORT, LINE_PORT]));
      progress('namespaces, bridges and veths');
      state.ns = buildHaTopology(new Topology(prefix));
      lab.save();
      progress('servers on the targets (HTTP :80, line :8080)');
      for (const t of HA.targets) {
        await lab.startReady(`http-${t.name}`, t.name, process.execPath, [
          path.join(here, 'http-server.js'),
          t.name,
          String(HTTP_PORT),
        ]);
        await lab.startReady(`line-${t.name}`, t.name, process.execPath, [
          path.join(here, 'name-server.js'),
          t.name,
          String(LINE_PORT),
          '9999',
        ]);
      }
      progress('etcd');
      fs.rmSync(etcdDir(prefix), { recursive: true, force: true });
      fs.mkdirSync(etcdDir(prefix), { mode: 0o700 });
      const etcd = await startEtcd({
        place: { topo: new Topology(prefix), ns: state.ns.cf, host: HA.cf },
        dir: etcdDir(prefix),
        spawn: (cmd, args) => lab.detached('etcd', 'cf', cmd, args),
      });
      state.etcd = etcd.url;
      lab.save();
      progress('agents');
      for (const t of HA.targets) lab.startAgent(t.name);
      lab.startAgent('r1');
      // Setup waits, as the tests' (test/helpers/agents.ts): at load averages of 20-35 r1's
      // agent took 3.6 s to start and 6.8 s more to claim (either family) after reaching etcd.
      await lab.until(
        'r1 to own both DVIPAs',
        async () =>
          (await Promise.all(HA_DVIPAS.map((d) => lab.vipadyn('r1', d)))).every((r) => r?.status === 'Active'),
        30000,
      );
      lab.startAgent('r2');
      const r2Joined = Date.now();
      await lab.until(
        'the DPTs of r1 and r2 to be complete',
        async () => (await lab.readyTargets('r1')) === 3 && (await lab.readyTargets('r2')) === 2,
        30000,
      );
      // A backup trusts its view of etcd (and takes over within its claim delay) once it has
      // seen etcd healthy for a lease time and a half second: a drill right after `lab up`
      // would otherwise measure that settling, which a running cluster has long behind it.
      const settled = r2Joined + 1000 * DEFAULTS.leaseTtl + 500;
      if (Date.now() < settled) {
        progress('r2 settling');
        await new Promise((r) => setTimeout(r, settled - Date.now()));
      }
      lab.save();
      return lab;
    } catch (e) {
      await lab.down();
      throw e;
    }
  }

  private save(): void {
    fs.writeFileSync(HaLab.stateFile(this.state.dir), `${JSON.stringify(this.state, null, 2)}\n`);
  }

  /** A process in a node's namespace that outlives this command; its output goes to DIR/NAME.log. */
  private detached(name: string, node: string, cmd: string, args: string[]): ChildProcess {
    const out = fs.openSync(path.join(this.state.dir, `${name}.log`), 'a');
    try {
      const child = spawn('nsenter', [`--net=${netnsPath(this.state.ns[node])}`, cmd, ...args], {
        detached: true,
        stdio: ['ignore', out, out],
      });
      child.unref();
      this.state.pids[name] = child.pid!;
      this.save();
      return child;
    } finally {
      fs.closeSync(out);
    }
  }

  private async startReady(name: string, node: string, cmd: string, args: string[]): Promise<void> {
    this.detached(name, node, cmd, args);
    const log = path.join(this.state.dir, `${name}.log`);
    await this.until(
      `${name} to listen`,
      async () => fs.existsSync(log) && fs.readFileSync(log, 'utf8').includes('ready'),
      5000,
    );
  }

  socket(node: string): string {
    return path.join(this.state.dir, `${node}.sock`);
  }

  startAgent(node: string): void {
    const routing = HA.routers.some((r) => r.name === node);
    // At the priority deploy/dvipa-agent.service gives it (Nice=-10).
    this.detached(`agent-${node}`, node, 'nice', [
      '-n',
      String(LAB_NICE),
      process.execPath,
      CLI,
      'agent',
      '--config',
      path.join(this.state.dir, 'cluster.cfg'),
      '--node',
      node,
      '--key-file',
      path.join(this.state.dir, 'cluster.key'),
      '--pin-root',
      pinRoot(this.state.prefix, node),
      '--control',
      this.socket(node),
      '--identities',
      path.join(this.state.dir, 'nodes'),
      '--crt-entries',
      String(LAB_CRT_ENTRIES),
      // The lab's etcd is plain http without auth, reachable only inside the lab's namespaces.
      ...(routing ? ['--etcd', this.state.etcd, '--insecure-etcd'] : []),
      ...(routing && this.state.renewMs !== undefined ? ['--renew-ms', String(this.state.renewMs)] : []),
    ]);
  }

  /** Stops a node's agent: SIGTERM (clean, its DVIPAs wait for a restart) or SIGKILL (a crash). */
  async stopAgent(node: string, signal: 'SIGTERM' | 'SIGKILL'): Promise<void> {
    const pid = this.state.pids[`agent-${node}`];
    if (pid === undefined || !alive(pid)) return;
    process.kill(pid, signal);
    await this.until(`the agent of ${node} to exit`, async () => !alive(pid), 10000);
    delete this.state.pids[`agent-${node}`];
    this.save();
  }

  /**
   * The node dies the way nodes die: both its links go down in one instant (its data plane
   * gets nothing more, and nobody gets a FIN or RST from it), then its agent is killed.
   * Returns the instant of death (ms since the epoch).
   */
  async kill(node: string): Promise<number> {
    setRouterLinks(this.state.ns[node], 'down');
    // The links went down as ip finished (starting it may take a while on a busy machine).
    const t0 = Date.now();
    await this.stopAgent(node, 'SIGKILL');
    return t0;
  }

  /** The node comes back: links up, agent started. Returns when that began. */
  revive(node: string): number {
    const t0 = Date.now();
    setRouterLinks(this.state.ns[node], 'up');
    this.startAgent(node);
    return t0;
  }

  /** `node`'s agent log lines that contain `text` (all if empty), as JSON. */
  private logEntries(node: string, text = ''): LogEntry[] {
    return this.jsonLines<LogEntry>(`agent-${node}.log`, text);
  }

  /** The lines of a log file of the lab's that contain `text`, as JSON; a line cut short by a kill is left out. */
  private jsonLines<T>(name: string, text = ''): T[] {
    const file = path.join(this.state.dir, name);
    if (!fs.existsSync(file)) return [];
    return fs
      .readFileSync(file, 'utf8')
      .split('\n')
      .flatMap((l) => {
        if (!l.includes(text)) return [];
        try {
          return [JSON.parse(l) as T];
        } catch {
          return [];
        }
      });
  }

  /** When `node`'s agent first logged `msg` (about `dvipa`, if named) at or after `since` (ms since the epoch), from its log file. */
  logged(node: string, msg: string, since: number, dvipa?: string): number | undefined {
    return this.logEntries(node, msg).find(
      (j) => j.msg === msg && (j.time ?? 0) >= since && (dvipa === undefined || j.dvipa === dvipa),
    )?.time;
  }

  /**
   * What `node`'s agent says of both DVIPAs now (and why it holds back a claim), with its last
   * warnings since `since`: the state a drill's failed wait is reported with.
   */
  async explain(node: string, since: number): Promise<string> {
    const rows = await Promise.all([HA.dvipa, HA.dvipa6].map(async (d) => [d, await this.vipadyn(node, d)] as const));
    const state = rows.map(([d, r]) =>
      !r
        ? `${d} no answer`
        : `${d} ${r.status}${r.owner ? ` (owner ${r.owner})` : ''}${r.heldBack ? `, held back: ${r.heldBack}` : ''}`,
    );
    const warnings = this.logEntries(node)
      .filter((j) => (j.time ?? 0) >= since && (j.level ?? 0) >= 40)
      .map(
        (j) =>
          `${j.msg}${j.dvipa ? ` (${j.dvipa})` : ''}${j.peer ? ` peer ${j.peer}` : ''}${j.reason ? ` ${j.reason}` : ''}` +
          `${j.err ? `: ${j.err}` : ''}${j.why ? `: ${j.why}` : ''}`,
      );
    // Ten: the failure that began it is often followed by what it caused.
    return `${node}: ${state.join('; ')}${warnings.length ? `; last warnings: ${warnings.slice(-10).join(' | ')}` : ''}`;
  }

  /**
   * What etcd warned of since `since` (slow applies, leases it revoked, a stalled disk), the
   * last few: a lease lost under an agent is first looked for there.
   */
  storeSays(since: number): string {
    const said = this.jsonLines<{ ts?: string; msg?: string; took?: string }>('etcd.log')
      .filter((j) => Date.parse(j?.ts ?? '') >= since)
      .map((j) => `${j.msg}${j.took ? ` (took ${j.took})` : ''}`);
    return `etcd: ${said.length ? `last warnings: ${said.slice(-5).join(' | ')}` : 'no warning'}`;
  }

  /** `node`'s data-plane verdict counters (all DVIPAs, since its maps were made): where its packets went. */
  reasons(node: string): Record<string, bigint> {
    return reasonsAt(pinRoot(this.state.prefix, node));
  }

  /** Whether `node` holds the DVIPA (the IPv4 one unless named) on its external interface. */
  holds(node: string, dvipa: string = HA.dvipa): boolean {
    return holdsDvipa(this.state.ns[node], dvipa);
  }

  /** When `node` logged taking the DVIPA (the IPv4 one unless named) at or after `since`. */
  acquired(node: string, since: number, dvipa: string = HA.dvipa): number | undefined {
    return this.logged(node, 'DVIPA acquired', since, dvipa);
  }

  /**
   * Whether `node`'s agent says it routes the DVIPA. An agent that runs but does not answer
   * within vipadyn's 2 s (a machine loaded far beyond its cores) is asked again, twice: no
   * answer is no "not active", on which a drill would bring a living owner "back".
   */
  async active(node: string): Promise<boolean> {
    for (let asked = 1; ; asked++) {
      const row = await this.vipadyn(node);
      if (row) return row.status === 'Active';
      const pid = this.state.pids[`agent-${node}`];
      if (asked === 3 || pid === undefined || !alive(pid)) return false;
    }
  }

  /** Freezes (SIGSTOP) or thaws (SIGCONT) a node's agent: a stalled process, its links and data plane untouched. */
  freeze(node: string, frozen: boolean): void {
    const pid = this.state.pids[`agent-${node}`];
    if (pid !== undefined && alive(pid)) process.kill(pid, frozen ? 'SIGSTOP' : 'SIGCONT');
  }

  /** `node`'s vipadyn row of the DVIPA (the IPv4 one unless named). */
  async vipadyn(node: string, dvipa: string = HA.dvipa): Promise<VipadynRow | undefined> {
    try {
      const r = await askAgent(this.socket(node), { cmd: 'vipadyn' }, 2000);
      return r.dvipas.find((d) => d.dvipa === dvipa);
    } catch {
      return undefined;
    }
  }

  async vdpt(node: string): Promise<VdptRow[] | undefined> {
    try {
      return await askAgent(this.socket(node), { cmd: 'vdpt' }, 2000);
    } catch {
      return undefined;
    }
  }

  private async readyTargets(node: string): Promise<number> {
    const rows = (await this.vdpt(node)) ?? [];
    return new Set(rows.filter((r) => r.ready).map((r) => r.target)).size;
  }

  /** COUNT HTTP requests from the client to the DVIPA (IPv4 unless named), each on a new connection: answers per target. */
  httpRound(count: number, dvipa: string = HA.dvipa): Promise<Record<string, number>> {
    return new Promise((resolve, reject) => {
      execFile(
        'nsenter',
        [
          `--net=${netnsPath(this.state.ns.client)}`,
          process.execPath,
          path.join(here, 'http-probe.js'),
          dvipa,
          String(HTTP_PORT),
          String(count),
        ],
        { timeout: 120000 },
        (err: Error | null, stdout: string) =>
          err ? reject(err) : resolve(JSON.parse(stdout) as Record<string, number>),
      );
    });
  }

  /** Which processes of the lab run. */
  processes(): Array<{ name: string; pid: number; running: boolean }> {
    return Object.entries(this.state.pids).map(([name, pid]) => ({ name, pid, running: alive(pid) }));
  }

  async until(what: string, cond: () => Promise<boolean>, ms: number): Promise<void> {
    await until(what, cond, ms, ` (logs in ${this.state.dir})`);
  }

  /** Everything goes: processes (by pid), namespaces, pins, the state directory. */
  async down(): Promise<void> {
    await HaLab.clean(this.state);
  }

  static async clean(state?: LabState, dir = DEFAULT_LAB_DIR): Promise<string[]> {
    const done: string[] = [];
    const pids = Object.values(state?.pids ?? {}).filter(alive);
    await stopAll(pids);
    if (pids.length) done.push(`${pids.length} processes`);
    const namespaces = ip('netns', 'list')
      .split('\n')
      .map((l) => l.split(' ')[0])
      .filter((n) => n.startsWith(state?.prefix ?? LAB_PREFIX));
    // Every process the lab starts runs in one of its namespaces: those still there had their
    // pids in a state that is gone (removed by hand, or a lab whose start failed), and would
    // live on, agents renewing in a deleted namespace.
    const strays = namespaces.flatMap((n) => ip('netns', 'pids', n).split('\n').filter(Boolean).map(Number));
    await stopAll(strays);
    if (strays.length) done.push(`${strays.length} processes found in its namespaces`);
    for (const n of namespaces) ip('netns', 'del', n);
    if (namespaces.length) done.push(`${namespaces.length} namespaces`);
    const pins = fs.readdirSync('/sys/fs/bpf').filter((p) => p.startsWith(state?.prefix ?? LAB_PREFIX));
    for (const p of pins) FastPath.purge(path.join('/sys/fs/bpf', p));
    if (pins.length) done.push(`${pins.length} pin roots`);
    const etcdData = etcdDir(state?.prefix ?? LAB_PREFIX);
    if (fs.existsSync(etcdData)) fs.rmSync(etcdData, { recursive: true, force: true });
    const stateDir = state?.dir ?? dir;
    if (fs.existsSync(stateDir)) {
      fs.rmSync(stateDir, { recursive: true, force: true });
      done.push(stateDir);
    }
    return done;
  }
}

/** SIGTERM, then SIGKILL for what is still alive after 5 s. */
async function stopAll(pids: number[]): Promise<void> {
  const signal = (sig: NodeJS.Signals) => (pid: number) => {
    try {
      process.kill(pid, sig);
    } catch {
      // gone meanwhile
    }
  };
  pids.forEach(signal('SIGTERM'));
  const end = Date.now() + 5000;
  while (pids.some(alive) && Date.now() < end) await sleep(50);
  pids.filter(alive).forEach(signal('SIGKILL'));
}
