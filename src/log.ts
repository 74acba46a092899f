/*
 * One pino logger for the whole process, on stderr so command output on stdout stays
 * parseable. DVIPA_LOG_LEVEL overrides the level; commands set their own default.
 */
import pino from 'pino';

export const log = pino({ name: 'dvipa', level: process.env.DVIPA_LOG_LEVEL ?? 'info' }, pino.destination(2));

/** Sets the level unless DVIPA_LOG_LEVEL chose one. */
export function defaultLogLevel(level: pino.Level): void {
  if (!process.env.DVIPA_LOG_LEVEL) log.level = level;
}
export type Logger = pino.Logger;
