/*
 * Running a synchronous piece of work with this thread in another network namespace:
 * interface names, ifindexes, test runs' ingress devices and FIB lookups are per namespace;
 * BPF maps and pins are not.
 */
import { native } from './addon.js';
import { named } from './errors.js';

export function inNetnsAt<T>(path: string, fn: () => T): T {
  const prev = named(path, () => native.netnsEnter(path));
  try {
    return fn();
  } finally {
    native.netnsRestore(prev);
  }
}
