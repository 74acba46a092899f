/*
 * IPv6 DVIPA ownership on the wire, in namespaces: the owner holds the address at once (no
 * duplicate address detection holding it tentative) and moves a neighbour's cache entry to
 * its own MAC with an unsolicited Neighbour Advertisement, sent at once and repeated; a
 * target holds the DVIPA on lo and never answers a Neighbour Solicitation for it.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Topology, nsIp } from '../../src/lab/netns.js';
import { hasAddress, hostAddress, interfaceMac } from '../../src/net/iproute.js';
import { inNetns } from '../../src/kernel/netns.js';
import { requireRoot, uniquePrefix } from '../helpers/env.js';
import { waitFor } from '../helpers/wait.js';
import { execFileSync } from 'node:child_process';

const DIST = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const DVIPA = '2001:db8:5::10';
const STALE_MAC = '02:00:00:00:00:99';

let topo: Topology;
let owner: string;
let neighbour: string;
let target: string;

before(() => {
  requireRoot();
  topo = new Topology(uniquePrefix('own6'));
  owner = topo.ns('own');
  neighbour = topo.ns('nbr');
  target = topo.ns('tgt');
  topo.bridge(neighbour, 'br0');
  topo.veth({ ns: owner, name: 'ext0' }, { ns: neighbour, name: 'po', master: 'br0' });
  topo.veth({ ns: target, name: 'int0' }, { ns: neighbour, name: 'pt', master: 'br0' });
  for (const [ns, dev, addr] of [
    [owner, 'ext0', '2001:db8:5::1/64'],
    [target, 'int0', '2001:db8:5::3/64'],
    [neighbour, 'br0', '2001:db8:5::2/64'],
  ])
    nsIp(ns, 'addr', 'add', addr, 'nodad', 'dev', dev);
});

after(() => topo?.teardown());

/** The neighbour's cache entry for the DVIPA: its MAC and state, or undefined. */
function entry(): { lladdr?: string; state: string[] } | undefined {
  const rows = JSON.parse(nsIp(neighbour, '-j', '-6', 'neigh', 'show', DVIPA, 'dev', 'br0')) as Array<{
    lladdr?: string;
    state: string[];
  }>;
  return rows[0];
}

test('the owner holds its IPv6 DVIPA at once and its Neighbour Advertisements move the neighbour, at once and again', async () => {
  const mac = inNetns(owner, () => interfaceMac('ext0'));
  // The neighbour still has the previous owner's MAC (what a takeover finds).
  nsIp(neighbour, 'neigh', 'replace', DVIPA, 'lladdr', STALE_MAC, 'dev', 'br0', 'nud', 'stale');
  // The agent's own AddressHolder, in a process inside the owner's namespace, so that its
  // repeats run there too; it stops after its last repeat.
  const script = [
    `const { AddressHolder } = await import(${JSON.stringify(path.join(DIST, 'src/cluster/address.js'))});`,
    `const { log } = await import(${JSON.stringify(path.join(DIST, 'src/log.js'))});`,
    `const h = new AddressHolder('ext0', log);`,
    `h.take(${JSON.stringify(DVIPA)});`,
    `setTimeout(() => { h.stop(); process.stdout.write('done\\n'); }, 1500);`,
  ].join('\n');
  const child = topo.spawn(owner, process.execPath, ['--input-type=module', '-e', script]);
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  await waitFor('the first advertisement to move the entry to the owner', () => entry()?.lladdr === mac, 2000, entry);
  // Not tentative: usable at once (nodad), as the takeover needs.
  const shown = nsIp(owner, '-6', 'addr', 'show', 'dev', 'ext0');
  assert.match(shown, new RegExp(`inet6 ${DVIPA}/128 scope global`));
  assert.doesNotMatch(shown.split('\n').find((l) => l.includes(DVIPA)) ?? '', /tentative|dadfailed/);
  assert.ok(inNetns(owner, () => hasAddress('ext0', DVIPA)));
  // Undo it on the neighbour: one of the repeats (200 ms, 1 s) must set it right again.
  nsIp(neighbour, 'neigh', 'replace', DVIPA, 'lladdr', STALE_MAC, 'dev', 'br0', 'nud', 'stale');
  await waitFor('a repeated advertisement to move the entry again', () => entry()?.lladdr === mac, 1500, entry);
  assert.equal(await exited, 0);
  // The owner answers Neighbour Solicitations for it: a fresh lookup resolves to it.
  nsIp(neighbour, 'neigh', 'flush', 'dev', 'br0');
  execFileSync('ip', ['netns', 'exec', neighbour, 'ping', '-6', '-c', '1', '-W', '2', DVIPA], { stdio: 'ignore' });
  assert.equal(entry()?.lladdr, mac);
  inNetns(owner, () => execFileSync('ip', ['addr', 'del', hostAddress(DVIPA)[0], 'dev', 'ext0']));
});

test('a target holds an IPv6 DVIPA on lo and answers no Neighbour Solicitation for it', () => {
  const dvipa = '2001:db8:5::20';
  nsIp(target, 'addr', 'replace', ...hostAddress(dvipa), 'dev', 'lo');
  assert.match(nsIp(target, '-6', 'addr', 'show', 'dev', 'lo'), new RegExp(`${dvipa}/128`));
  nsIp(neighbour, 'neigh', 'flush', 'dev', 'br0');
  // The neighbour asks for the DVIPA on the segment: nobody may answer (the owner would).
  const r = (() => {
    try {
      execFileSync('ip', ['netns', 'exec', neighbour, 'ping', '-6', '-c', '1', '-W', '1', dvipa], { stdio: 'ignore' });
      return 'answered';
    } catch {
      return 'silent';
    }
  })();
  assert.equal(r, 'silent');
  const e = JSON.parse(nsIp(neighbour, '-j', '-6', 'neigh', 'show', dvipa, 'dev', 'br0')) as Array<{
    lladdr?: string;
    state: string[];
  }>;
  assert.equal(e[0]?.lladdr, undefined, `no link-layer address learnt: ${JSON.stringify(e)}`);
  // The control: the target's own address on the segment is answered for.
  execFileSync('ip', ['netns', 'exec', neighbour, 'ping', '-6', '-c', '1', '-W', '2', '2001:db8:5::3'], {
    stdio: 'ignore',
  });
});
