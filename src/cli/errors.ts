import { DvipaError, EXIT } from '../errors.js';

export { EXIT };

/** Bad arguments, a missing agent, a refused request: reported as one line with the exit code it calls for. */
export class CliError extends DvipaError {}

/** BPF, namespaces and bpffs all need root; say so up front instead of failing half-way. */
export function requireRoot(what: string): void {
  if (process.getuid?.() !== 0)
    throw new CliError(`${what} needs root (BPF programs, bpffs and network namespaces)`, EXIT.notPermitted);
}
