/*
 * `dvipa dvipa show|move|quiesce|delete|reactivate`: the operator's hand on DVIPA ownership,
 * through the coupling facility. A move or quiesce is a request in etcd; the named node's
 * agent takes the DVIPA when its readiness gate is open (WHENIDLE: once no connection uses
 * it), with the existing connections still routed to their targets. A delete (z/OS's
 * VIPADELETE) has the owner give the DVIPA up and nobody take it; its connections end. The
 * command waits to see it done, and says so if it is not.
 */
import type { Argv } from 'yargs';
import { EtcdCoupling } from '../cluster/coupling.js';
import { parseIpv4 } from '../net/addr.js';
import { log } from '../log.js';
import { command } from './command.js';
import { CliError, EXIT } from './errors.js';
import { etcdOptions, withEtcd, type EtcdArgs } from './etcd-args.js';

function dvipaArg(a: { dvipa?: string }): string {
  try {
    parseIpv4(a.dvipa!);
  } catch {
    throw new CliError(`${a.dvipa}: not an IPv4 address`, EXIT.usage);
  }
  return a.dvipa!;
}

async function withStore<T>(a: EtcdArgs, fn: (cf: EtcdCoupling) => Promise<T>): Promise<T> {
  const opts = etcdOptions(a);
  if (!opts) throw new CliError('--etcd is needed: DVIPA ownership lives in the coupling facility', EXIT.usage);
  const cf = new EtcdCoupling({ ...opts, node: 'dvipa-cli', xcf: '0.0.0.0', ttlSec: 1, member: false, logger: log });
  try {
    await cf.start();
  } catch (e) {
    throw new CliError(`etcd ${opts.endpoints.join(',')}: ${(e as Error).message}`);
  }
  try {
    return await fn(cf);
  } finally {
    await cf.stop(0);
  }
}

/** Waits until `done`, or says what is still missing. */
async function waitFor(seconds: number, done: () => boolean, missing: () => string): Promise<void> {
  const end = Date.now() + seconds * 1000;
  while (!done()) {
    if (Date.now() > end)
      throw new CliError(
        `requested, not done after ${seconds} s: ${missing()} (the request stays; 'dvipa dvipa reactivate' withdraws it)`,
      );
    await new Promise((r) => setTimeout(r, 100));
  }
}

function ownerText(cf: EtcdCoupling, d: string): string {
  const v = cf.view(d);
  return v.owner ? `${v.owner.node} (epoch ${v.owner.epoch})` : 'nobody';
}

const show = async (a: EtcdArgs & { json?: boolean }) =>
  withStore(a, async (cf) => {
    const rows = cf.dvipas().map((d) => {
      const v = cf.view(d);
      return {
        dvipa: d,
        owner: v.owner?.node ?? null,
        rank: v.owner?.rank ?? null,
        epoch: v.owner?.epoch ?? v.lastEpoch,
        move: v.move ?? null,
        quiesced: [...v.quiesced],
        deleted: v.deleted === true,
      };
    });
    const members = [...cf.members()].sort();
    if (a.json) {
      process.stdout.write(`${JSON.stringify({ members, dvipas: rows }, null, 2)}\n`);
      return;
    }
    process.stdout.write(`members: ${members.join(' ') || '(none)'}\n`);
    process.stdout.write(`${'DVIPA'.padEnd(18)}${'OWNER'.padEnd(12)}${'RANK'.padEnd(6)}${'EPOCH'.padEnd(7)}REQUESTS\n`);
    for (const r of rows) {
      const req = [
        r.deleted ? 'deleted' : '',
        r.move ? `move to ${r.move.to}${r.move.whenIdle ? ' when idle' : ''}` : '',
        r.quiesced.length ? `quiesced on ${r.quiesced.join(',')}` : '',
      ]
        .filter(Boolean)
        .join('; ');
      process.stdout.write(
        `${r.dvipa.padEnd(18)}${String(r.owner ?? '-').padEnd(12)}${String(r.rank ?? '-').padEnd(6)}${String(r.epoch).padEnd(7)}${req}\n`,
      );
    }
  });

const move = async (a: EtcdArgs & { dvipa?: string; to: string; whenIdle?: boolean; wait: number }) => {
  const d = dvipaArg(a);
  await withStore(a, async (cf) => {
    if (!cf.members().has(a.to))
      throw new CliError(
        `${a.to} is not a live member of the cluster (members: ${[...cf.members()].sort().join(' ') || 'none'})`,
      );
    await cf.setMove(d, { to: a.to, whenIdle: a.whenIdle ?? false });
    await waitFor(
      a.wait,
      () => cf.view(d).owner?.node === a.to,
      () =>
        `${d} is still routed by ${ownerText(cf, d)}${a.whenIdle ? '; WHENIDLE waits for its last connection to end' : ''}`,
    );
    process.stdout.write(`${d} moved to ${ownerText(cf, d)}\n`);
  });
};

