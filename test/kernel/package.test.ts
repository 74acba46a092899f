/*
 * The Debian package for real, as root: built from this tree by scripts/package (nothing
 * compiled again), installed with dpkg; its command, example, manual page and unit checked
 * (systemd-analyze verify); upgraded to a second build under a running routing agent, started
 * as the unit would start it (its command line, defaults file, capabilities and
 * NoNewPrivileges: there may be no systemd to do it), which keeps forwarding meanwhile; then
 * purged, leaving no file, pin or process. The package is system-wide: one such test at a
 * time on a machine (flock), and it is purged after a failure too.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { randomBytes } from 'node:crypto';
import { execFile, execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { fullChecksums, nsIp, sysctl, Topology } from '../../src/lab/netns.js';
import { Client, startNameServer } from '../../src/lab/procs.js';
import { requireRoot, uniquePrefix } from '../helpers/env.js';
import { Agents } from '../helpers/agents.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const BASE = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
/** Versions no real install has, so a leftover of an interrupted run is recognised as one. */
const V1 = `${BASE}+pkgtest1`;
const V2 = `${BASE}+pkgtest2`;
const UNIT = '/lib/systemd/system/dvipa-agent.service';
const PINS = '/sys/fs/bpf/dvipa';
const LOCK = '/tmp/dvipa-package.lock';
const DVIPA = '192.0.2.10';
const PORT = 8080;
/** What the agent runs with under systemd besides the unit's own Environment= lines. */
const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/**
 * The commands' PATH: a router's, without /usr/local, where a clone's scripts/setup puts the
 * developer's `dvipa` (ahead of the package's on purpose, so it would answer `which dvipa` here).
 */
const ROUTER_PATH = '/usr/sbin:/usr/bin:/sbin:/bin';

const run = promisify(execFile);
let lock: ChildProcess | undefined;
let dir: string;
let debs: Record<string, string>;
let topo: Topology | undefined;
let fleet: Agents;
let client: Client | undefined;
const ns: Record<string, string> = {};

function sh(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): string {
  const opts = { encoding: 'utf8' as const, stdio: ['ignore', 'pipe', 'pipe'] as ('ignore' | 'pipe')[] };
  return execFileSync(cmd, args, { ...opts, env: { ...process.env, PATH: ROUTER_PATH, ...env } });
}

/** Exit code, stdout and stderr of a command that may fail. */
function attempt(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): { code: number; out: string; err: string } {
  const env2 = { ...process.env, PATH: ROUTER_PATH, ...env };
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: env2 });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

const dpkg = (...args: string[]) =>
  sh('dpkg', ['--force-confdef', '--force-confold', ...args], { DEBIAN_FRONTEND: 'noninteractive' });
const installed = () => attempt('dpkg-query', ['-W', '-f=${Status} ${Version}', 'dvipa']).out;

