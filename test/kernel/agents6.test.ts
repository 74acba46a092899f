/*
 * IPv6 end to end with real agents: a routing agent and two target agents, each `dvipa agent`
 * in its own namespace, with an IPv6 DVIPA in z/OS's IPv6 form. t1 has an IPv6 cluster address
 * only; r1 and t2 have both, and t2 is also the target of an IPv4 DVIPA by its IPv4 address.
 * Real TCP servers on the targets, a real client over both families: the agents connect over
 * IPv6, SRVSTAT makes the targets ready, connections spread over both, NEWCONN confirms each
 * in the CRT of its family under the address its DESTIP names, TERMCONN removes them, and
 * netstat shows the IPv6 rows.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { fullChecksums, nsIp, sysctl, Topology } from '../../src/lab/netns.js';
import { Client, startNameServer, type ConnResult } from '../../src/lab/procs.js';
import { FastPath } from '../../src/dataplane/fastpath.js';
import { CrtOrigin } from '../../src/dataplane/structs.js';
import { requireRoot, uniquePrefix } from '../helpers/env.js';
import { Agents } from '../helpers/agents.js';

const DVIPA = '2001:db8:100::10';
const DVIPA4 = '192.0.2.10';
const PORT = 8080;
const R1 = '2001:db8:10::1';
const TARGETS = [1, 2].map((i) => ({ name: `t${i}`, xcf: `2001:db8:1${i}::2`, gw: `2001:db8:1${i}::1` }));
const T2_V4 = { xcf: '198.18.12.2', gw: '198.18.12.1' };
const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.js');

let topo: Topology;
let dir: string;
let client: Client;
let fleet: Agents;
const ns: Record<string, string> = {};
const servers: ChildProcess[] = [];

/** The routing node's CRT entries of a DVIPA, from the CRT of its family. */
function routerCrt6(dvipa = DVIPA): Array<{ origin: number; target: string }> {
  const fp = FastPath.open({ pinRoot: fleet.pinRoot('r1') });
  try {
    // Confirmed connections in crt_est / crt6_est, the others in the LRU of their family.
    const tables = dvipa === DVIPA ? [fp.crt6Est, fp.crt6] : [fp.crtEst, fp.crt];
    return tables
      .flatMap((t) => [...t.entries()])
      .filter(([k]) => k.daddr === dvipa && k.dport === PORT)
      .map(([, v]) => ({ origin: v.origin, target: v.target }));
  } finally {
    fp.close();
  }
}

function names(rs: ConnResult[]): string[] {
  for (const r of rs) assert.equal(r.error, undefined, `connection ${r.id}: ${r.error}`);
  return rs.map((r) => r.name!);
}

before(async () => {
  requireRoot();
  const prefix = uniquePrefix('ag6');
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvipa-agents6-'));
  fs.writeFileSync(path.join(dir, 'cluster.key'), randomBytes(32), { mode: 0o600 });
  fs.writeFileSync(
    path.join(dir, 'cluster.cfg'),
    [
      `NODE r1 XCF 198.18.10.1 ${R1} EXTERNAL ext INTERNAL ${TARGETS.map((t) => `r${t.name}`).join(' ')}`,
      'VIPADYNAMIC',
      `  VIPADEFINE MOVEABLE IMMEDIATE DVIPA6A ${DVIPA}`,
      `  VIPADISTRIBUTE DVIPA6A PORT ${PORT} DESTIP ${TARGETS.map((t) => t.xcf).join(' ')}`,
      `  VIPADEFINE 255.255.255.255 ${DVIPA4}`,
      `  VIPADISTRIBUTE ${DVIPA4} PORT ${PORT} DESTIP ${T2_V4.xcf}`,
      'ENDVIPADYNAMIC',
      `NODE t1 XCF ${TARGETS[0].xcf} INTERNAL up0`,
      `NODE t2 XCF ${T2_V4.xcf} ${TARGETS[1].xcf} INTERNAL up0`,
    ].join('\n'),
  );
  topo = new Topology(prefix);
  fleet = new Agents(topo, ns, dir, prefix);
  ns.client = topo.ns('client');
  ns.r1 = topo.ns('r1');
  topo.veth({ ns: ns.client, name: 'c0' }, { ns: ns.r1, name: 'ext' });
  nsIp(ns.client, 'addr', 'add', '2001:db8::1/64', 'nodad', 'dev', 'c0');
  nsIp(ns.r1, 'addr', 'add', '2001:db8::2/64', 'nodad', 'dev', 'ext');
  nsIp(ns.client, '-6', 'route', 'add', `${DVIPA}/128`, 'via', '2001:db8::2');
  nsIp(ns.client, 'addr', 'add', '198.18.0.1/24', 'dev', 'c0');
  nsIp(ns.r1, 'addr', 'add', '198.18.0.2/24', 'dev', 'ext');
  nsIp(ns.client, 'route', 'add', `${DVIPA4}/32`, 'via', '198.18.0.2');
  nsIp(ns.r1, 'addr', 'add', '198.18.10.1/32', 'dev', 'lo');
  sysctl(ns.r1, 'net.ipv4.ip_forward', '1');
  fullChecksums(ns.client, 'c0');
  nsIp(ns.r1, 'addr', 'add', `${R1}/128`, 'nodad', 'dev', 'lo');
  sysctl(ns.r1, 'net.ipv6.conf.all.forwarding', '1');
  for (const t of TARGETS) {
    ns[t.name] = topo.ns(t.name);
    topo.veth({ ns: ns.r1, name: `r${t.name}` }, { ns: ns[t.name], name: 'up0' });
    nsIp(ns.r1, 'addr', 'add', `${t.gw}/64`, 'nodad', 'dev', `r${t.name}`);
    nsIp(ns[t.name], 'addr', 'add', `${t.xcf}/64`, 'nodad', 'dev', 'up0');
    nsIp(ns[t.name], '-6', 'route', 'add', 'default', 'via', t.gw);
  }
  nsIp(ns.r1, 'addr', 'add', `${T2_V4.gw}/24`, 'dev', 'rt2');
  nsIp(ns.t2, 'addr', 'add', `${T2_V4.xcf}/24`, 'dev', 'up0');
  nsIp(ns.t2, 'route', 'add', 'default', 'via', T2_V4.gw);
  for (const node of ['r1', ...TARGETS.map((t) => t.name)]) fleet.start(node);
  await fleet.until('all agents started', () =>
    Object.values(fleet.logs).every((l) => l.some((x) => x.msg === 'agent started')),
  );
  client = Client.start(topo, ns.client);
});

