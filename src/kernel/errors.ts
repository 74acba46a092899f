/*
 * What a failed kernel call says: the call (`op`), what it acted on (`target`: a map,
 * program, interface, namespace), the errno, and the kernel's own reason when it gave one
 * (netlink extended ack, libbpf's context). A failed object load is a VerifierError carrying
 * the tail of libbpf's log, the verifier's included.
 */
import { DvipaError, EXIT } from '../errors.js';

export class SyscallError extends DvipaError {
  constructor(
    readonly op: string,
    readonly target: string,
    /** The errno's name, e.g. "E2BIG". */
    readonly code: string,
    readonly errno: number,
    /** The errno explained: `E2BIG (Argument list too long)`. */
    readonly explanation: string,
    /** The kernel's or libbpf's own words, when there are any. */
    readonly reason?: string,
    cause?: unknown,
    message = `${op}(${target}): ${explanation}`,
  ) {
    super(message, code === 'EPERM' || code === 'EACCES' ? EXIT.notPermitted : EXIT.failed, { cause });
  }
}

/** The last lines of the log make the message; the whole tail libbpf kept is in `log`. */
const MESSAGE_LOG_LINES = 20;

export class VerifierError extends SyscallError {
  constructor(
    op: string,
    target: string,
    code: string,
    errno: number,
    explanation: string,
    readonly log: string,
    cause?: unknown,
  ) {
    const tail = log.trimEnd().split('\n').slice(-MESSAGE_LOG_LINES).join('\n');
    super(
      op,
      target,
      code,
      errno,
      explanation,
      log,
      cause,
      `${op}(${target}): ${explanation}${tail ? `\n${tail}` : ''}`,
    );
  }
}

/** What the addon throws: `op`, `errno`, `code`, message `${op}: ${code} (${strerror})`, optional `detail`. */
interface AddonError extends Error {
  op: string;
  code: string;
  errno: number;
  detail?: string;
}

function isAddonError(e: unknown): e is AddonError {
  return (
    e instanceof Error &&
    typeof (e as Partial<AddonError>).errno === 'number' &&
    typeof (e as Partial<AddonError>).op === 'string'
  );
}

/** An addon error as a SyscallError about `target`; anything else (TypeError for misuse) unchanged. */
export function kernelError(e: unknown, target: string): unknown {
  if (!isAddonError(e)) return e;
  const prefix = `${e.op}: `;
  const explanation = e.message.startsWith(prefix) ? e.message.slice(prefix.length) : e.message;
  if (e.op === 'bpf_object__load')
    return new VerifierError(e.op, target, e.code, e.errno, explanation, e.detail ?? '', e);
  return new SyscallError(e.op, target, e.code, e.errno, explanation, e.detail, e);
}

/** Runs a kernel call; a failure (a throw, or the rejection of a returned promise) becomes a SyscallError about `target`. */
export function about<T>(target: string, fn: () => T): T {
  let r: T;
  try {
    r = fn();
  } catch (e) {
    throw kernelError(e, target);
  }
  if (r instanceof Promise) {
    return r.catch((e: unknown) => {
      throw kernelError(e, target);
    }) as T;
  }
  return r;
}