/** Holds the machine-wide lock until release() (or this process's end). */
async function acquireLock(): Promise<void> {
  lock = spawn('flock', [LOCK, 'sh', '-c', 'echo locked; exec cat'], { stdio: ['pipe', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    readline.createInterface({ input: lock!.stdout! }).once('line', () => resolve());
    lock!.once('exit', (code) => reject(new Error(`flock ${LOCK} exited with ${code}`)));
  });
}

/** setpriv's arguments for the unit's capability bounding set (less `without`) and no new privileges. */
function unitPrivileges(unit: string, without: string[] = []): string[] {
  const caps = /^CapabilityBoundingSet=(.*)$/m
    .exec(unit)![1]
    .split(/\s+/)
    .filter((c) => !without.includes(c))
    .map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`);
  return ['--no-new-privs', '--bounding-set', ['-all', ...caps].join(',')];
}

/**
 * An agent as dvipa-agent.service starts it: ExecStart with /etc/default/dvipa, the unit's
 * capabilities, no new privileges, and its file system as ProtectSystem=strict, ProtectHome=
 * and PrivateTmp= make it (in a mount namespace of its own: / read-only but the runtime
 * directory; /proc, /sys and bpffs stay writable). `overrides`: shell assignments after the
 * defaults file.
 */
function startAsUnit(node: string, overrides = ''): void {
  const unit = fs.readFileSync(UNIT, 'utf8');
  const execStart = /^ExecStart=(.*)$/m.exec(unit)![1];
  const emulated = [
    'NoNewPrivileges=yes',
    'ProtectSystem=strict',
    'ProtectHome=yes',
    'PrivateTmp=yes',
    'RuntimeDirectory=dvipa',
  ];
  for (const d of emulated) assert.ok(unit.includes(`\n${d}\n`), d);
  const environment = Object.fromEntries([...unit.matchAll(/^Environment=(\w+)=(.*)$/gm)].map((m) => [m[1], m[2]]));
  const sandbox = [
    'mkdir -p -m 0700 /run/dvipa && mount --bind /run/dvipa /run/dvipa',
    'mount -o remount,bind,ro /',
    'mount -t tmpfs -o mode=0700 none /tmp',
    'for d in /home /root; do mount -t tmpfs -o ro,mode=0700 none $d; done',
  ];
  // systemd: ${X} is one word, $X splits at white space; the shell's unquoted expansions do both here.
  const agent = `set -a; . /etc/default/dvipa; ${overrides} set +a; exec ${execStart}`;
  const privileges = unitPrivileges(unit);
  const child = topo!.spawn(
    ns[node],
    'unshare',
    [
      '-m',
      'sh',
      '-ec',
      `${sandbox.join('\n')}\nexec setpriv ${privileges.join(' ')} -- sh -c '${agent.replace(/'/g, "'\\''")}'`,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'], env: { PATH: SYSTEM_PATH, ...environment } },
  );
  fleet.adopt(node, child);
}

async function untilReady(): Promise<void> {
  await fleet.until('both agents started', () => ['r1', 't1'].every((n) => fleet.find(n, 'agent started')));
  const listening = () => fleet.logs.r1.some((l) => l.msg === 'DPT changed' && l.target === 't1' && l.ready === true);
  await fleet.until(`t1 listening on ${PORT} in r1's DPT`, listening);
}

/** Ids of the routing node's CRT map and distributor link: the same ids, the same kernel objects. */
function pinnedIds(): { crt: number; link: number } {
  const id = (kind: string, pin: string) =>
    (JSON.parse(sh('bpftool', ['-j', kind, 'show', 'pinned', pin])) as { id: number }).id;
  return { crt: id('map', `${PINS}/crt`), link: id('link', `${PINS}/links/xdp_distributor@ext`) };
}

async function assertServed(ids: number[], what: string): Promise<void> {
  const answers = await client!.ask(ids);
  for (const a of answers) assert.equal(a.error, undefined, `${what}: connection ${a.id}: ${a.error}`);
  assert.deepEqual(
    answers.map((a) => a.name),
    ids.map(() => 't1'),
    what,
  );
}

before(async () => {
  requireRoot();
  await acquireLock();
  if (/\+pkgtest\d+$/.test(installed())) dpkg('--purge', 'dvipa');
  assert.doesNotMatch(
    installed(),
    /ok (installed|config-files)/,
    `dvipa is on this machine (${installed()}): this test would replace it`,
  );
  assert.ok(!fs.existsSync('/usr/bin/dvipa'), '/usr/bin/dvipa exists, from no package: this test would replace it');
  assert.ok(!fs.existsSync(PINS), `${PINS} exists: a dvipa data plane runs on this machine`);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvipa-package-'));
  // Both versions from the tree as it is built (no second compile), side by side.
  const build = async (v: string) =>
    (await run(path.join(ROOT, 'scripts', 'package'), ['--version', v, '--out', dir], { cwd: ROOT })).stdout.trim();
  const [d1, d2] = await Promise.all([build(V1), build(V2)]);
  debs = { [V1]: d1, [V2]: d2 };
});