after(() => {
  topo?.teardown();
  fleet?.purge();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('IPv6 DVIPA: agents over IPv6, the targets ready by SRVSTAT, connections spread and confirmed, netstat rows; a dual-stack target under each address', async () => {
  await fleet.until('r1 connected to both targets over IPv6', () =>
    TARGETS.every((t) => fleet.logs.r1.some((l) => l.msg === 'peer connected' && l.peer === t.name)),
  );
  for (const t of TARGETS) servers.push(await startNameServer(topo, ns[t.name], t.name, PORT, 9999));
  await fleet.until(
    "both targets ready in r1's DPT",
    () =>
      TARGETS.every((t) =>
        fleet.logs.r1.some(
          (l) =>
            l.msg === 'DPT changed' && l.target === t.name && l.ready === true && String(l.service).includes(DVIPA),
        ),
      ),
    10000,
  );
  // Each target holds the IPv6 DVIPA on lo, where Linux answers no Neighbour Solicitation
  // for it (ownership6.test.ts), and not on its cluster interface.
  for (const t of TARGETS) {
    assert.match(nsIp(ns[t.name], '-6', 'addr', 'show', 'dev', 'lo'), new RegExp(`inet6 ${DVIPA}/128 `), t.name);
    assert.doesNotMatch(nsIp(ns[t.name], '-6', 'addr', 'show', 'dev', 'up0'), new RegExp(DVIPA), t.name);
  }
  const opened = await client.open(DVIPA, PORT, 20);
  assert.deepEqual([...new Set(names(opened))].sort(), ['t1', 't2'], 'over both targets');
  await fleet.until(
    'NEWCONN to confirm every IPv6 connection',
    () => {
      const crt = routerCrt6();
      return crt.length === 20 && crt.every((e) => e.origin === Number(CrtOrigin.Control));
    },
    5000,
  );
  assert.deepEqual(
    [...new Set(routerCrt6().map((e) => e.target))].sort(),
    TARGETS.map((t) => t.xcf),
  );
  const vcrt = JSON.parse(
    execFileSync(
      process.execPath,
      [CLI, 'netstat', 'vcrt', '--socket', fleet.socket('r1'), '--json', '--dvipa', DVIPA],
      {
        encoding: 'utf8',
      },
    ),
  ) as { total: number; entries: Array<{ dvipa: string; client: string; target: string }> };
  assert.equal(vcrt.total, 20);
  assert.ok(vcrt.entries.every((e) => e.dvipa === DVIPA && e.client === '2001:db8::1'));
  const vipadyn = execFileSync(process.execPath, [CLI, 'netstat', 'vipadyn', '--socket', fleet.socket('r1')], {
    encoding: 'utf8',
  });
  assert.match(vipadyn, new RegExp(`  ${DVIPA} +ACTIVE +VIPADEFINE +DIST `));
  // A filter matches however the IPv6 address is written; a bad one is a usage error.
  for (const report of ['vipadyn', 'vdpt', 'vcrt']) {
    const filtered = execFileSync(
      process.execPath,
      [CLI, 'netstat', report, '--socket', fleet.socket('r1'), '--json', '--dvipa', '2001:DB8:100:0::010'],
      { encoding: 'utf8' },
    );
    assert.match(filtered, new RegExp(`"${DVIPA}"`), `netstat ${report} --dvipa in another spelling`);
  }
  assert.throws(
    () =>
      execFileSync(
        process.execPath,
        [CLI, 'netstat', 'vipadyn', '--socket', fleet.socket('r1'), '--dvipa', '2001:db8::zz'],
        {
          stdio: 'pipe',
        },
      ),
    (e: { status?: number; stderr?: Buffer }) =>
      e.status === 2 && /--dvipa 2001:db8::zz: not an IPv4 or IPv6 address/.test(String(e.stderr)),
  );
  // t2's reports name connections of both DVIPAs: each is entered under the address its DESTIP names.
  const opened4 = await client.open(DVIPA4, PORT, 6);
  assert.deepEqual([...new Set(names(opened4))], ['t2']);
  await fleet.until(
    "NEWCONN to confirm the IPv4 connections under t2's IPv4 address",
    () => {
      const crt = routerCrt6(DVIPA4);
      return crt.length === 6 && crt.every((e) => e.origin === Number(CrtOrigin.Control) && e.target === T2_V4.xcf);
    },
    5000,
  );
  assert.equal(routerCrt6().length, 20, 'the IPv6 ones untouched');
  await client.close(opened.slice(0, 8).map((r) => r.id));
  await fleet.until('TERMCONN to remove the closed ones', () => routerCrt6().length === 12, 5000);
  assert.equal(routerCrt6(DVIPA4).length, 6);
  for (const s of servers) s.kill();
});
