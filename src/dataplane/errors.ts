/**
 * A failed BPF operation: which call, on which map, program or interface, and the errno.
 * The message reads like `bpf_map_update_elem(crt): E2BIG (Argument list too long)`.
 */
export class BpfError extends Error {
  constructor(
    readonly op: string,
    readonly target: string,
    readonly code: string,
    readonly errno: number,
    readonly explanation: string,
    readonly detail?: string,
    cause?: unknown,
  ) {
    super(`${op}(${target}): ${explanation}`, { cause });
    this.name = 'BpfError';
  }
}

interface AddonError extends Error { op: string; code: string; errno: number; detail?: string }

function isAddonError(e: unknown): e is AddonError {
  return e instanceof Error && typeof (e as Partial<AddonError>).errno === 'number' && typeof (e as Partial<AddonError>).op === 'string';
}

/** Runs an addon call; if it fails, the error names the map, program or interface it acted on. */
export function named<T>(target: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (!isAddonError(e)) throw e;
    const prefix = `${e.op}: `;
    const explanation = e.message.startsWith(prefix) ? e.message.slice(prefix.length) : e.message;
    throw new BpfError(e.op, target, e.code, e.errno, explanation, e.detail, e);
  }
}
