/*
 * `dvipa config check|show|import`: validate a configuration, print it normalised in any
 * form, or make one from a whole z/OS PROFILE.TCPIP.
 */
import * as fs from 'node:fs';
import type { CommandModule } from 'yargs';
import { loadConfig } from '../config/load.js';
import { importProfile } from '../config/profile.js';
import { zosIpv4 } from '../config/zos.js';
import { formatProfile } from '../config/format.js';
import { formatYamlConfig } from '../config/yaml.js';
import { ConfigError } from '../config/model.js';
import { CliError, EXIT } from './errors.js';

function reported<T>(file: string, read: () => T): T {
  try {
    return read();
  } catch (e) {
    if (e instanceof ConfigError) throw new CliError(`${e.problems.length} problem${e.problems.length === 1 ? '' : 's'} in ${file}:\n${e.message}`, EXIT.usage);
    throw e;
  }
}

function load(file: string) {
  return reported(file, () => loadConfig(file));
}

const check: CommandModule<object, { file: string }> = {
  command: 'check <file>',
  describe: 'exit 0 if the configuration is valid, else print every problem with file:line:column',
  builder: (y) => y.positional('file', { type: 'string', demandOption: true, describe: 'VIPADynamic profile, or YAML (.yaml/.yml/.json)' }) as never,
  handler: (a) => {
    const cfg = load(a.file);
    const dvipas = cfg.nodes.reduce((n, x) => n + x.vipaDynamic.define.length, 0);
    process.stdout.write(`${a.file}: ok (${cfg.nodes.length} node${cfg.nodes.length === 1 ? '' : 's'}, ${dvipas} DVIPA${dvipas === 1 ? '' : 's'} defined)\n`);
  },
};

const show: CommandModule<object, { file: string; json?: boolean; yaml?: boolean }> = {
  command: 'show <file>',
  describe: 'print the normalised configuration: as the VIPADynamic language (default), --yaml, or --json (the model)',
  builder: (y) =>
    y
      .positional('file', { type: 'string', demandOption: true })
      .option('json', { type: 'boolean', describe: 'the normalised model as JSON' })
      .option('yaml', { type: 'boolean', describe: 'the YAML form' })
      .conflicts('json', 'yaml') as never,
  handler: (a) => {
    const cfg = load(a.file);
    process.stdout.write(a.json ? `${JSON.stringify(cfg, null, 2)}\n` : a.yaml ? formatYamlConfig(cfg) : formatProfile(cfg));
  },
};

const importCmd: CommandModule<object, { profile: string; node: string; xcf?: string; yaml?: boolean }> = {
  command: 'import <profile>',
  describe: 'a dvipa configuration for one node from a whole z/OS PROFILE.TCPIP: its VIPADYNAMIC block and the '
    + 'DYNAMICXCF address of IPCONFIG; what is not carried over is listed as comments',
  builder: (y) =>
    y
      .positional('profile', { type: 'string', demandOption: true, describe: 'the z/OS profile, as text' })
      .option('node', { type: 'string', demandOption: true, describe: 'the node\'s name (the z/OS stack it replaces)' })
      .option('xcf', { type: 'string', describe: 'the node\'s cluster address (default: IPCONFIG DYNAMICXCF)' })
      .option('yaml', { type: 'boolean', describe: 'write the YAML form' }) as never,
  handler: (a) => {
    // One token of the language: the configuration written must read back.
    if (!/^[^\s;#]+$/.test(a.node)) {
      throw new CliError(`--node ${JSON.stringify(a.node)}: a name without spaces, ';' or '#'`, EXIT.usage);
    }
    const xcf = a.xcf === undefined ? undefined : zosIpv4(a.xcf);
    if (a.xcf !== undefined && !xcf) throw new CliError(`--xcf ${a.xcf}: not an IPv4 address`, EXIT.usage);
    const text = reported(a.profile, () => {
      try {
        return fs.readFileSync(a.profile, 'utf8');
      } catch (e) {
        throw new ConfigError(a.profile, [{ line: 1, column: 1, message: (e as Error).message }]);
      }
    });
    const { config, notes } = reported(a.profile, () => importProfile(text, { node: a.node, xcf }, a.profile));
    const c = a.yaml ? '#' : ';';
    const header = [`Imported by dvipa config import from ${a.profile} for node ${a.node}.`, ...notes]
      .map((n) => `${c} ${n}\n`).join('');
    process.stdout.write(header + (a.yaml ? formatYamlConfig(config) : formatProfile(config)));
  },
};

export const configCommand: CommandModule = {
  command: 'config <command>',
  describe: 'the cluster configuration (VIPADynamic language or YAML); import a z/OS profile',
  builder: (y) => y.command(check).command(show).command(importCmd).demandCommand(1),
  handler: () => undefined,
};
