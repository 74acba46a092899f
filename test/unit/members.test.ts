/*
 * Membership like XCF (members.ts): with CLUSTER ETCD a per-node file needs no PEER for the
 * addresses it names, in both syntaxes and in `config import`; without etcd PEER stays
 * required. A member record is believed only when every field is sound, it is signed by the
 * key this node holds for its name, bound to its lease, newer than the last one seen and
 * consistent with the configuration and the other members; anything else is counted by
 * reason, never thrown, and the number of members is capped.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { importProfile, parseProfile } from '../../src/config/profile.js';
import { formatYamlConfig, parseYamlConfig } from '../../src/config/yaml.js';
import { formatProfile } from '../../src/config/format.js';
import { undeclaredAddresses } from '../../src/config/model.js';
import { loadIdentities, newIdentity, type Identities } from '../../src/cluster/handshake.js';
import {
  MemberSigner,
  Membership,
  parseMemberRecord,
  RecordRefused,
  type MemberRecord,
} from '../../src/cluster/members.js';
import { log } from '../../src/log.js';

const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.js');
const ETCD = 'CLUSTER ETCD http://127.0.0.1:2379\n';
const ROUTER = `NODE r1 XCF 198.18.1.1 EXTERNAL eth0 INTERNAL eth1
VIPADYNAMIC
  VIPADEFINE 255.255.255.255 192.0.2.10
  VIPADISTRIBUTE 192.0.2.10 PORT 80 DESTIP 198.18.1.11 198.18.1.12
  VIPAROUTE DEFINE 198.18.1.12 198.18.2.12
ENDVIPADYNAMIC
`;

test('CLUSTER ETCD: a per-node file needs no PEER for its DESTIP and VIPAROUTE addresses; without etcd it does', () => {
  const cfg = parseProfile(ETCD + ROUTER, 'r1.cfg');
  assert.deepEqual(cfg.peers, []);
  assert.deepEqual(undeclaredAddresses(cfg), ['198.18.1.11', '198.18.1.12']);
  assert.throws(
    () => parseProfile(ROUTER, 'r1.cfg'),
    (e: Error) =>
      /r1\.cfg:4:3: DESTIP 198\.18\.1\.11 is not the cluster address of any node or peer \(list it as a PEER, or give CLUSTER ETCD/.test(
        e.message,
      ) && /r1\.cfg:5:3: VIPAROUTE 198\.18\.1\.12 is not the cluster address/.test(e.message),
  );
  // PEERs still count where given: only the rest comes from etcd.
  const mixed = parseProfile(`${ETCD}${ROUTER}PEER t1 XCF 198.18.1.11\n`);
  assert.deepEqual(undeclaredAddresses(mixed), ['198.18.1.12']);
  // A target's file: its NODE line and etcd, nothing else.
  assert.equal(parseProfile(`${ETCD}NODE t1 XCF 198.18.1.11 INTERNAL up0\n`).nodes[0].name, 't1');
});

test('CLUSTER ETCD without PEERs in the YAML form too, and the text form round-trips', () => {
  const cfg = parseProfile(ETCD + ROUTER);
  const yaml = formatYamlConfig(cfg);
  assert.deepEqual(parseYamlConfig(yaml, 'r1.yaml'), cfg);
  assert.doesNotMatch(yaml, /peers/);
  assert.deepEqual(parseProfile(formatProfile(cfg)), cfg);
  const noEtcd = yaml.replace(/coupling:[\s\S]*?\n(?=\S)/, '');
  assert.doesNotMatch(noEtcd, /coupling/);
  assert.throws(
    () => parseYamlConfig(noEtcd, 'r1.yaml'),
    /DESTIP 198\.18\.1\.11 is not the cluster address.*CLUSTER ETCD/,
  );
});

test('config check says where the addresses come from; config import --etcd writes CLUSTER ETCD and no PEER', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvipa-members-'));
  const run = (...args: string[]) => spawnSync(process.execPath, [CLI, 'config', ...args], { encoding: 'utf8' });
  try {
    fs.writeFileSync(path.join(dir, 'r1.cfg'), ETCD + ROUTER);
    fs.writeFileSync(path.join(dir, 'plain.cfg'), ROUTER);
    const ok = run('check', path.join(dir, 'r1.cfg'));
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(
      ok.stdout,
      /ok \(1 node, 1 DVIPA defined; 198\.18\.1\.11, 198\.18\.1\.12: from the members' etcd records/,
    );
    const refused = run('check', path.join(dir, 'plain.cfg'));
    assert.equal(refused.status, 2);
    assert.match(refused.stderr, /3 problems .*\n.*plain\.cfg:4:3: DESTIP 198\.18\.1\.11 is not the cluster address/);
    fs.writeFileSync(
      path.join(dir, 'PROFILE'),
      'IPCONFIG DYNAMICXCF 10.1.0.1\nVIPADYNAMIC\n  VIPADEFINE 255.255.255.0 198.51.100.10\n  VIPADISTRIBUTE 198.51.100.10 DESTIP 10.1.0.2\nENDVIPADYNAMIC\n',
    );
    const imported = run('import', path.join(dir, 'PROFILE'), '--node', 'MVS1', '--etcd', 'http://10.1.0.100:2379');
    assert.equal(imported.status, 0, imported.stderr);
    assert.match(imported.stdout, /^CLUSTER ETCD http:\/\/10\.1\.0\.100:2379$/m);
    assert.doesNotMatch(imported.stdout, /^PEER/m);
    fs.writeFileSync(path.join(dir, 'mvs1.cfg'), imported.stdout);
    assert.equal(run('check', path.join(dir, 'mvs1.cfg')).status, 0);
    const badUrl = run('import', path.join(dir, 'PROFILE'), '--node', 'MVS1', '--etcd', 'ftp://x');
    assert.equal(badUrl.status, 2);
    assert.match(badUrl.stderr, /--etcd ftp:\/\/x: expected http/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('config import: PEERs for foreign DESTIP addresses, none when the output uses etcd', () => {
  const profile = [
    'IPCONFIG DYNAMICXCF 10.1.0.1 255.255.255.0 1',
    'VIPADYNAMIC',
    '  VIPADEFINE 255.255.255.0 198.51.100.10',
    '  VIPADISTRIBUTE 198.51.100.10 PORT 80 DESTIP 10.1.0.2 10.1.0.3',
    'ENDVIPADYNAMIC',
  ].join('\n');
  const plain = importProfile(profile, { node: 'MVS1' });
  assert.deepEqual(
    plain.config.peers.map((p) => p.xcf),
    ['10.1.0.2', '10.1.0.3'],
  );
  const withEtcd = importProfile(profile, { node: 'MVS1', etcd: ['http://10.1.0.100:2379'] });
  assert.deepEqual(withEtcd.config.peers, []);
  assert.deepEqual(withEtcd.config.coupling, { etcd: ['http://10.1.0.100:2379'] });
  assert.ok(
    withEtcd.notes.some((n) => /DESTIP 10\.1\.0\.2 10\.1\.0\.3: nodes found through their etcd member records/.test(n)),
  );
  // What it writes passes config check.
  assert.deepEqual(parseProfile(formatProfile(withEtcd.config)), withEtcd.config);
});

const KEY = randomBytes(32);
const LEASE = '7587882035361436421';

function identities(): { dir: string; ids: (node: string) => Identities } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvipa-members-'));
  for (const n of ['r1', 't1', 't2']) newIdentity(dir, n);
  return { dir, ids: (node) => loadIdentities(dir, node, []) };
}

const fields = (node: string, xcf: string, at = 1000): Omit<MemberRecord, 'v' | 'key' | 'sig'> => ({
  node,
  xcf: [xcf],
  port: 7400,
  version: 2,
  dvipas: [],
  lease: LEASE,
  at,
});

const refusal = (f: () => void): string => {
  try {
    f();
  } catch (e) {
    if (e instanceof RecordRefused) return e.reason;
    throw e;
  }
  return 'accepted';
};

test('member records: every field checked, each junk form refused by name', () => {
  const signer = new MemberSigner(KEY);
  const good = signer.record(fields('t1', '198.18.1.11'));
  const text = JSON.stringify(good);
  assert.deepEqual(parseMemberRecord('t1', text, LEASE), good);
  const bad = (o: Record<string, unknown>) => JSON.stringify({ ...good, ...o });
  for (const [name, value, lease, reason] of [
    ['t1', 'x'.repeat(9000), LEASE, 'oversized'],
    ['t1', '{"v":1', LEASE, 'malformed'],
    ['t1', '[1,2]', LEASE, 'malformed'],
    ['t1', bad({ extra: 1 }), LEASE, 'malformed'],
    ['t1', bad({ v: 2 }), LEASE, 'malformed'],
    ['../etc', bad({ node: '../etc' }), LEASE, 'malformed'],
    ['t1', bad({ node: 't2' }), LEASE, 'name_mismatch'],
    ['t1', bad({ xcf: [] }), LEASE, 'malformed'],
    ['t1', bad({ xcf: ['127.0.0.1'] }), LEASE, 'malformed'],
    ['t1', bad({ xcf: ['224.0.0.1'] }), LEASE, 'malformed'],
    ['t1', bad({ xcf: ['198.18.1.011'] }), LEASE, 'malformed'],
    ['t1', bad({ xcf: Array(5).fill('198.18.1.11') }), LEASE, 'malformed'],
    ['t1', bad({ dvipas: Array.from({ length: 257 }, (_, i) => `10.0.${i >> 8}.${i & 255}`) }), LEASE, 'malformed'],
    ['t1', bad({ port: 0 }), LEASE, 'malformed'],
    ['t1', bad({ port: '7400' }), LEASE, 'malformed'],
    ['t1', bad({ key: 'x' }), LEASE, 'malformed'],
    ['t1', bad({ at: -1 }), LEASE, 'malformed'],
    ['t1', bad({ sig: 'zz' }), LEASE, 'malformed'],
    ['t1', text, '0', 'no_lease'],
    ['t1', text, '42', 'lease_mismatch'],
  ] as const) {
    assert.equal(
      refusal(() => parseMemberRecord(name, value, lease)),
      reason,
      `${value.slice(0, 80)}`,
    );
  }
});

test('member records: signed by the node, checked with the key held for its name, never the record', () => {
  const { dir, ids } = identities();
  try {
    const r1 = new MemberSigner(KEY, ids('r1'));
    const t1 = new MemberSigner(KEY, ids('t1'));
    const own = t1.record(fields('t1', '198.18.1.11'));
    assert.equal(
      refusal(() => r1.check(own)),
      'accepted',
      "t1's record, with t1's key from the directory",
    );
    assert.match(own.key, /^[0-9a-f]{32}$/);
    // t1's key claiming to be r1: names t1's key id, which is not r1's.
    assert.equal(
      refusal(() => r1.check({ ...t1.record(fields('r1', '198.18.9.9')) })),
      'wrong_key',
    );
    // ... or names r1's key id but cannot sign with it.
    const forged = t1.record(fields('r1', '198.18.9.9'));
    assert.equal(
      refusal(() => t1.check({ ...forged, key: r1.keyId })),
      'bad_signature',
    );
    // A field changed after signing (the address: a redirect).
    assert.equal(
      refusal(() => r1.check({ ...own, xcf: ['198.18.9.9'] })),
      'bad_signature',
    );
    // A name with no key in the directory: nothing proves it.
    newIdentity(path.join(dir, 'elsewhere'), 'x9');
    const x9 = new MemberSigner(KEY, loadIdentities(path.join(dir, 'elsewhere'), 'x9', []));
    assert.equal(
      refusal(() => r1.check(x9.record(fields('x9', '198.18.1.99')))),
      'unknown_identity',
    );
    // Without identities: the cluster key's HMAC; a record signed with another key, or by a node with identities, is refused.
    const plain = new MemberSigner(KEY);
    assert.equal(
      refusal(() => plain.check(new MemberSigner(KEY).record(fields('t2', '198.18.1.12')))),
      'accepted',
    );
    assert.equal(
      refusal(() => plain.check(new MemberSigner(randomBytes(32)).record(fields('t2', '198.18.1.12')))),
      'bad_signature',
    );
    assert.equal(
      refusal(() => plain.check(own)),
      'wrong_key',
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('membership: consistent with the configuration and the other members, replays refused, capped, never throws', () => {
  const signer = new MemberSigner(KEY);
  const put = (m: Membership, r: MemberRecord, lease = LEASE) => m.put(r.node, JSON.stringify(r), lease);
  const m = new Membership({
    me: 'r1',
    configured: new Map([
      ['r1', ['198.18.1.1']],
      ['r2', ['198.18.1.2']],
    ]),
    signer,
    max: 3,
    logger: log,
  });
  const joined: string[] = [];
  const left: string[] = [];
  m.on('join', (r) => joined.push(`${r.node}@${r.xcf[0]}`));
  m.on('leave', (r) => left.push(r.node));
  const counts = (): Record<string, number> => ({ ...m.refusals.counts });

  put(m, signer.record(fields('t1', '198.18.1.11', 1000)));
  assert.deepEqual(joined, ['t1@198.18.1.11']);
  // The same record again (a re-put, a reconnected watch): nothing new.
  put(m, signer.record(fields('t1', '198.18.1.11', 1000)));
  assert.deepEqual(joined, ['t1@198.18.1.11']);
  // Its own record is the coupling's business, not a member.
  put(m, signer.record(fields('r1', '198.18.1.1')));
  // A configured node keeps its configured address; nobody takes another's.
  put(m, signer.record(fields('r2', '198.18.6.6')));
  put(m, signer.record(fields('t9', '198.18.1.11')));
  put(m, signer.record(fields('t8', '198.18.1.2')));
  put(m, signer.record(fields('t7', '198.18.1.1')));
  assert.equal(m.has('r2'), false);
  assert.deepEqual(counts(), { address_mismatch: 1, address_taken: 3 }, "nobody takes this node's address either");
  // The configured node at its address is a member (alive) too.
  put(m, signer.record(fields('r2', '198.18.1.2')));
  assert.equal(m.has('r2'), true);

  // A member moves: it leaves its old address and joins at the new one.
  put(m, signer.record(fields('t1', '198.18.1.21', 2000)));
  assert.deepEqual(left, ['t1']);
  assert.equal(m.get('t1')?.xcf[0], '198.18.1.21');
  // It goes (lease ended): its last record replayed by a stolen etcd credential is refused.
  const last = signer.record(fields('t1', '198.18.1.21', 2000));
  m.delete('t1');
  put(m, last);
  assert.equal(m.has('t1'), false);
  assert.equal(counts().stale, 1);
  // Its next record (a restarted agent) is later: accepted.
  put(m, signer.record(fields('t1', '198.18.1.21', 3000)));
  assert.equal(m.has('t1'), true);

  // The cap: r2 and t1 and one more; a fourth name is refused, and so are 10,000 junk records.
  put(m, signer.record(fields('t2', '198.18.1.12')));
  put(m, signer.record(fields('t3', '198.18.1.13')));
  assert.equal(m.has('t3'), false);
  assert.equal(counts().too_many_members, 1);
  // CPU time, not wall time: on a shared machine the wall clock measures the other processes.
  const cpu = process.cpuUsage();
  for (let i = 0; i < 10_000; i++) {
    const value = i % 3 === 0 ? '\u0000junk' : i % 3 === 1 ? JSON.stringify({ node: `n${i}` }) : 'x'.repeat(9000);
    m.put(i % 2 ? `n${i}` : `../${i}`, value, String(i));
  }
  const used = process.cpuUsage(cpu);
  const ms = (used.user + used.system) / 1000;
  assert.equal(m.records().length, 3, 'the members are those three, still');
  assert.ok(counts().malformed >= 6000 && counts().oversized >= 3000, JSON.stringify(counts()));
  // A generous bound (2 shared cores): the point is that it is not per-record I/O or crypto.
  assert.ok(ms < 2000, `10,000 junk records took ${ms.toFixed(0)} ms of CPU`);
  // A member whose record turns to junk is no member any more.
  m.put('t2', 'junk', LEASE);
  assert.equal(m.has('t2'), false);
  assert.deepEqual(left, ['t1', 't1', 't2'], 'moved, lease ended, record turned to junk');
});

test("a dual-stack member's row (netstat members) carries both its cluster addresses", () => {
  const signer = new MemberSigner(KEY);
  const m = new Membership({ me: 'r1', configured: new Map([['r1', ['198.18.1.1']]]), signer, max: 4, logger: log });
  const dual = { ...fields('t1', '198.18.1.11'), xcf: ['198.18.1.11', '2001:db8:1::11'] };
  m.put('t1', JSON.stringify(signer.record(dual)), LEASE);
  m.put('t2', JSON.stringify(signer.record(fields('t2', '2001:db8:1::12'))), LEASE);
  assert.deepEqual(
    m.rows(() => true).map((r) => [r.node, r.xcf]),
    [
      ['t1', ['198.18.1.11', '2001:db8:1::11']],
      ['t2', ['2001:db8:1::12']],
    ],
  );
});
