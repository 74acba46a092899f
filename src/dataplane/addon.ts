/* The native addon (native/, built by cmake-js) and the BPF objects built beside it. */
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type * as Native from '../../native/index.js';

/** The repository root (this file runs from dist/src/dataplane/). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** Where the build put the BPF objects. */
export const BPF_OBJECT_DIR = path.join(ROOT, 'build', 'bpf');

function load(): typeof Native {
  const file = path.join(ROOT, 'build', 'Release', 'dvipa.node');
  try {
    return createRequire(import.meta.url)(file) as typeof Native;
  } catch (e) {
    throw new Error(`cannot load the native addon ${file}: run \`npm install\` (or \`npm run build\`) first`, { cause: e });
  }
}

export const native: typeof Native = load();