after(async () => {
  client?.stop();
  topo?.teardown();
  fleet?.purge();
  try {
    if (/\+pkgtest\d+$/.test(installed())) dpkg('--purge', 'dvipa'); // ours only, never an install found before
  } finally {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    lock?.stdin!.end();
  }
});

test('the package installs dvipa on the PATH with its version, example, manual page and a unit systemd accepts', () => {
  dpkg('-i', debs[V1]);
  assert.equal(sh('dpkg', ['--verify', 'dvipa']), '', 'every installed file matches its md5sum');
  assert.equal(sh('which', ['dvipa']).trim(), '/usr/bin/dvipa');
  assert.equal(sh('dvipa', ['--version']).trim(), V1);
  const example = '/usr/share/doc/dvipa/examples/cluster.cfg';
  assert.match(sh('dvipa', ['config', 'check', example]), /: ok \(5 nodes, 1 DVIPA defined\)/);
  fs.writeFileSync(path.join(dir, 'bad.cfg'), 'NODE r1 XCF 10.1.0.300\n');
  assert.equal(attempt('dvipa', ['config', 'check', path.join(dir, 'bad.cfg')]).code, 2);

  // What the router gets: Debian's runtime packages, no compiler, no build-only npm package.
  const status = sh('dpkg-query', ['-W', '-f=${Depends}\n${Recommends}\n${Conffiles}', 'dvipa']);
  const wanted = ['nodejs (>= 20.19)', 'libbpf1', 'libelf1', 'iproute2', 'etcd-client', 'strongswan-swanctl'];
  for (const p of [...wanted, '/etc/default/dvipa']) {
    assert.ok(status.includes(p), `${p} in ${status}`);
  }
  const modules = (m: string) => fs.existsSync(path.join('/usr/lib/dvipa/node_modules', m));
  for (const m of ['cmake-js', 'node-addon-api', 'typescript', '@types/yargs']) assert.ok(!modules(m), `${m} in it`);
  for (const m of ['yargs', 'etcd3', 'pino']) assert.ok(modules(m), `${m} missing`);
  for (const f of ['build/Release/dvipa.node', 'build/bpf/distributor.bpf.o']) {
    assert.ok(fs.existsSync(`/usr/lib/dvipa/${f}`), f);
  }

  assert.equal(sh('man', ['-w', 'dvipa']).trim(), '/usr/share/man/man8/dvipa.8.gz');
  const page = attempt('man', ['--warnings', 'dvipa'], { MANWIDTH: '80', LC_ALL: 'C.UTF-8' });
  assert.deepEqual([page.code, page.err], [0, ''], 'man renders the page without a warning');
  const commands = ['dvipa agent', 'dvipa netstat vdpt', 'dvipa config check', 'dvipa fastpath purge', '--pin-root'];
  for (const c of commands) {
    assert.ok(page.out.includes(c), `${c} in the manual page`);
  }

  // The unit: what systemd says of it (warnings too: verify exits 0 on an unknown key), and that it would say so.
  const unit = fs.readFileSync(UNIT, 'utf8');
  assert.match(unit, /^ExecStart=\/usr\/bin\/dvipa agent /m);
  const verify = (file: string) => {
    const r = attempt('systemd-analyze', ['verify', file]);
    return { code: r.code, said: `${r.out}${r.err}`.split('\n').filter((l) => l.includes('dvipa')) };
  };
  assert.deepEqual(verify(UNIT), { code: 0, said: [] });
  const broken = path.join(dir, 'dvipa-agent.service');
  fs.writeFileSync(broken, unit.replace('NoNewPrivileges=yes', 'NoNewPrivileges=perhaps'));
  assert.equal(verify(broken).said.length, 1, 'systemd-analyze verify reports a bad value');
  assert.ok(fs.existsSync('/etc/systemd/system/multi-user.target.wants/dvipa-agent.service'), 'the unit is enabled');

  // The renewal thread's nice value and real time (src/cluster/renewal-worker.ts: nice -20 on
  // its own thread, SCHED_RR on it while its node owns; chrt asks the same here)
  // under the unit's privileges, and refused without CAP_SYS_NICE. /proc/PID/stat: nice is
  // field 19, the policy field 41 (SCHED_RR 2).
  const highest = (privileges: string[]) =>
    attempt('setpriv', [
      ...privileges,
      '--',
      'sh',
      '-c',
      "sleep 5 & p=$!; renice -n -20 -p $p >/dev/null && chrt --rr --pid 10 $p; r=$?; awk '{print $19, $41}' /proc/$p/stat; kill $p; exit $r",
    ]);
  const nice = highest(unitPrivileges(unit));
  assert.equal(nice.code, 0, nice.err);
  assert.equal(nice.out.trim(), '-20 2');
  assert.notEqual(highest(unitPrivileges(unit, ['CAP_SYS_NICE'])).code, 0, 'refused without CAP_SYS_NICE');
});

