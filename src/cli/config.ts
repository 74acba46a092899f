/*
 * `dvipa config check|show|import|identity`: validate a configuration, print it normalised in
 * any form, make one from a whole z/OS PROFILE.TCPIP, or make a node's key pair.
 */
import * as fs from 'node:fs';
import type { CommandModule } from 'yargs';
import { loadConfig } from '../config/load.js';
import { importProfiles } from '../config/profile.js';
import { zosIpv4 } from '../config/zos.js';
import { formatProfile } from '../config/format.js';
import { formatYamlConfig } from '../config/yaml.js';
import { ConfigError, isEtcdUrl, undeclaredAddresses } from '../config/model.js';
import { command } from './command.js';
import { newIdentity } from '../cluster/handshake.js';
import { CliError, EXIT } from './errors.js';

function reported<T>(file: string, read: () => T): T {
  try {
    return read();
  } catch (e) {
    if (e instanceof ConfigError)
      throw new CliError(
        `${e.problems.length} problem${e.problems.length === 1 ? '' : 's'} in ${file}:\n${e.message}`,
        EXIT.usage,
      );
    throw e;
  }
}

function load(file: string) {
  return reported(file, () => loadConfig(file));
}

const check = command({
  command: 'check <file>',
  describe: 'exit 0 if the configuration is valid, else print every problem with file:line:column',
  builder: (y) =>
    y.positional('file', {
      type: 'string',
      demandOption: true,
      describe: 'VIPADynamic profile, or YAML (.yaml/.yml/.json)',
    }),
  handler: (a) => {
    const cfg = load(a.file);
    const dvipas = cfg.nodes.reduce((n, x) => n + x.vipaDynamic.define.length, 0);
    const fromEtcd = undeclaredAddresses(cfg);
    const members = fromEtcd.length
      ? `; ${fromEtcd.join(', ')}: from the members' etcd records (CLUSTER ETCD), not PEERs`
      : '';
    process.stdout.write(
      `${a.file}: ok (${cfg.nodes.length} node${cfg.nodes.length === 1 ? '' : 's'}, ${dvipas} DVIPA${dvipas === 1 ? '' : 's'} defined${members})\n`,
    );
  },
});

const show = command({
  command: 'show <file>',
  describe: 'print the normalised configuration: as the VIPADynamic language (default), --yaml, or --json (the model)',
  builder: (y) =>
    y
      .positional('file', { type: 'string', demandOption: true })
      .option('json', { type: 'boolean', describe: 'the normalised model as JSON' })
      .option('yaml', { type: 'boolean', describe: 'the YAML form' })
      .conflicts('json', 'yaml'),
  handler: (a) => {
    const cfg = load(a.file);
    process.stdout.write(
      a.json ? `${JSON.stringify(cfg, null, 2)}\n` : a.yaml ? formatYamlConfig(cfg) : formatProfile(cfg),
    );
  },
});

const identity = command({
  command: 'identity <node>',
  describe:
    'write a new Ed25519 key pair for a node into --dir (NODE.key, mode 0600, stays on that node; ' +
    'NODE.pub goes to every node)',
  builder: (y) =>
    y
      .positional('node', { type: 'string', demandOption: true })
      .option('dir', { type: 'string', demandOption: true, describe: 'the directory of CLUSTER IDENTITIES' }),
  handler: (a) => {
    let files;
    try {
      files = newIdentity(a.dir, a.node);
    } catch (e) {
      throw new CliError(`${a.node}: ${(e as Error).message}`, EXIT.usage);
    }
    process.stdout.write(`${files.key}\n${files.pub}\n`);
  },
});

const importCmd = command({
  command: 'import <profiles..>',
  describe:
    'a dvipa configuration from whole z/OS PROFILE.TCPIPs, one per node (--node in the same order): ' +
    'their VIPADYNAMIC blocks and IPCONFIG DYNAMICXCF addresses; what is not carried over is listed as comments',
  builder: (y) =>
    y
      .positional('profiles', { type: 'string', array: true, demandOption: true, describe: 'z/OS profiles, as text' })
      .option('node', { type: 'string', array: true, demandOption: true, describe: "each node's name" })
      .option('xcf', { type: 'string', array: true, describe: "each node's cluster address (default: DYNAMICXCF)" })
      .option('yaml', { type: 'boolean', describe: 'write the YAML form' })
      .option('etcd', {
        type: 'string',
        array: true,
        describe: 'CLUSTER ETCD endpoints: nodes then find each other through etcd, and no PEER is written',
      }),
  handler: (a) => {
    if (a.node.length !== a.profiles.length) {
      const counts = `${a.profiles.length} profile(s) and ${a.node.length} --node`;
      throw new CliError(`${counts}: give one --node per profile, in order`, EXIT.usage);
    }
    if (a.xcf && a.xcf.length !== a.profiles.length) {
      throw new CliError('give one --xcf per profile, in order, or none', EXIT.usage);
    }
    // One token of the language each: the configuration written must read back.
    const bad = a.node.find((n) => !/^[^\s;#]+$/.test(n));
    if (bad !== undefined) {
      throw new CliError(`--node ${JSON.stringify(bad)}: a name without spaces, ';' or '#'`, EXIT.usage);
    }
    const profiles = a.profiles.map((file, i) => {
      const xcf = a.xcf && zosIpv4(a.xcf[i]);
      if (a.xcf && !xcf) throw new CliError(`--xcf ${a.xcf[i]}: not an IPv4 address`, EXIT.usage);
      const text = reported(file, () => {
        try {
          return fs.readFileSync(file, 'utf8');
        } catch (e) {
          throw new ConfigError(file, [{ line: 1, column: 1, message: (e as Error).message }]);
        }
      });
      return { text, file, node: a.node[i], ...(xcf ? { xcf } : {}) };
    });
    const badUrl = a.etcd?.find((u) => !isEtcdUrl(u));
    if (badUrl !== undefined)
      throw new CliError(`--etcd ${badUrl}: expected http://host:port or https://host:port`, EXIT.usage);
    const etcd = a.etcd?.length ? { etcd: a.etcd } : {};
    const { config, notes } = reported(a.profiles.join(', '), () => importProfiles(profiles, etcd));
    const c = a.yaml ? '#' : ';';
    const from = profiles.map((p) => `${p.file} for node ${p.node}`).join(', ');
    const header = [`Imported by dvipa config import from ${from}.`, ...notes].map((n) => `${c} ${n}\n`).join('');
    process.stdout.write(header + (a.yaml ? formatYamlConfig(config) : formatProfile(config)));
  },
});

export const configCommand: CommandModule = {
  command: 'config <command>',
  describe: 'the cluster configuration (VIPADynamic language or YAML); import a z/OS profile; node keys',
  builder: (y) => y.command(check).command(show).command(importCmd).command(identity).demandCommand(1),
  handler: () => undefined,
};
