/*
 * A real strongSwan charon for the lab and the tests, one per namespace, each with its own
 * configuration, VICI socket, pid file and log. charon's pid file is fixed at
 * /var/run/charon.pid, so each runs in its own mount namespace (ip netns exec gives one) with
 * a directory of its own bound over /run: there live its strongswan.conf (STRONGSWAN_CONF),
 * VICI socket, pid file and log, seen from outside under `dir`/run.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { ViciClient, type ViciMessage } from '../ipsec/vici.js';

export const CHARON = '/usr/lib/ipsec/charon';

/** What charon loads: IKEv2 with pre-shared keys, AES/SHA-2/MODP, the kernel's XFRM, VICI. */
const PLUGINS = 'random nonce aes sha1 sha2 hmac gmp kdf kernel-netlink socket-default vici updown';

/** A lab connection: IKEv2, pre-shared key, one optional tunnel-mode CHILD between two hosts. */
export interface LabConn {
  name: string;
  local: string;
  remote: string;
  localId: string;
  remoteId: string;
  /** A CHILD SA between the two addresses (ESP, tunnel mode); without one the IKE SA is childless. */
  child?: string;
  /** connections.<name> settings on top (dpd_delay, rekey_time, ...). */
  extra?: ViciMessage;
  childExtra?: ViciMessage;
}

export function labConn(c: LabConn): ViciMessage {
  return {
    [c.name]: {
      version: '2',
      local_addrs: [c.local],
      remote_addrs: [c.remote],
      proposals: ['aes128-sha256-modp2048'],
      local: { auth: 'psk', id: c.localId },
      remote: { auth: 'psk', id: c.remoteId },
      ...(c.child
        ? {
            children: {
              [c.child]: {
                local_ts: [`${c.local}/32`],
                remote_ts: [`${c.remote}/32`],
                esp_proposals: ['aes128-sha256'],
                mode: 'tunnel',
                ...c.childExtra,
              },
            },
          }
        : { childless: 'force' }),
      ...c.extra,
    },
  };
}

export interface CharonOptions {
  /** Where its files go (created; removed by stop). */
  dir: string;
  /** Extra lines inside `charon { }` of its strongswan.conf. */
  settings?: string[];
  /** How long to wait for the VICI socket. */
  startMs?: number;
}

export class Charon {
  readonly vici: string;
  readonly pidFile: string;
  readonly log: string;

  private constructor(
    readonly ns: string,
    readonly dir: string,
    private readonly child: ChildProcess,
  ) {
    this.vici = path.join(dir, 'run', 'charon.vici');
    this.pidFile = path.join(dir, 'run', 'charon.pid');
    this.log = path.join(dir, 'run', 'charon.log');
  }

  get pid(): number {
    return this.child.pid!;
  }

  static async start(ns: string, opts: CharonOptions): Promise<Charon> {
    const run = path.join(opts.dir, 'run');
    fs.mkdirSync(run, { recursive: true, mode: 0o700 });
    fs.writeFileSync(
      path.join(run, 'strongswan.conf'),
      [
        'charon {',
        '  load_modular = no',
        `  load = ${PLUGINS}`,
        // dvipa's routers route the DVIPA themselves; charon's table 220 would get in the way.
        '  install_routes = no',
        '  install_virtual_ip = no',
        '  plugins { vici { socket = unix:///run/charon.vici } }',
        '  filelog {',
        '    lab { path = /run/charon.log\n default = 1\n ike = 2\n cfg = 2\n flush_line = yes\n time_format = %T }',
        '  }',
        ...(opts.settings ?? []).map((l) => `  ${l}`),
        '}',
        '',
      ].join('\n'),
    );
    const script = `mount --bind ${JSON.stringify(run)} /run && exec ${CHARON}`;
    const child = spawn('ip', ['netns', 'exec', ns, 'sh', '-c', script], {
      env: { ...process.env, STRONGSWAN_CONF: '/run/strongswan.conf' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    const c = new Charon(ns, opts.dir, child);
    const end = Date.now() + (opts.startMs ?? 15_000);
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`charon in ${ns} exited (${child.exitCode ?? child.signalCode}): ${stderr.trim()} ${c.tail()}`);
      }
      try {
        (await ViciClient.connect(c.vici, { timeoutMs: 1000 })).close();
        return c;
      } catch {
        if (Date.now() > end) {
          await c.stop();
          throw new Error(`charon in ${ns}: no VICI socket after ${opts.startMs ?? 15_000} ms: ${c.tail()}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** The end of its log, for failure messages. */
  tail(lines = 40): string {
    try {
      return fs.readFileSync(this.log, 'utf8').trim().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  connect(timeoutMs = 10_000): Promise<ViciClient> {
    return ViciClient.connect(this.vici, { timeoutMs });
  }

  /** Loads connections and the pre-shared key of their identities. */
  async load(conns: LabConn[], psk: string): Promise<void> {
    const v = await this.connect();
    try {
      const ids = [...new Set(conns.flatMap((c) => [c.localId, c.remoteId]))];
      await v.request('load-shared', { id: 'lab', type: 'IKE', data: psk, owners: ids });
      for (const c of conns) await v.request('load-conn', labConn(c));
    } finally {
      v.close();
    }
  }

  /** At once, for cleanups that cannot wait (a signal handler): SIGKILL, files removed. */
  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** SIGTERM (charon closes its SAs) or SIGKILL (a crashed node); waits for the exit, then removes its files. */
  async stop(signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM', keepFiles = false): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise((r) => this.child.once('exit', r));
      this.child.kill(signal);
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    if (!keepFiles) fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