test('where systemd runs, the maintainer scripts start the agent, restart it on upgrade, stop it on removal', () => {
  // The scripts of the package, in a private mount namespace where /run/systemd/system exists and
  // systemctl, deb-systemd-helper, deb-systemd-invoke and dvipa only write down how they were called.
  const control = path.join(dir, 'control');
  sh('dpkg-deb', ['-e', debs[V1], control]);
  const stubs = path.join(dir, 'stubs');
  const calls = path.join(dir, 'calls');
  fs.mkdirSync(stubs);
  for (const tool of ['systemctl', 'deb-systemd-helper', 'deb-systemd-invoke', 'dvipa']) {
    fs.writeFileSync(path.join(stubs, tool), `#!/bin/sh\necho "${tool} $*" >> ${calls}\n`, { mode: 0o755 });
  }
  const steps = [
    ['postinst', 'configure', ''],
    ['postinst', 'configure', V1],
    ['prerm', 'upgrade', V2],
    ['prerm', 'remove'],
    ['postrm', 'remove'],
    ['postrm', 'purge'],
  ];
  sh(
    'unshare',
    [
      '-m',
      'sh',
      '-ec',
      [
        'mount -t tmpfs none /run && mkdir -p /run/systemd/system /run/dvipa',
        'mount -t tmpfs none /sys/fs/bpf && mkdir /sys/fs/bpf/dvipa',
        'mount -t tmpfs none /etc && mkdir /etc/dvipa',
        `mount --bind ${stubs}/dvipa /usr/bin/dvipa`,
        ...steps.map(
          ([script, ...args]) =>
            `echo "-- ${script} ${args.join(' ')}" >> ${calls}; ${control}/${script} ${args.map((a) => `'${a}'`).join(' ')}`,
        ),
        `ls -d /etc/dvipa /run/dvipa >> ${calls} 2>/dev/null || echo "dvipa gone from /etc and /run" >> ${calls}`,
      ].join('\n'),
    ],
    { PATH: `${stubs}:${ROUTER_PATH}` },
  );
  const acts = fs
    .readFileSync(calls, 'utf8')
    .split('\n')
    .filter((l) => /^(-- |deb-systemd-invoke|dvipa |\/)/.test(l));
  assert.deepEqual(acts, [
    '-- postinst configure ',
    'deb-systemd-invoke start dvipa-agent.service',
    `-- postinst configure ${V1}`,
    'deb-systemd-invoke try-restart dvipa-agent.service',
    `-- prerm upgrade ${V2}`,
    '-- prerm remove',
    'deb-systemd-invoke stop dvipa-agent.service',
    'dvipa fastpath purge',
    '-- postrm remove',
    '-- postrm purge',
    'dvipa gone from /etc and /run',
  ]);
  assert.ok(fs.existsSync('/etc/dvipa') && fs.existsSync('/usr/lib/dvipa'), 'the host is untouched');
});

