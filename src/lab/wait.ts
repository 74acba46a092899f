/* Waiting in the lab: for a condition polled every 50 ms, with an error naming what did not happen. */
import { DvipaError } from '../errors.js';

export class LabError extends DvipaError {}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` until it holds; a LabError naming `what` (and `where` to look) after `ms`. */
export async function until(what: string, cond: () => Promise<boolean>, ms: number, where = ''): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new LabError(`timed out waiting for ${what}${where}`);
    await sleep(50);
  }
}
