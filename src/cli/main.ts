#!/usr/bin/env node
/*
 * The dvipa command line. Exit codes scripts can rely on:
 *   0 success, 1 the operation failed, 2 bad usage or bad input (arguments, files),
 *   3 no agent answers on the control socket, 4 not permitted (dvipa needs root for BPF,
 *   namespaces, bpffs and the agent's socket).
 */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { fastpathCommand } from './fastpath.js';
import { benchCommand } from './bench.js';
import { demoCommand } from './demo.js';
import { configCommand } from './config.js';
import { agentCommand } from './agent.js';
import { dvipaCommand } from './dvipa.js';
import { netstatCommand } from './netstat.js';
import { labCommand } from './lab.js';
import { CliError } from './errors.js';
import { EXIT, exitCodeOf } from '../errors.js';
import { defaultLogLevel } from '../log.js';

async function main(argv: string[]): Promise<number> {
  // One-shot commands report through their output; warnings and errors still reach stderr.
  defaultLogLevel('warn');
  const parser = yargs(argv)
    .scriptName('dvipa')
    .usage('$0 <command> [options]\n\nSysplex Distributor style dynamic VIPAs for Linux edge routers.')
    .command(agentCommand)
    .command(dvipaCommand)
    .command(netstatCommand)
    .command(labCommand)
    .command(configCommand)
    .command(fastpathCommand)
    .command(benchCommand)
    .command(demoCommand)
    .demandCommand(1, 'name a command (see --help)')
    .strict()
    .help()
    .alias('h', 'help')
    .version()
    .wrap(Math.min(110, process.stdout.columns ?? 110))
    // Throwing is what stops yargs: a fail handler that returns lets the command run anyway.
    .fail((msg, err) => {
      throw err ?? new CliError(`${msg}\nRun 'dvipa --help' for usage.`, EXIT.usage);
    });
  try {
    await parser.parseAsync();
  } catch (e) {
    // The one place errors become exit codes: each DvipaError carries its own (src/errors.ts).
    process.stderr.write(`dvipa: ${e instanceof Error ? e.message : String(e)}\n`);
    return exitCodeOf(e);
  }
  return process.exitCode === undefined ? EXIT.ok : Number(process.exitCode);
}

main(hideBin(process.argv)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    // main() reports its own errors; this is a bug in it, still reported and not ignored.
    process.stderr.write(`dvipa: ${String(e)}\n`);
    process.exitCode = 1;
  },
);
