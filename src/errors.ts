/*
 * dvipa's error family. Every error dvipa raises on purpose is a DvipaError and says how a
 * command that meets it should exit, so `dvipa` maps errors to exit codes in one place
 * (cli/main.ts) instead of each command converting the errors it knows about.
 */

/** Exit codes scripts can rely on. */
export const EXIT = { ok: 0, failed: 1, usage: 2, noAgent: 3, notPermitted: 4 } as const;

/** How a command that fails with this error exits: the operation failed, bad usage or input, no agent, not root. */
export type ExitKind = (typeof EXIT)[Exclude<keyof typeof EXIT, 'ok'>];

export class DvipaError extends Error {
  constructor(
    message: string,
    readonly exit: ExitKind = EXIT.failed,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The exit code for any thrown value: a DvipaError's own, EPERM/EACCES from Node as "not permitted", else "failed". */
export function exitCodeOf(e: unknown): ExitKind {
  if (e instanceof DvipaError) return e.exit;
  const code = (e as { code?: unknown } | null)?.code;
  return code === 'EPERM' || code === 'EACCES' ? EXIT.notPermitted : EXIT.failed;
}
