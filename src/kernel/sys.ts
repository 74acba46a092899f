/*
 * The addon's functions, each taking first what it acts on (a map's or program's name, an
 * interface, a path) so that a failure reads `bpf_map_update_elem(crt): E2BIG (...)`: one
 * wrapper for all of them instead of one at every call site (cf. cilium/ebpf internal/sys).
 */
import { native, type Addon } from './addon.js';
import { about } from './errors.js';

type AddonFunction = {
  [K in keyof Addon]: K extends Uncapitalize<K> ? (Addon[K] extends (...a: never[]) => unknown ? K : never) : never;
}[keyof Addon];

export type Sys = { [K in AddonFunction]: (target: string, ...args: Parameters<Addon[K]>) => ReturnType<Addon[K]> };

const isFunctionName = (k: string) => k[0] === k[0].toLowerCase();

/** The addon's functions (not its classes: those are wrapped in object.ts and events.ts). */
export const sys = Object.fromEntries(
  Object.entries(native)
    .filter(([k, f]) => typeof f === 'function' && isFunctionName(k))
    .map(([k, f]) => [
      k,
      (target: string, ...args: unknown[]) => about(target, () => (f as (...a: unknown[]) => unknown)(...args)),
    ]),
) as Sys;
