/* Network namespace entry for the calling thread: interface names, ifindexes, FIB lookups and XFRM are per namespace. */
import { sys } from './sys.js';

export function netnsPath(ns: string): string {
  return `/run/netns/${ns}`;
}

/** Moves this thread into `ns`; the returned function moves it back. */
export function enterNetns(ns: string): () => void {
  const prev = sys.netnsEnter(ns, netnsPath(ns));
  return () => sys.netnsRestore(ns, prev);
}

/**
 * Runs `fn` with this thread in `ns`; BPF maps and pins are not per namespace, so FastPath
 * calls work from anywhere.
 */
export function inNetns<T>(ns: string, fn: () => T): T {
  return inNetnsAt(ns, netnsPath(ns), fn);
}

/** Runs `fn` with this thread in the namespace at `path` (a bind mount or /proc/PID/ns/net), named `name`. */
export function inNetnsAt<T>(name: string, path: string, fn: () => T): T {
  const prev = sys.netnsEnter(name, path);
  try {
    return fn();
  } finally {
    sys.netnsRestore(name, prev);
  }
}
