/*
 * The dvipa command as a script sees it: help on every command, JSON output shapes,
 * clear errors and exit codes (0 ok, 1 failed, 2 bad usage or input, 3 no agent, 4 not permitted).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildFrame } from '../../src/net/packet.js';
import { formatPcap, writePcap } from '../../src/net/pcap.js';
import { buildFrame6 } from '../../src/net/packet6.js';
import { FASTPATH_PATHS } from '../../src/bench/fastpath.js';
import { FastPath } from '../../src/dataplane/fastpath.js';
import type { ReplayResult } from '../../src/lab/replay.js';
import { requireRoot, scratchPinRoot } from '../helpers/env.js';

const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.js');
let dir: string;
let pins: ReturnType<typeof scratchPinRoot>;

function dvipa(args: string[], opts: { asNobody?: boolean } = {}): { code: number; out: string; err: string } {
  const cmd = opts.asNobody
    ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, CLI, ...args]
    : [process.execPath, CLI, ...args];
  const r = spawnSync(cmd[0], cmd.slice(1), {
    encoding: 'utf8',
    env: { ...process.env, DVIPA_LOG_LEVEL: 'warn' },
    timeout: 120_000,
  });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

/** The same, without blocking: for many process starts at once (slow each on a loaded machine). */
function dvipaAsync(args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) =>
    execFile(
      process.execPath,
      [CLI, ...args],
      { env: { ...process.env, DVIPA_LOG_LEVEL: 'warn' }, timeout: 120_000 },
      (e, out, err) => resolve({ code: e ? Number((e as { code?: number }).code ?? -1) : 0, out, err }),
    ),
  );
}

before(() => {
  requireRoot();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvipa-cli-'));
  fs.chmodSync(dir, 0o755);
  pins = scratchPinRoot('cli');
  fs.writeFileSync(
    path.join(dir, 'svc.yaml'),
    [
      'clusterAddress: 198.18.1.1',
      'services:',
      '  - vip: 192.0.2.10',
      '    port: 80',
      '    targets: [198.18.1.11, { address: 198.18.1.12, weight: 2 }]',
    ].join('\n'),
  );
  fs.writeFileSync(
    path.join(dir, 'bad.yaml'),
    'clusterAddress: 198.18.1\nservices:\n  - vip: 192.0.2.10\n    port: 99999\n    targets: [x]\n',
  );
  writePcap(path.join(dir, 'in.pcap'), [
    buildFrame({ saddr: '198.18.0.1', daddr: '192.0.2.10', sport: 1000, dport: 80, tcpFlags: { syn: true } }),
    buildFrame({ saddr: '198.18.0.1', daddr: '192.0.2.10', sport: 1000, dport: 80, tcpFlags: { ack: true } }),
    buildFrame({ saddr: '198.18.0.1', daddr: '198.18.0.9', dport: 22 }),
  ]);
  fs.writeFileSync(path.join(dir, 'junk.pcap'), 'not a capture');
});

