/*
 * An attacker with a stolen etcd credential (test/kernel/members.test.ts), run where etcd is
 * reachable: `node forge-members.js URL IDENTITIES_DIR JUNK`. Holding a lease of its own, it
 * writes forged member records, each of one kind (printed as a JSON line `{"forged": [...]}`),
 * and JUNK well-formed records of names nobody has a key for; then `{"ready": n}`, and keeps
 * the lease until its stdin closes, when it revokes it (and every record with it) and exits.
 */
import { Etcd3 } from 'etcd3';
import { loadIdentities } from '../../src/cluster/handshake.js';
import { MemberSigner, type MemberRecord } from '../../src/cluster/members.js';

const [url, dir, junk] = process.argv.slice(2);
const PREFIX = '/dvipa/members/';

async function main(): Promise<void> {
  const client = new Etcd3({ hosts: url });
  const lease = client.lease(60);
  const id = await lease.grant();
  const asNode = (node: string) => new MemberSigner(Buffer.alloc(32), loadIdentities(dir, node, []));
  const t2 = asNode('t2');
  const evil = asNode('evil');
  const base = (node: string, xcf: string): Omit<MemberRecord, 'v' | 'key' | 'sig'> => ({
    node,
    xcf: [xcf],
    port: 7400,
    version: 2,
    dvipas: ['192.0.2.10'],
    lease: id,
    at: Date.now() + 60_000,
  });
  const r1Key = new MemberSigner(Buffer.alloc(32), loadIdentities(dir, 'r1', [])).keyId;
  const forged: Array<[string, string, string]> = [
    // r1's name at the attacker's address, signed with t2's key: t2's key id, not r1's.
    ['r1', 'wrong_key', JSON.stringify(t2.record(base('r1', '198.18.20.66')))],
    // ... naming r1's key id, which t2 cannot sign for.
    ['r1', 'bad_signature', JSON.stringify({ ...t2.record(base('r1', '198.18.20.66')), key: r1Key })],
    // A real identity (a compromised node's key) claiming t2's address: a redirect.
    ['evil', 'address_taken', JSON.stringify(evil.record(base('evil', '198.18.20.12')))],
    // A name nobody holds a key for.
    ['ghost', 'unknown_identity', JSON.stringify(t2.record(base('ghost', '198.18.20.77')))],
    ['t1', 'malformed', 'not a record'],
    // r2's own record as it is, bound to the attacker's lease instead of r2's: it would outlive r2.
    ['r2', 'lease_mismatch', (await client.get(PREFIX + 'r2').string()) ?? ''],
  ];
  for (const [node, , value] of forged)
    await lease
      .put(PREFIX + node)
      .value(value)
      .exec();
  process.stdout.write(`${JSON.stringify({ forged: forged.map(([node, reason]) => ({ node, reason })) })}\n`);
  // In transactions of 100 puts (etcd takes 128 at most), one after the other: the point is
  // what the agents make of the records, not how hard etcd itself can be hit.
  const n = Number(junk);
  for (let i = 0; i < n; i += 100) {
    const puts = Array.from({ length: Math.min(100, n - i) }, (_, j) => {
      const node = `flood${i + j}`;
      const r = t2.record(base(node, `10.${(i + j) >> 16}.${((i + j) >> 8) & 255}.${(i + j) & 255}`));
      return client
        .put(PREFIX + node)
        .value(JSON.stringify(r))
        .lease(id);
    });
    await client
      .if(PREFIX + 'flood', 'Create', '==', 0)
      .then(...puts)
      .commit();
  }
  process.stdout.write(`${JSON.stringify({ ready: forged.length + n })}\n`);
  process.stdin.resume();
  await new Promise((r) => process.stdin.once('end', r));
  await lease.revoke();
  client.close();
}

main().catch((e: Error) => {
  process.stderr.write(`${e.stack ?? e.message}\n`);
  process.exit(1);
});
