/* `dvipa config check|show`: validate a configuration, print it normalised in any form. */
import type { CommandModule } from 'yargs';
import { loadConfig } from '../config/load.js';
import { formatProfile } from '../config/format.js';
import { formatYamlConfig } from '../config/yaml.js';
import { ConfigError } from '../config/model.js';
import { command } from './command.js';
import { CliError, EXIT } from './errors.js';

function load(file: string) {
  try {
    return loadConfig(file);
  } catch (e) {
    if (e instanceof ConfigError) throw new CliError(`${e.problems.length} problem${e.problems.length === 1 ? '' : 's'} in ${file}:\n${e.message}`, EXIT.usage);
    throw e;
  }
}

const check = command({
  command: 'check <file>',
  describe: 'exit 0 if the configuration is valid, else print every problem with file:line:column',
  builder: (y) => y.positional('file', { type: 'string', demandOption: true, describe: 'VIPADynamic profile, or YAML (.yaml/.yml/.json)' }),
  handler: (a) => {
    const cfg = load(a.file);
    const dvipas = cfg.nodes.reduce((n, x) => n + x.vipaDynamic.define.length, 0);
    process.stdout.write(`${a.file}: ok (${cfg.nodes.length} node${cfg.nodes.length === 1 ? '' : 's'}, ${dvipas} DVIPA${dvipas === 1 ? '' : 's'} defined)\n`);
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
    process.stdout.write(a.json ? `${JSON.stringify(cfg, null, 2)}\n` : a.yaml ? formatYamlConfig(cfg) : formatProfile(cfg));
  },
});

export const configCommand: CommandModule = {
  command: 'config <command>',
  describe: 'the cluster configuration (VIPADynamic language or YAML)',
  builder: (y) => y.command(check).command(show).demandCommand(1),
  handler: () => undefined,
};
