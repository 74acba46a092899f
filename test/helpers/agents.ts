/*
 * `dvipa agent` processes for the namespace tests: each in its node's namespace with its
 * own pin root, its JSON log collected line by line, stopped by pid; waiting on conditions
 * says, on timeout, what each agent logged last.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import type { Topology } from '../../src/lab/netns.js';
import { FastPath } from '../../src/dataplane/fastpath.js';
import { LAB_CRT_ENTRIES, LAB_NICE } from '../../src/lab/procs.js';

const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.js');

export type LogLine = Record<string, unknown>;

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class Agents {
  readonly logs: Record<string, LogLine[]> = {};
  readonly procs: Record<string, ChildProcess> = {};
  private readonly nodes = new Set<string>();

  /** `dir` holds cluster.key and cluster.cfg, the defaults of every agent. */
  constructor(
    private readonly topo: Topology,
    private readonly ns: Record<string, string>,
    private readonly dir: string,
    private readonly prefix: string,
  ) {}

  /** The agent's control socket (dvipa netstat --socket). */
  socket(node: string): string {
    return path.join(this.dir, `${node}.sock`);
  }

  pinRoot(node: string): string {
    return `/sys/fs/bpf/${this.prefix}${node}`;
  }

  start(node: string, o: { keyFile?: string; config?: string; args?: string[] } = {}): void {
    const loadFile = path.join(this.dir, `load-${node}`);
    if (!fs.existsSync(loadFile)) fs.writeFileSync(loadFile, '0');
    const child = this.topo.spawn(
      this.ns[node],
      'nice',
      [
        '-n',
        String(LAB_NICE),
        process.execPath,
        CLI,
        'agent',
        '--config',
        o.config ?? path.join(this.dir, 'cluster.cfg'),
        '--node',
        node,
        '--pin-root',
        this.pinRoot(node),
        '--key-file',
        o.keyFile ?? path.join(this.dir, 'cluster.key'),
        '--load-file',
        loadFile,
        '--scan-ms',
        '5000',
        '--crt-entries',
        String(LAB_CRT_ENTRIES),
        '--control',
        this.socket(node),
        ...(o.args ?? []),
      ],
      { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, DVIPA_LOG_LEVEL: 'info' } },
    );
    this.adopt(node, child);
  }

  /** Follows an agent started some other way (its JSON log on stderr), as one of these. */
  adopt(node: string, child: ChildProcess): void {
    const log: LogLine[] = (this.logs[node] = []);
    // DVIPA_TEST_LOGS=dir keeps every agent's whole log there (node.log), to read after a failure.
    const keep = process.env.DVIPA_TEST_LOGS;
    readline.createInterface({ input: child.stderr! }).on('line', (l) => {
      if (keep) fs.appendFileSync(path.join(keep, `${node}.log`), `${l}\n`);
      try {
        log.push({ ...JSON.parse(l), at: Date.now() });
      } catch {
        log.push({ msg: l, at: Date.now() });
      }
    });
    this.procs[node] = child;
    this.nodes.add(node);
  }

  async stop(node: string, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const a = this.procs[node];
    if (!a || a.exitCode !== null || a.signalCode !== null) return;
    const gone = new Promise((r) => a.once('exit', r));
    a.kill(signal);
    await gone;
  }

  /** The first line of `node`'s current log with this message (and fields), if any. */
  find(node: string, msg: string, fields: LogLine = {}): LogLine | undefined {
    return this.logs[node]?.find((l) => l.msg === msg && Object.entries(fields).every(([k, v]) => l[k] === v));
  }

  /** `ms`: 30 s unless given, for setup (node starts slowly on a loaded machine); a claim passes its own bound. */
  async until(what: string, cond: () => boolean, ms = 30000): Promise<void> {
    const end = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > end) {
        const tail = Object.entries(this.logs)
          .map(
            ([n, l]) =>
              `${n}: ${l
                .slice(-4)
                .map((x) => JSON.stringify(x))
                .join(' | ')}`,
          )
          .join('\n');
        throw new Error(`timed out waiting for ${what}; agents' last logs:\n${tail}`);
      }
      await sleep(50);
    }
  }

  /** Removes every agent's pins (the namespaces, and with them the links, go with the topology). */
  purge(): void {
    for (const node of this.nodes) if (fs.existsSync(this.pinRoot(node))) FastPath.purge(this.pinRoot(node));
  }
}
