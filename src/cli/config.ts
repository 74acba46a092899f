/* `dvipa config check|show|identity`: validate a configuration, print it normalised in any form, make node keys. */
import type { CommandModule } from 'yargs';
import { loadConfig } from '../config/load.js';
import { formatProfile } from '../config/format.js';
import { formatYamlConfig } from '../config/yaml.js';
import { ConfigError } from '../config/model.js';
import { newIdentity } from '../cluster/handshake.js';
import { CliError, EXIT } from './errors.js';

function load(file: string) {
  try {
    return loadConfig(file);
  } catch (e) {
    if (e instanceof ConfigError) throw new CliError(`${e.problems.length} problem${e.problems.length === 1 ? '' : 's'} in ${file}:\n${e.message}`, EXIT.usage);
    throw e;
  }
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

const identity: CommandModule<object, { node: string; dir: string }> = {
  command: 'identity <node>',
  describe: "write a new Ed25519 key pair for a node into --dir (NODE.key, mode 0600, stays on that node; NODE.pub goes to every node)",
  builder: (y) =>
    y
      .positional('node', { type: 'string', demandOption: true })
      .option('dir', { type: 'string', demandOption: true, describe: 'the directory of CLUSTER IDENTITIES' }) as never,
  handler: (a) => {
    let files;
    try {
      files = newIdentity(a.dir, a.node);
    } catch (e) {
      throw new CliError(`${a.node}: ${(e as Error).message}`, EXIT.usage);
    }
    process.stdout.write(`${files.key}\n${files.pub}\n`);
  },
};

export const configCommand: CommandModule = {
  command: 'config <command>',
  describe: 'the cluster configuration (VIPADynamic language or YAML)',
  builder: (y) => y.command(check).command(show).command(identity).demandCommand(1),
  handler: () => undefined,
};
