export const EXIT = { ok: 0, failed: 1, usage: 2, noAgent: 3, notPermitted: 4 } as const;

/** An error the CLI reports as one line, with the exit code it calls for. */
export class CliError extends Error {
  constructor(message: string, readonly exitCode: number = EXIT.failed) {
    super(message);
    this.name = 'CliError';
  }
}

/** BPF, namespaces and bpffs all need root; say so up front instead of failing half-way. */
export function requireRoot(what: string): void {
  if (process.getuid?.() !== 0) throw new CliError(`${what} needs root (BPF programs, bpffs and network namespaces)`, EXIT.notPermitted);
}
