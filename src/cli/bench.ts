/* `dvipa bench ...`: benchmarks that print figures (a table, or JSON). */
import type { CommandModule } from 'yargs';
import { benchFastpath, formatFastpathBench } from '../bench/fastpath.js';
import { benchTables, formatTablesBench } from '../bench/tables.js';
import { CliError, EXIT, requireRoot } from './errors.js';

const fastpath: CommandModule<object, { json: boolean; rounds: number; repeat: number }> = {
  command: 'fastpath',
  describe: "in-kernel ns/packet of the distributor's paths, and their ratio to a trivial XDP_TX program",
  builder: (y) =>
    y
      .option('json', { type: 'boolean', default: false })
      .option('rounds', { type: 'number', default: 5, describe: 'rounds per path (the median is reported)' })
      .option('repeat', { type: 'number', default: 1_000_000, describe: 'packets per round (BPF_PROG_TEST_RUN repeat)' }) as never,
  handler: async (a) => {
    requireRoot('dvipa bench fastpath');
    for (const [k, v, max] of [['rounds', a.rounds, 1000], ['repeat', a.repeat, 100_000_000]] as const) {
      if (!Number.isInteger(v) || v < 1 || v > max) throw new CliError(`--${k} must be an integer from 1 to ${max}`, EXIT.usage);
    }
    const r = await benchFastpath({ rounds: a.rounds, repeat: a.repeat });
    process.stdout.write(a.json ? `${JSON.stringify(r, null, 2)}\n` : `${formatFastpathBench(r)}\n`);
  },
};

const tables: CommandModule<object, { json: boolean; crtEntries: number }> = {
  command: 'tables',
  describe: 'Maglev build time, balance and disruption; CRT batch insert and dump',
  builder: (y) =>
    y
      .option('json', { type: 'boolean', default: false })
      .option('crt-entries', { type: 'number', default: 1_000_000, describe: 'CRT entries to insert and dump' }) as never,
  handler: (a) => {
    requireRoot('dvipa bench tables');
    if (!Number.isInteger(a.crtEntries) || a.crtEntries < 1 || a.crtEntries > 50_000_000) throw new CliError('--crt-entries must be an integer from 1 to 50000000', EXIT.usage);
    const r = benchTables({ crtEntries: a.crtEntries });
    process.stdout.write(a.json ? `${JSON.stringify(r, null, 2)}\n` : `${formatTablesBench(r)}\n`);
  },
};

export const benchCommand: CommandModule = {
  command: 'bench <generator>',
  describe: 'benchmarks',
  builder: (y) => y.command(fastpath).command(tables).demandCommand(1),
  handler: () => undefined,
};
