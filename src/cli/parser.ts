/* The dvipa command tree (yargs): run by main.ts, rendered as the manual page by manpage.ts. */
import yargs, { type Argv } from 'yargs';
import { fastpathCommand } from './fastpath.js';
import { benchCommand } from './bench.js';
import { demoCommand } from './demo.js';
import { configCommand } from './config.js';
import { agentCommand } from './agent.js';
import { dvipaCommand } from './dvipa.js';
import { netstatCommand } from './netstat.js';
import { labCommand } from './lab.js';
import { CliError, EXIT } from './errors.js';

/** `width`: the column help wraps at (a terminal's width, at most 110, by default). */
export function dvipaParser(argv: string[], width = Math.min(110, process.stdout.columns ?? 110)): Argv {
  return (
    yargs(argv)
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
      .wrap(width)
      // Throwing is what stops yargs: a fail handler that returns lets the command run anyway.
      .fail((msg, err) => {
        throw err ?? new CliError(`${msg}\nRun 'dvipa --help' for usage.`, EXIT.usage);
      })
  );
}
