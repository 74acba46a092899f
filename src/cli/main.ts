#!/usr/bin/env node
/*
 * The dvipa command line. Exit codes scripts can rely on:
 *   0 success, 1 the operation failed, 2 bad usage or bad input (arguments, files),
 *   3 no agent answers on the control socket, 4 not permitted (dvipa needs root for BPF,
 *   namespaces, bpffs and the agent's socket).
 */
import { hideBin } from 'yargs/helpers';
import { dvipaParser } from './parser.js';
import { EXIT, exitCodeOf } from '../errors.js';
import { defaultLogLevel } from '../log.js';

async function main(argv: string[]): Promise<number> {
  // One-shot commands report through their output; warnings and errors still reach stderr.
  defaultLogLevel('warn');
  try {
    await (await dvipaParser(argv)).parseAsync();
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
