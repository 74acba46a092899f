#!/usr/bin/env node
/*
 * The dvipa command line. Exit codes scripts can rely on:
 *   0 success, 1 the operation failed, 2 bad usage or bad input (arguments, files),
 *   3 no agent answers on the control socket, 4 not permitted (dvipa needs root for BPF,
 *   namespaces, bpffs and the agent's socket).
 */
import { hideBin } from 'yargs/helpers';
import { dvipaParser } from './parser.js';
import { CliError, EXIT } from './errors.js';
import { defaultLogLevel } from '../log.js';
import { PcapError } from '../net/pcap.js';
import { ServiceFileError } from '../config/service-file.js';

async function main(argv: string[]): Promise<number> {
  // One-shot commands report through their output; warnings and errors still reach stderr.
  defaultLogLevel('warn');
  const parser = dvipaParser(argv);
  try {
    await parser.parseAsync();
  } catch (e) {
    if (e instanceof CliError) {
      process.stderr.write(`dvipa: ${e.message}\n`);
      return e.exitCode;
    }
    if (e instanceof PcapError || e instanceof ServiceFileError) {
      process.stderr.write(`dvipa: ${e.message}\n`);
      return EXIT.usage;
    }
    const err = e as NodeJS.ErrnoException & { code?: string };
    process.stderr.write(`dvipa: ${err.message ?? String(e)}\n`);
    return err.code === 'EPERM' || err.code === 'EACCES' ? EXIT.notPermitted : EXIT.failed;
  }
  return process.exitCode === undefined ? EXIT.ok : Number(process.exitCode);
}

main(hideBin(process.argv)).then((code) => {
  process.exitCode = code;
});
