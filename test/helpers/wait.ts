/* Waiting on a condition, not on time: a loaded machine only makes it slower, never wrong. */
import { setTimeout as delay } from 'node:timers/promises';

/** Until `cond` holds (checked every 20 ms), or fails after `ms` saying what it waited for and what it saw. */
export async function waitFor(
  what: string,
  cond: () => boolean | Promise<boolean>,
  ms = 10000,
  seen: () => unknown = () => undefined,
): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end)
      throw new Error(`timed out after ${ms} ms waiting for ${what}; saw ${JSON.stringify(seen())}`);
    await delay(20);
  }
}
