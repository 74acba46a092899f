/*
 * One pino logger for the whole process, on stderr so command output on stdout stays
 * parseable: JSON lines for journald and log shippers, made readable (pino-pretty, in the
 * same thread so nothing is lost on exit) when stderr is a terminal. DVIPA_LOG_LEVEL
 * overrides the level; commands set their own default. DVIPA_LOG_FORMAT=json|pretty forces one.
 */
import pino from 'pino';

const format = process.env.DVIPA_LOG_FORMAT ?? (process.stderr.isTTY ? 'pretty' : 'json');
// Loaded only for a terminal: 42 files every command, agent and test child would load for nothing.
const destination =
  format === 'pretty'
    ? (await import('pino-pretty')).default({
        destination: 2,
        sync: true,
        ignore: 'pid,hostname,name',
        translateTime: 'SYS:HH:MM:ss.l',
      })
    : pino.destination(2);

export const log = pino({ name: 'dvipa', level: process.env.DVIPA_LOG_LEVEL ?? 'info' }, destination);

/** Sets the level unless DVIPA_LOG_LEVEL chose one. */
export function defaultLogLevel(level: pino.Level): void {
  if (!process.env.DVIPA_LOG_LEVEL) log.level = level;
}
export type Logger = pino.Logger;
