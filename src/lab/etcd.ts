/*
 * A real etcd server (Debian's etcd-server) on loopback, for the tests and the lab: its own
 * data directory and free ports, tuned so that 1-second leases are allowed (etcd's shortest
 * lease is 1.5 election timeouts). Stopped by pid, its directory removed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

export interface EtcdServer {
  /** Client URL, http://127.0.0.1:port. */
  url: string;
  pid: number;
  /** SIGSTOP/SIGCONT: etcd unreachable without losing its data. */
  pause(): void;
  resume(): void;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

async function reachable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

export async function startEtcd(opts: { name?: string; log?: string } = {}): Promise<EtcdServer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvipa-etcd-'));
  const [client, peer] = [await freePort(), await freePort()];
  const url = `http://127.0.0.1:${client}`;
  const peerUrl = `http://127.0.0.1:${peer}`;
  const name = opts.name ?? 'cf';
  const out = opts.log ? fs.openSync(opts.log, 'a') : 'ignore';
  let child: ChildProcess;
  try {
    child = spawn('etcd', [
      '--name', name, '--data-dir', path.join(dir, 'data'),
      '--listen-client-urls', url, '--advertise-client-urls', url,
      '--listen-peer-urls', peerUrl, '--initial-advertise-peer-urls', peerUrl,
      '--initial-cluster', `${name}=${peerUrl}`,
      '--heartbeat-interval', '50', '--election-timeout', '500',
      '--log-level', 'warn', '--logger', 'zap',
    ], { stdio: ['ignore', out, out] });
  } finally {
    if (typeof out === 'number') fs.closeSync(out);
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const cleanup = () => fs.rmSync(dir, { recursive: true, force: true });
  const deadline = Date.now() + 10000;
  while (!(await reachable(client))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      await exited;
      cleanup();
      throw new Error(`etcd did not start on ${url}${child.exitCode !== null ? ` (exit ${child.exitCode})` : ''}: is etcd-server installed (scripts/setup)?`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    pid: child.pid!,
    pause: () => child.kill('SIGSTOP'),
    resume: () => child.kill('SIGCONT'),
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGCONT');
        child.kill('SIGTERM');
        await exited;
      }
      cleanup();
    },
  };
}