after(() => {
  pins?.remove();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** A routing node's configuration and key for `dvipa agent` runs that stop before it starts. */
function agentFiles(): { cfg: string; key: string } {
  const cfg = path.join(dir, 'agent.cfg');
  fs.writeFileSync(
    cfg,
    'NODE r1 XCF 198.18.10.1 EXTERNAL ext\nVIPADYNAMIC\n  VIPADEFINE 255.255.255.255 192.0.2.10\nENDVIPADYNAMIC\n',
  );
  const key = path.join(dir, 'agent.key');
  fs.writeFileSync(key, Buffer.alloc(32, 7), { mode: 0o600 });
  return { cfg, key };
}

test('dvipa agent: every option out of range, a short or missing key file: exit 2 naming the problem, nothing started', async () => {
  const { cfg, key } = agentFiles();
  const short = path.join(dir, 'short.key');
  fs.writeFileSync(short, Buffer.alloc(31, 7), { mode: 0o600 });
  const pinRoot = `${pins.pinRoot}-agent`;
  const base = [
    'agent',
    '--config',
    cfg,
    '--node',
    'r1',
    '--pin-root',
    pinRoot,
    '--control',
    path.join(dir, 'agent.sock'),
  ];
  // Options given twice become lists: each case names the key file or gets the good one.
  const withKey = (extra: string[]) => (extra.includes('--key-file') ? extra : ['--key-file', key, ...extra]);
  const etcd = ['--etcd', 'http://198.18.20.100:2379', '--insecure-etcd'];
  const cases: Array<[string[], RegExp]> = [
    [['--port', '0'], /--port must be a whole number from 1 to 65535/],
    [['--port', '65536'], /--port must be a whole number from 1 to 65535/],
    [['--port', '1.5'], /--port must be/],
    [['--scan-ms', '49'], /--scan-ms must be a whole number from 50 to 60000/],
    [['--scan-ms', '60001'], /--scan-ms must be a whole number from 50 to 60000/],
    [['--crt-entries', '0'], /--crt-entries must be a whole number from 1 to 268435456/],
    [['--crt-entries', '268435457'], /--crt-entries must be/],
    [[...etcd, '--lease-ttl', '0'], /--lease-ttl must be a whole number from 1 to 300/],
    [[...etcd, '--lease-ttl', '301'], /--lease-ttl must be/],
    [['--takeback-delay', '-1'], /--takeback-delay must be a whole number from 0 to 86400/],
    [['--restart-grace', '3601'], /--restart-grace must be/],
    [['--etcd', 'ftp://x'], /etcd/],
    [['--metrics', 'nohost'], /--metrics nohost: expected host:port/],
    [['--metrics', '127.0.0.1:70000'], /--metrics/],
    [[...etcd, '--ipsec-seq-margin', '0'], /--ipsec-seq-margin must be a whole number from 1 to 2147483648/],
    [[...etcd, '--ipsec-interval', '99'], /--ipsec-interval must be a whole number from 100 to 60000/],
    [['--ipsec-interval', '1000'], /IPsec recovery keeps SAs in the coupling facility: give --etcd/],
    [['--key-file', short], /short\.key: 31 bytes, at least 32 needed/],
    [['--key-file', path.join(dir, 'none.key')], /cluster key .*none\.key: ENOENT/],
  ];
  const results = await Promise.all(cases.map(([extra]) => dvipaAsync([...base, ...withKey(extra)])));
  cases.forEach(([extra, why], i) => {
    assert.equal(results[i].code, 2, `${extra.join(' ')}: ${results[i].err}`);
    assert.match(results[i].err, why, extra.join(' '));
  });
  assert.equal(fs.existsSync(pinRoot), false, 'nothing was loaded or pinned');
});

test('dvipa agent --crt-entries over a pinned CRT of another size: exit 1 naming both sizes and the way out; the pins keep theirs', async () => {
  const { cfg, key } = agentFiles();
  const pinRoot = `${pins.pinRoot}-crt`;
  try {
    FastPath.open({ pinRoot, crtMaxEntries: 4096 }).close();
    const r = await dvipaAsync([
      'agent',
      ...['--config', cfg, '--node', 'r1', '--key-file', key, '--pin-root', pinRoot],
      ...['--control', '', '--metrics', '', '--crt-entries', '8192'],
    ]);
    assert.equal(r.code, 1, r.err);
    assert.match(r.err, /the pinned CRT at .*crt_est holds 4096 entries, not 8192: keep its size, or purge the pins/);
    // Opened with the size it was made with: another size would throw.
    FastPath.open({ pinRoot, crtMaxEntries: 4096 }).close();
  } finally {
    fs.rmSync(pinRoot, { recursive: true, force: true });
  }
});

test('every command has --help', async () => {
  const commands = [
    [],
    ['fastpath'],
    ['fastpath', 'apply'],
    ['fastpath', 'attach'],
    ['fastpath', 'detach'],
    ['fastpath', 'status'],
    ['fastpath', 'replay'],
    ['fastpath', 'purge'],
    ['bench'],
    ['bench', 'fastpath'],
    ['bench', 'tables'],
    ['demo'],
    ['agent'],
    ['config'],
    ['config', 'check'],
    ['config', 'show'],
    ['config', 'import'],
    ['config', 'identity'],
    ['netstat'],
    ['netstat', 'vdpt'],
    ['netstat', 'vcrt'],
    ['netstat', 'vipadyn'],
    ['netstat', 'vipadcfg'],
    ['netstat', 'ipsec'],
    ['dvipa'],
    ['dvipa', 'show'],
    ['dvipa', 'move'],
    ['dvipa', 'quiesce'],
    ['dvipa', 'delete'],
    ['dvipa', 'reactivate'],
    ['lab'],
    ['lab', 'up'],
    ['lab', 'status'],
    ['lab', 'demo'],
    ['lab', 'failover'],
    ['lab', 'down'],
  ];
  const results = await Promise.all(commands.map((args) => dvipaAsync([...args, '--help'])));
  commands.forEach((args, i) => {
    assert.equal(results[i].code, 0, `${args.join(' ')} --help: ${results[i].err}`);
    assert.match(results[i].out, /Options:/, args.join(' '));
  });
});

test('netstat: no agent is exit 3, bad filters exit 2, not root exit 4', () => {
  const sock = path.join(dir, 'no-agent.sock');
  for (const report of ['vdpt', 'vcrt', 'vipadyn', 'vipadcfg', 'ipsec']) {
    const r = dvipa(['netstat', report, '--socket', sock]);
    assert.equal(r.code, 3, `${report}: ${r.err}`);
    assert.match(r.err, /no agent answers on .*no-agent\.sock: start it \(dvipa agent \.\.\.\) or give its --socket/);
  }
  for (const args of [
    ['vdpt', '--dvipa', '192.0.2'],
    ['vcrt', '--port', '70000'],
    ['vcrt', '--limit', '0'],
    ['vcrt', '--client', 'x'],
    ['ipsec', '--dvipa', 'x'],
    ['nosuch'],
  ]) {
    const r = dvipa(['netstat', ...args, '--socket', sock]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
  }
  const lab = dvipa(['lab', 'status'], { asNobody: true });
  assert.equal(lab.code, 4);
  assert.match(lab.err, /needs root/);
});

test('bad usage exits 2, says what to do, and runs nothing', () => {
  const p = pins.pinRoot;
  for (const args of [
    ['nosuchcommand'],
    ['fastpath', 'replay', '--config', 'x'],
    ['bench', 'fastpath', '--rounds', '0'],
    ['bench', 'fastpath', '--paths', 'crt_hit,nosuchpath'],
    ['fastpath', 'attach', 'nosuchif0', '--mode', 'fast', '--pin-root', p],
    ['fastpath', 'status', '--pin-root', p, '--bogus'],
  ]) {
    const r = dvipa(args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.code} ${r.err}`);
    assert.match(r.err, /^dvipa: /, args.join(' '));
    assert.equal(fs.existsSync(p), false, `${args.join(' ')}: the command must not have run`);
  }
  // Each refused with its reason, before anything is set up (these ran, or crashed, before).
  for (const [args, reason] of [
    [['bench', 'fastpath', '--paths', 'syn', '--paths', 'pass'], /--paths was given more than once/],
    [['bench', 'traffic', '--modes', 'xdp', '--modes', 'kernel'], /--modes was given more than once/],
    [['fastpath', 'status', '--pin-root', p, '--pin-root', p], /--pin-root was given more than once/],
    [['bench', 'traffic', '--modes', 'xdp,kernel,xdp'], /--modes: xdp,kernel,xdp: expected .*, each once/],
    [['bench', 'fastpath', '--paths', 'syn,'], /--paths: syn,: expected/],
    [['bench', 'traffic', '--generator', 'pktgen', '--rate', '-5'], /--rate must be an integer from 0/],
    [['bench', 'traffic', '--generator', 'pktgen', '--rate', '1.5'], /--rate must be an integer from 0/],
  ] as const) {
    const r = dvipa([...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.code} ${r.err}`);
    assert.match(r.err, reason, args.join(' '));
    assert.equal(fs.existsSync(p), false, `${args.join(' ')}: the command must not have run`);
  }
});

test('the agent refuses secrets others may read, short keys, plain or unauthenticated etcd, missing node keys', () => {
  const cfg = path.join(dir, 'agent.cfg');
  fs.writeFileSync(
    cfg,
    'NODE r1 XCF 198.18.1.1\nVIPADYNAMIC\n  VIPADEFINE 255.255.255.255 192.0.2.10\nENDVIPADYNAMIC\nNODE t1 XCF 198.18.1.11\n',
  );
  const key = path.join(dir, 'agent.key');
  const ca = path.join(dir, 'ca.pem');
  fs.writeFileSync(ca, '');
  const run = (...more: string[]) =>
    dvipa([
      'agent',
      '--config',
      cfg,
      '--node',
      'r1',
      '--key-file',
      key,
      '--pin-root',
      pins.pinRoot,
      '--control',
      '',
      '--metrics',
      '',
      ...more,
    ]);
  const refused = (r: { code: number; err: string }, why: RegExp) => {
    assert.equal(r.code, 2, r.err);
    assert.match(r.err, why);
    assert.equal(fs.existsSync(pins.pinRoot), false, 'nothing started');
  };
  fs.writeFileSync(key, Buffer.alloc(32, 7), { mode: 0o644 });
  fs.chmodSync(key, 0o644);
  refused(run(), /agent\.key: mode 0644: open to group or others; chmod 600/);
  fs.writeFileSync(key, Buffer.alloc(16, 7));
  fs.chmodSync(key, 0o600);
  refused(run(), /agent\.key: 16 bytes, at least 32 needed/);
  fs.writeFileSync(key, Buffer.alloc(32, 7));
  refused(
    run('--etcd', 'http://127.0.0.1:2379'),
    /http:\/\/127\.0\.0\.1:2379 is plain http: anyone who reaches etcd could move DVIPAs.*--insecure-etcd/s,
  );
  refused(run('--etcd', 'https://127.0.0.1:2379', '--etcd-ca', ca), /no client certificate \(--etcd-cert\) or user/);
  const pw = path.join(dir, 'etcd.pw');
  fs.writeFileSync(pw, 'short\n', { mode: 0o600 });
  refused(
    run('--etcd', 'https://127.0.0.1:2379', '--etcd-ca', ca, '--etcd-user', 'r1', '--etcd-password-file', pw),
    /etcd\.pw: 6 bytes, at least 12/,
  );
  const ids = path.join(dir, 'ids');
  refused(run('--identities', ids), /ids\/r1\.key: ENOENT.*dvipa config identity r1 --dir/);
  assert.equal(dvipa(['config', 'identity', 'r1', '--dir', ids]).code, 0);
  assert.equal(fs.statSync(path.join(ids, 'r1.key')).mode & 0o777, 0o600);
  refused(run('--identities', ids), /ids\/t1\.pub: ENOENT/);
  assert.equal(dvipa(['config', 'identity', 'r1', '--dir', ids]).code, 2, 'an existing key is never overwritten');
});

test('a bad service file lists every problem and exits 2', () => {
  const r = dvipa(['fastpath', 'replay', '--config', path.join(dir, 'bad.yaml'), '--pcap', path.join(dir, 'in.pcap')]);
  assert.equal(r.code, 2);
  assert.match(r.err, /3 problems/);
  assert.match(r.err, /clusterAddress: "198.18.1" is not an IPv4 address/);
  assert.match(r.err, /services\[0\]\.port: expected a port/);
  assert.match(r.err, /services\[0\]\.targets\[0\]\.address: "x" is not an IPv4 or IPv6 address/);
  // IPv4-mapped: IPv4 to the data plane, so never an IPv6 DVIPA, target or cluster address.
  fs.writeFileSync(
    path.join(dir, 'mapped.yaml'),
    'clusterAddress: 198.18.1.1\nservices: [{ vip: "::ffff:192.0.2.10", targets: ["2001:db8:1::11"] }]\n',
  );
  const mapped = dvipa([
    'fastpath',
    'replay',
    '--config',
    path.join(dir, 'mapped.yaml'),
    '--pcap',
    path.join(dir, 'in.pcap'),
  ]);
  assert.equal(mapped.code, 2);
  assert.match(
    mapped.err,
    /services\[0\]\.vip: ::ffff:192\.0\.2\.10: an IPv4-mapped IPv6 address is IPv4 to dvipa: write 192\.0\.2\.10/,
  );
  const missing = dvipa(['fastpath', 'apply', '--config', path.join(dir, 'nope.yaml'), '--pin-root', pins.pinRoot]);
  assert.equal(missing.code, 2);
  assert.match(missing.err, /nope.yaml: 1 problem:\s+no such file/);
});

/** `fastpath replay --json` of a config and a capture in the test's directory, which must succeed. */
function replayJson(config: string, pcap: string): ReplayResult {
  const r = dvipa(['fastpath', 'replay', '--config', path.join(dir, config), '--pcap', path.join(dir, pcap), '--json']);
  assert.equal(r.code, 0, r.err);
  return JSON.parse(r.out) as ReplayResult;
}

test('a bad pcap exits 2 with the reason', () => {
  const r = dvipa([
    'fastpath',
    'replay',
    '--config',
    path.join(dir, 'svc.yaml'),
    '--pcap',
    path.join(dir, 'junk.pcap'),
  ]);
  assert.equal(r.code, 2);
  assert.match(r.err, /junk.pcap: not a pcap file/);
});

test('replay --json: verdict, reason, target and CRT effect per packet', () => {
  const j = replayJson('svc.yaml', 'in.pcap');
  assert.deepEqual(j.services, ['192.0.2.10:80/tcp']);
  assert.deepEqual(
    j.packets.map((p: { verdict: string; reason: string; crt?: string }) => [p.verdict, p.reason, p.crt]),
    [
      ['redirect', 'fwd_redirect', 'new'],
      ['redirect', 'fwd_redirect', 'hit'],
      ['pass', 'pass_not_service', undefined],
    ],
  );
  assert.equal(j.packets[0].target, j.packets[1].target);
  assert.ok(['198.18.1.11', '198.18.1.12'].includes(j.packets[0].target ?? ''));
  assert.deepEqual(j.totals, { fwd_redirect: 2, pass_not_service: 1 });
});

test('replay of an IPv6 capture: IPv6 services, targets of either family, IPv4 to an IPv6 target; packets described', () => {
  fs.writeFileSync(
    path.join(dir, 'svc6.yaml'),
    [
      'clusterAddress: 198.18.1.1',
      'clusterAddress6: 2001:DB8:1::1',
      'services:',
      '  - { vip: "2001:db8:10::10", port: 80, targets: ["2001:db8:1::11"] }',
      '  - { vip: "2001:db8:10::10", port: 53, protocol: udp, targets: [198.18.1.11] }',
      '  - { vip: 192.0.2.10, port: 80, targets: ["2001:db8:1:0::12"] }',
    ].join('\n'),
  );
  const c6 = { saddr: '2001:db8::1', daddr: '2001:db8:10::10', sport: 1000, dport: 80 };
  // The IPv6 EtherType over an IPv4 header: one packet's verdict, not the replay's end.
  const notVersion6 = buildFrame6({ ...c6, ack: true });
  notVersion6[14] = 0x45;
  writePcap(path.join(dir, 'in6.pcap'), [
    buildFrame6({ ...c6, syn: true }),
    buildFrame6({ ...c6, ack: true, ext: [{ type: 'hop' }] }),
    buildFrame6({ ...c6, protocol: 'udp', dport: 53 }),
    buildFrame6({ ...c6, ext: [{ type: 'fragment', fragOffset: 10 }] }),
    buildFrame6({ ...c6, protocol: 'icmpv6' }),
    buildFrame({ saddr: '198.18.0.1', daddr: '192.0.2.10', sport: 1000, dport: 80, tcpFlags: { syn: true } }),
    buildFrame({ saddr: '198.18.0.1', daddr: '192.0.2.10', sport: 1000, dport: 80, tcpFlags: { ack: true } }),
    notVersion6,
  ]);
  const j = replayJson('svc6.yaml', 'in6.pcap');
  assert.deepEqual(j.services, ['2001:db8:10::10:80/tcp', '2001:db8:10::10:53/udp', '192.0.2.10:80/tcp']);
  assert.deepEqual(
    j.packets.map((p) => [p.verdict, p.reason, p.target, p.crt]),
    [
      ['redirect', 'fwd_redirect', '2001:db8:1::11', 'new'],
      ['redirect', 'fwd_redirect', '2001:db8:1::11', 'hit'],
      ['redirect', 'fwd_redirect', '198.18.1.11', 'new'],
      ['pass', 'pass_fragment6', undefined, undefined],
      ['pass', 'pass_not_service', undefined, undefined],
      ['redirect', 'fwd_redirect', '2001:db8:1::12', 'new'],
      ['redirect', 'fwd_redirect', '2001:db8:1::12', 'hit'],
      ['pass', 'pass_malformed', undefined, undefined],
    ],
  );
  assert.equal(j.packets[0].packet, 'TCP [2001:db8::1]:1000 > [2001:db8:10::10]:80 [S] len 60');
  assert.equal(j.packets[7].packet, 'IPv6 (header truncated or not version 6)');
  assert.equal(j.packets[3].packet, 'IPv6 2001:db8::1 > 2001:db8:10::10 fragment len 68');
  assert.match(j.packets[4].packet, /^ICMPv6 2001:db8::1 > 2001:db8:10::10 type 128/);
});

test('replay of jumbo frames and super-frames: each too large one says so, the rest still run', () => {
  const flow = { saddr: '198.18.0.1', daddr: '192.0.2.10', sport: 1001, dport: 80 };
  const jumbo = buildFrame({ ...flow, tcpFlags: { syn: true }, df: true, payload: 9000 - 14 - 40 });
  // What a capture of GRO/GSO shows: far beyond any MTU, more than a test run can hold.
  const superFrame = Buffer.concat([buildFrame({ ...flow, tcpFlags: { ack: true } }), Buffer.alloc(100_000)]);
  writePcap(path.join(dir, 'big.pcap'), [jumbo, superFrame, buildFrame({ ...flow, tcpFlags: { ack: true } })]);
  const j = replayJson('svc.yaml', 'big.pcap');
  assert.deepEqual(
    j.packets.map((p: { verdict: string; reason: string }) => [p.verdict, p.reason]),
    [
      ['tx', 'tx_frag_needed'],
      ['not-run', 'frame_too_large'],
      ['redirect', 'fwd_redirect'],
    ],
  );
  assert.match(j.packets[1].packet, /^100054-byte frame, larger than a test run takes/);
});

test('replay of a capture cut at its snap length: headers as captured, the rest zero-filled; a record may not claim any length', () => {
  const flow = { saddr: '198.18.0.1', daddr: '192.0.2.10', sport: 1002, dport: 80 };
  const whole = buildFrame({ ...flow, tcpFlags: { ack: true }, payload: 1400 });
  const pcap = formatPcap([whole.subarray(0, 96), whole.subarray(0, 60)]);
  // Each record's original length (its header's last word): what was on the wire.
  pcap.writeUInt32LE(whole.length, 24 + 12);
  pcap.writeUInt32LE(1_000_000, 24 + 16 + 96 + 12);
  fs.writeFileSync(path.join(dir, 'cut.pcap'), pcap);
  const j = replayJson('svc.yaml', 'cut.pcap');
  assert.deepEqual(
    j.packets.map((p: { verdict: string; reason: string }) => [p.verdict, p.reason]),
    [
      ['redirect', 'fwd_redirect'],
      ['not-run', 'frame_too_large'],
    ],
  );
  assert.match(j.packets[0].packet, /^TCP .* \(captured 96 of 1454 bytes, the rest zero-filled\)$/);
  assert.match(j.packets[1].packet, /^1000000-byte frame, larger than a test run takes \(captured 60 of 1000000 bytes/);
});

test('apply, status --json, attach errors, purge', () => {
  const applied = dvipa([
    'fastpath',
    'apply',
    '--config',
    path.join(dir, 'svc.yaml'),
    '--pin-root',
    pins.pinRoot,
    '--json',
  ]);
  assert.equal(applied.code, 0, applied.err);
  assert.equal(JSON.parse(applied.out).services[0].service, '192.0.2.10:80/tcp');

  const status = dvipa(['fastpath', 'status', '--pin-root', pins.pinRoot, '--json']);
  assert.equal(status.code, 0, status.err);
  const s = JSON.parse(status.out);
  assert.equal(s.config.clusterAddr, '198.18.1.1');
  assert.equal(s.crtEntries, 0);
  assert.deepEqual(s.links, []);
  assert.equal(s.services[0].service, '192.0.2.10:80/tcp');
  assert.equal(typeof s.services[0].stats.packets, 'number');

  const attach = dvipa(['fastpath', 'attach', 'nosuchif0', '--pin-root', pins.pinRoot]);
  assert.equal(attach.code, 1);
  assert.match(attach.err, /if_nametoindex\(nosuchif0\): ENODEV/);
  const detach = dvipa(['fastpath', 'detach', 'nosuchif0', '--pin-root', pins.pinRoot]);
  assert.equal(detach.code, 1);
  assert.match(detach.err, /no dvipa distributor program is attached to nosuchif0/);

  const purge = dvipa(['fastpath', 'purge', '--pin-root', pins.pinRoot]);
  assert.equal(purge.code, 0);
  assert.equal(fs.existsSync(pins.pinRoot), false);
});

test('without root: exit 4 and a clear message', () => {
  for (const args of [
    ['fastpath', 'status'],
    ['bench', 'fastpath'],
    ['demo'],
    ['fastpath', 'replay', '--config', path.join(dir, 'svc.yaml'), '--pcap', path.join(dir, 'in.pcap')],
  ]) {
    const r = dvipa(args, { asNobody: true });
    assert.equal(r.code, 4, `${args.join(' ')}: ${r.code} ${r.err}`);
    assert.match(r.err, /needs root/);
  }
});

test('bench fastpath --json and bench tables --json have their figures', () => {
  const fastpath = dvipa(['bench', 'fastpath', '--json', '--rounds', '1', '--repeat', '2000']);
  assert.equal(fastpath.code, 0, fastpath.err);
  const f = JSON.parse(fastpath.out);
  // Katran's paths run only with --katran DIR (bench.test).
  assert.deepEqual(
    f.paths.map((p: { path: string }) => p.path),
    FASTPATH_PATHS.filter((p) => !p.startsWith('katran_')),
  );
  assert.equal(f.vsKatran, undefined, 'no Katran figures without --katran');
  assert.equal(f.paths[0].ratio, 1);
  assert.ok(f.v6OverV4 > 0 && Number.isFinite(f.v6OverV4), 'IPv6 established over IPv4');
  for (const p of f.paths) assert.ok(p.nsPerPacket > 0 && Number.isFinite(p.ratio), p.path);

  const tables = dvipa(['bench', 'tables', '--json', '--crt-entries', '20000']);
  assert.equal(tables.code, 0, tables.err);
  const t = JSON.parse(tables.out);
  assert.equal(t.crt.entries, 20000);
  assert.ok(t.maglev.buildMs100Weighted > 0);
  assert.deepEqual(Object.keys(t.maglev.movedOnRemovePct), ['3', '10', '100']);
});