/** The routing agent's memory as the unit's MemoryMax= counts it: its resident set and the maps it created. */
function routingAgentMemory(): { rss: number; maps: number } {
  const status = fs.readFileSync(`/proc/${fleet.procs.r1.pid}/status`, 'utf8');
  const maps = fs
    .readdirSync(PINS)
    .filter((f) => f !== 'links')
    .map((f) => sh('bpftool', ['-j', 'map', 'show', 'pinned', `${PINS}/${f}`]))
    .map((json) => (JSON.parse(json) as { bytes_memlock?: number }).bytes_memlock ?? 0);
  return { rss: Number(/^VmRSS:\s+(\d+) kB/m.exec(status)![1]) * 1024, maps: maps.reduce((a, b) => a + b, 0) };
}

test('an upgrade keeps the configuration, and forwarding under an agent restarted on the new version', async (t) => {
  assert.equal(sh('dvipa', ['--version']).trim(), V1, 'the first version is installed (previous test)');
  fs.writeFileSync('/etc/dvipa/cluster.key', randomBytes(32), { mode: 0o600 });
  fs.writeFileSync(
    '/etc/dvipa/cluster.cfg',
    [
      'CLUSTER KEYFILE /etc/dvipa/cluster.key',
      'NODE r1 XCF 198.18.10.1 EXTERNAL ext INTERNAL rt1',
      'VIPADYNAMIC',
      `  VIPADEFINE 255.255.255.255 ${DVIPA}`,
      `  VIPADISTRIBUTE ${DVIPA} PORT ${PORT} DESTIP 198.18.11.2`,
      'ENDVIPADYNAMIC',
      'NODE t1 XCF 198.18.11.2 INTERNAL up0',
    ].join('\n'),
  );
  const defaults = fs
    .readFileSync('/etc/default/dvipa', 'utf8')
    .replace(/^DVIPA_ARGS=.*$/m, 'DVIPA_ARGS=--metrics 127.0.0.1:9741 --scan-ms 500');
  fs.writeFileSync('/etc/default/dvipa', defaults);
  const config = fs.readFileSync('/etc/dvipa/cluster.cfg', 'utf8');

  const prefix = uniquePrefix('pkg');
  topo = new Topology(prefix);
  fleet = new Agents(topo, ns, dir, prefix);
  for (const n of ['client', 'r1', 't1']) ns[n] = topo.ns(n);
  topo.veth({ ns: ns.client, name: 'c0', addr: '198.18.0.1/24' }, { ns: ns.r1, name: 'ext', addr: '198.18.0.2/24' });
  nsIp(ns.client, 'route', 'add', `${DVIPA}/32`, 'via', '198.18.0.2');
  fullChecksums(ns.client, 'c0');
  nsIp(ns.r1, 'addr', 'add', '198.18.10.1/32', 'dev', 'lo');
  sysctl(ns.r1, 'net.ipv4.ip_forward', '1');
  topo.veth({ ns: ns.r1, name: 'rt1', addr: '198.18.11.1/24' }, { ns: ns.t1, name: 'up0', addr: '198.18.11.2/24' });
  nsIp(ns.t1, 'route', 'add', 'default', 'via', '198.18.11.1');
  await startNameServer(topo, ns.t1, 't1', PORT, 9999);

  startAsUnit('r1');
  // The target on this machine too: its own pins and socket (the routing node has the defaults).
  const targetArgs = `--pin-root ${fleet.pinRoot('t1')} --control /run/dvipa/t1.sock --scan-ms 500`;
  startAsUnit('t1', `DVIPA_NODE=t1 DVIPA_ARGS="${targetArgs}";`);
  await untilReady();
  client = Client.start(topo, ns.client);
  const conns = await client.open(DVIPA, PORT, 5);
  const ids = conns.map((c) => c.id);
  await assertServed(ids, 'before the upgrade');
  // README's commands as typed, against the agent the unit's way started (default socket).
  assert.match(sh('dvipa', ['netstat', 'vdpt']), new RegExp(`${DVIPA.replace(/\./g, '\\.')}`));
  assert.match(sh('dvipa', ['netstat', 'vipadyn']), /ACTIVE/);
  const ids0 = pinnedIds();

  dpkg('-i', debs[V2]);
  assert.equal(sh('dvipa', ['--version']).trim(), V2);
  assert.equal(fs.readFileSync('/etc/default/dvipa', 'utf8'), defaults, 'the modified conffile is kept');
  assert.equal(fs.readFileSync('/etc/dvipa/cluster.cfg', 'utf8'), config);
  assert.equal(fs.statSync('/etc/dvipa').mode & 0o777, 0o700);

  // What systemctl try-restart does (postinst, where systemd runs): stop, then start the new version.
  await fleet.stop('r1');
  await assertServed(ids, 'with no routing agent');
  const fresh = await client.open(DVIPA, PORT, 3);
  await assertServed(
    fresh.map((c) => c.id),
    'new connections with no routing agent',
  );
  startAsUnit('r1');
  await fleet.until('the new routing agent started', () => !!fleet.find('r1', 'agent started'));
  await assertServed([...ids, ...fresh.map((c) => c.id)], 'after the restart');
  assert.deepEqual(pinnedIds(), ids0, 'the CRT map and the XDP link are the ones from before the upgrade');
  const again = await client.open(DVIPA, PORT, 3);
  await assertServed(
    again.map((c) => c.id),
    'new connections after the restart',
  );

  // MemoryMax= leaves room: what a routing node holds here is under half of it.
  const limit = /^MemoryMax=(\d+)G$/m.exec(fs.readFileSync(UNIT, 'utf8'))![1];
  const memory = routingAgentMemory();
  const mb = (n: number) => Math.round(n / 2 ** 20);
  t.diagnostic(`routing agent: ${mb(memory.rss)} MB resident, ${mb(memory.maps)} MB of maps; MemoryMax=${limit}G`);
  assert.ok(memory.rss + memory.maps < (Number(limit) * 2 ** 30) / 2, `${mb(memory.rss)} MB + ${mb(memory.maps)} MB`);
});