const quiesce = async (a: EtcdArgs & { dvipa?: string; node?: string; wait: number }) => {
  const d = dvipaArg(a);
  await withStore(a, async (cf) => {
    const node = a.node ?? cf.view(d).owner?.node;
    if (!node) throw new CliError(`${d} has no owner now: name the node to quiesce it on (--node)`);
    await cf.setQuiesced(d, node, true);
    await waitFor(
      a.wait,
      () => cf.view(d).owner?.node !== node,
      () => `${d} is still routed by ${node}: no other candidate is live and ready`,
    );
    process.stdout.write(`${d} quiesced on ${node}; now routed by ${ownerText(cf, d)}\n`);
  });
};

const remove = async (a: EtcdArgs & { dvipa?: string; wait: number }) => {
  const d = dvipaArg(a);
  await withStore(a, async (cf) => {
    await cf.setDeleted(d, true);
    await waitFor(
      a.wait,
      () => cf.view(d).owner === undefined,
      () => `${d} is still routed by ${ownerText(cf, d)}`,
    );
    process.stdout.write(`${d} deleted: no node routes it ('dvipa dvipa reactivate ${d}' withdraws the delete)\n`);
  });
};

const reactivate = async (a: EtcdArgs & { dvipa?: string; node?: string }) => {
  const d = dvipaArg(a);
  await withStore(a, async (cf) => {
    const v = cf.view(d);
    const nodes = a.node ? [a.node] : [...v.quiesced];
    // The move first: with the quiesce lifted first, a pending move would fire.
    if (v.move) await cf.setMove(d, undefined);
    for (const n of nodes) await cf.setQuiesced(d, n, false);
    if (v.deleted && !a.node) await cf.setDeleted(d, false);
    const undone = [
      nodes.length ? `quiesce lifted on ${nodes.join(', ')}` : 'nothing quiesced',
      v.move ? `move to ${v.move.to} withdrawn` : '',
      v.deleted && !a.node ? 'delete withdrawn' : '',
    ]
      .filter(Boolean)
      .join('; ');
    process.stdout.write(`${d}: ${undone}; routed by ${ownerText(cf, d)} (placement by rank again)\n`);
  });
};

const wait = <T>(y: Argv<T>) =>
  y.option('wait', { type: 'number', default: 15, describe: 'seconds to wait for the change to be done' });

export const dvipaCommand = command({
  command: 'dvipa <action>',
  describe: 'DVIPA ownership through the coupling facility: show, move, quiesce, delete, reactivate',
  builder: (y) =>
    withEtcd(y)
      .command(
        'show',
        'owners, epochs, requests and live members',
        (b) => b.option('json', { type: 'boolean', describe: 'as JSON' }),
        (a) => show(a),
      )
      .command(
        'move <dvipa>',
        'move a DVIPA to another candidate node (MOVEable IMMEDiate; --when-idle: WHENIDLE)',
        (b) =>
          wait(b)
            .positional('dvipa', { type: 'string' })
            .option('to', { type: 'string', demandOption: true, describe: 'the node to route it' })
            .option('when-idle', { type: 'boolean', describe: 'move once no connection uses the DVIPA' }),
        (a) => move(a),
      )
      .command(
        'quiesce <dvipa>',
        'have a node give the DVIPA up to the best other candidate, and not take it back',
        (b) =>
          wait(b)
            .positional('dvipa', { type: 'string' })
            .option('node', { type: 'string', describe: 'default: the owner now' }),
        (a) => quiesce(a),
      )
      .command(
        'delete <dvipa>',
        'VIPADELETE: the owner gives the DVIPA up, no node takes it (connections end)',
        (b) => wait(b).positional('dvipa', { type: 'string' }),
        (a) => remove(a),
      )
      .command(
        'reactivate <dvipa>',
        'lift quiesce (of --node, or all), withdraw a move and a delete',
        (b) => b.positional('dvipa', { type: 'string' }).option('node', { type: 'string' }),
        (a) => reactivate(a),
      )
      .demandCommand(1, 'name an action: show, move, quiesce, delete or reactivate'),
  handler: () => undefined,
});
