/*
 * A real etcd server (Debian's etcd-server) for the tests and the lab: on loopback, or on an
 * address inside a lab namespace (where the agents of other namespaces can reach it). Its
 * own data directory, tuned so that 1-second leases are allowed (etcd's shortest lease is
 * 1.5 election timeouts). Stopped by pid, its directory removed.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { netnsPath, type Topology } from './netns.js';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

/**
 * Where etcd's data goes by default: memory. etcd syncs its log to disk on every write and
 * wants that done within milliseconds (on its dedicated machines); this shared VM's disk takes
 * a hundred at times, which would pass for a dead owner that renews 50 times a second.
 */
export const MEMORY_DIR = fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();

/**
 * etcd's real-time priority (SCHED_RR, every thread) in the lab and the tests, as root; else
 * its nice value. A production etcd has machines of its own; on this shared 2-core VM (load
 * 20-45) etcd at nice -10 still stalled for hundreds of milliseconds, and owners' renewals with it.
 */
const ETCD_RT_PRIORITY = 5;
const ETCD_NICE = -10;

export interface EtcdServer {
  /** Client URL, http://127.0.0.1:port (https:// with TLS). */
  url: string;
  /** With TLS: the CA that signed the server's certificate, and a client certificate and key it accepts. */
  tls?: { ca: string; cert: string; key: string };
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

/** Whether etcd answers, asked from where the agents are. */
function healthy(url: string, ns?: string, tls?: EtcdServer['tls']): Promise<boolean> {
  const auth = tls ? [`--cacert=${tls.ca}`, `--cert=${tls.cert}`, `--key=${tls.key}`] : [];
  const cmd = [
    'etcdctl',
    `--endpoints=${url}`,
    ...auth,
    '--dial-timeout=500ms',
    '--command-timeout=500ms',
    'endpoint',
    'health',
  ];
  const [file, args] = ns ? ['nsenter', [`--net=${netnsPath(ns)}`, ...cmd]] : [cmd[0], cmd.slice(1)];
  return new Promise((resolve) =>
    execFile(file, args, { env: { ...process.env, ETCDCTL_API: '3' } }, (err) => resolve(!err)),
  );
}

/** Where to run it: a lab namespace and an address of it; default loopback of this namespace. */
export interface EtcdPlace {
  topo: Topology;
  ns: string;
  host: string;
}

/** A throwaway CA, a server certificate for `host` and a client certificate (openssl). */
function makeCertificates(
  dir: string,
  host: string,
): { ca: string; cert: string; key: string; serverCert: string; serverKey: string } {
  const f = (n: string) => path.join(dir, n);
  const ssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
  ssl(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '1',
    '-subj',
    '/CN=dvipa test CA',
    '-keyout',
    f('ca.key'),
    '-out',
    f('ca.pem'),
  );
  for (const [name, ext] of [
    ['server', `subjectAltName=IP:${host}\nextendedKeyUsage=serverAuth`],
    ['client', 'extendedKeyUsage=clientAuth'],
  ]) {
    fs.writeFileSync(f(`${name}.ext`), `${ext}\n`);
    ssl(
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-subj',
      `/CN=${name}`,
      '-keyout',
      f(`${name}.key`),
      '-out',
      f(`${name}.csr`),
    );
    ssl(
      'x509',
      '-req',
      '-in',
      f(`${name}.csr`),
      '-CA',
      f('ca.pem'),
      '-CAkey',
      f('ca.key'),
      '-CAcreateserial',
      '-days',
      '1',
      '-extfile',
      f(`${name}.ext`),
      '-out',
      f(`${name}.pem`),
    );
  }
  return {
    ca: f('ca.pem'),
    cert: f('client.pem'),
    key: f('client.key'),
    serverCert: f('server.pem'),
    serverKey: f('server.key'),
  };
}

export interface EtcdStartOptions {
  name?: string;
  log?: string;
  place?: EtcdPlace;
  tls?: boolean;
  /** How long it may take to answer its health check (default 30 s). */
  startMs?: number;
  /** Where its data goes (default: a new temporary directory, removed at stop). */
  dir?: string;
  /** Starts the process (default: a child of this one); the lab's outlives the command. */
  spawn?: (cmd: string, args: string[]) => ChildProcess;
}

export async function startEtcd(opts: EtcdStartOptions = {}): Promise<EtcdServer> {
  const dir = opts.dir ?? fs.mkdtempSync(path.join(MEMORY_DIR, 'dvipa-etcd-'));
  const { place } = opts;
  const host = place?.host ?? '127.0.0.1';
  const [client, peer] = place ? [2379, 2380] : [await freePort(), await freePort()];
  const certs = opts.tls ? makeCertificates(dir, host) : undefined;
  const url = `${certs ? 'https' : 'http'}://${host}:${client}`;
  const peerUrl = `http://${host}:${peer}`;
  const name = opts.name ?? 'cf';
  const out = opts.log ? fs.openSync(opts.log, 'a') : 'ignore';
  let child: ChildProcess;
  try {
    const args = [
      '--name',
      name,
      '--data-dir',
      path.join(dir, 'data'),
      '--listen-client-urls',
      url,
      '--advertise-client-urls',
      url,
      '--listen-peer-urls',
      peerUrl,
      '--initial-advertise-peer-urls',
      peerUrl,
      '--initial-cluster',
      `${name}=${peerUrl}`,
      '--heartbeat-interval',
      '50',
      '--election-timeout',
      '500',
      '--log-level',
      'warn',
      '--logger',
      'zap',
      ...(certs
        ? [
            '--cert-file',
            certs.serverCert,
            '--key-file',
            certs.serverKey,
            '--trusted-ca-file',
            certs.ca,
            '--client-cert-auth',
          ]
        : []),
    ];
    const stdio: ['ignore', typeof out, typeof out] = ['ignore', out, out];
    // etcd stands for dedicated machines here: on this shared one it runs ahead of ordinary
    // work (every thread), or a busy machine would pass for a dead owner.
    const [cmd, prio]: [string, string[]] =
      process.getuid?.() === 0 ? ['chrt', ['--rr', String(ETCD_RT_PRIORITY)]] : ['nice', ['-n', String(ETCD_NICE)]];
    const prioritised = [...prio, 'etcd', ...args];
    if (opts.spawn) child = opts.spawn(cmd, prioritised);
    else child = place ? place.topo.spawn(place.ns, cmd, prioritised, { stdio }) : spawn(cmd, prioritised, { stdio });
  } finally {
    if (typeof out === 'number') fs.closeSync(out);
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const cleanup = () => fs.rmSync(dir, { recursive: true, force: true });
  // Healthy in about a second here; under emulation (the kernel lab) on a loaded machine, 10 s was not enough.
  const startMs = opts.startMs ?? 30000;
  const deadline = Date.now() + startMs;
  const tls = certs ? { ca: certs.ca, cert: certs.cert, key: certs.key } : undefined;
  while (!(await healthy(url, place?.ns, tls))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      const why = child.exitCode !== null ? `it exited with ${child.exitCode}` : `no answer within ${startMs / 1000} s`;
      child.kill('SIGKILL');
      await exited;
      cleanup();
      throw new Error(`etcd did not start on ${url} (${why}): is etcd-server installed (scripts/setup)?`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    tls,
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