test('purge leaves no file, pin or process behind', async () => {
  // What stopping the unit does (prerm, where systemd runs); then dpkg takes the data plane down.
  await fleet.stop('r1');
  await fleet.stop('t1');
  client?.stop();
  client = undefined;
  dpkg('--purge', 'dvipa');
  assert.equal(installed().startsWith('install ok'), false);
  for (const p of [
    '/usr/lib/dvipa',
    '/usr/bin/dvipa',
    '/etc/dvipa',
    '/etc/default/dvipa',
    UNIT,
    '/usr/share/doc/dvipa',
    '/usr/share/man/man8/dvipa.8.gz',
    '/run/dvipa',
    PINS,
    '/etc/systemd/system/multi-user.target.wants/dvipa-agent.service',
  ]) {
    assert.ok(!fs.existsSync(p), `${p} left behind`);
  }
  const helper = '/var/lib/systemd/deb-systemd-helper';
  const helperState = attempt('grep', ['-rl', 'dvipa', `${helper}-enabled`, `${helper}-masked`]).out;
  assert.equal(helperState, '', 'deb-systemd-helper state left behind');
  assert.doesNotMatch(nsIp(ns.r1, '-d', 'link', 'show', 'ext'), /xdp/, 'the distributor is detached');
  const procs = fs
    .readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('/usr/lib/dvipa');
      } catch {
        return false;
      }
    });
  assert.deepEqual(procs, [], 'processes of the package left running');
});
