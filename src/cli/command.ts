/*
 * A yargs command whose argument types come from its builder: the handler sees exactly the
 * options the builder declares (camel-cased), so a renamed or retyped option is a compile error.
 */
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';

export interface Command<U> {
  command: string;
  describe: string;
  builder: (y: Argv) => Argv<U>;
  handler: (a: ArgumentsCamelCase<U>) => void | Promise<void>;
}

export function command<U>(m: Command<U>): CommandModule<object, U> {
  return m;
}

/** The arguments a builder declares, for handlers written apart from their command. */
export type ArgsOf<B> = B extends (y: Argv) => Argv<infer U> ? ArgumentsCamelCase<U> : never;
