/* The dvipa command tree (yargs): run by main.ts, rendered as the manual page by manpage.ts. */
import yargs, { type Argv, type CommandModule } from 'yargs';
import { CliError, EXIT } from './errors.js';

/** A command of its own argument type, as the command tree takes every one. */
function lazy<U>(load: () => Promise<CommandModule<object, U>>): () => Promise<CommandModule> {
  return load as unknown as () => Promise<CommandModule>;
}

/**
 * Each command's module, loaded only when it is needed: a command names its own and loads
 * nothing else. Together they load etcd's gRPC client, Prometheus, the lab and the benches
 * (about 0.5 s of CPU here), which `dvipa netstat` or `dvipa config check` never use, and
 * scripts and the tests start the CLI hundreds of times.
 */
const COMMANDS: Record<string, () => Promise<CommandModule>> = {
  agent: lazy(async () => (await import('./agent.js')).agentCommand),
  dvipa: lazy(async () => (await import('./dvipa.js')).dvipaCommand),
  netstat: lazy(async () => (await import('./netstat.js')).netstatCommand),
  lab: lazy(async () => (await import('./lab.js')).labCommand),
  config: lazy(async () => (await import('./config.js')).configCommand),
  fastpath: lazy(async () => (await import('./fastpath.js')).fastpathCommand),
  bench: lazy(async () => (await import('./bench.js')).benchCommand),
  demo: lazy(async () => (await import('./demo.js')).demoCommand),
};

const kebab = (name: string) => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/**
 * An option given twice reaches its command as a list of both values, which a command that
 * takes one value would misread (`--modes xdp --modes kernel` was a TypeError, exit 1): only
 * options declared as lists may be given more than once.
 */
function onlyListsRepeat(parser: Argv): (argv: Record<string, unknown>) => void {
  // yargs keeps what the running command declared, lists included, but does not type it.
  const declared = parser as unknown as { getOptions(): { array: string[] } };
  return (argv) => {
    const lists = new Set(declared.getOptions().array);
    for (const [name, value] of Object.entries(argv))
      if (Array.isArray(value) && name !== '_' && !lists.has(name) && !lists.has(kebab(name)))
        throw new CliError(`--${kebab(name)} was given more than once: give it once`, EXIT.usage);
  };
}

/**
 * `argv`'s first word, if it names a command, selects that command alone; anything else
 * (none, an unknown one, --help, --version) gets every command, so that help lists them all
 * and an unknown one is refused by name. `width`: the column help wraps at (a terminal's
 * width, at most 110, by default).
 */
export async function dvipaParser(argv: string[], width = Math.min(110, process.stdout.columns ?? 110)): Promise<Argv> {
  const first = argv.find((a) => !a.startsWith('-'));
  const names = first !== undefined && Object.hasOwn(COMMANDS, first) ? [first] : Object.keys(COMMANDS);
  const commands = await Promise.all(names.map((n) => COMMANDS[n]()));
  const parser = yargs(argv)
    .scriptName('dvipa')
    .usage('$0 <command> [options]\n\nSysplex Distributor style dynamic VIPAs for Linux edge routers.');
  for (const c of commands) parser.command(c);
  return (
    parser
      .demandCommand(1, 'name a command (see --help)')
      .strict()
      .help()
      .alias('h', 'help')
      .version()
      .wrap(width)
      .middleware(onlyListsRepeat(parser), true)
      // Throwing is what stops yargs: a fail handler that returns lets the command run anyway.
      .fail((msg, err) => {
        throw err ?? new CliError(`${msg}\nRun 'dvipa --help' for usage.`, EXIT.usage);
      })
  );
}
