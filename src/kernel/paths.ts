/* Where the build put the native addon and the BPF objects. */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (this file runs from dist/src/kernel/). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** Where the build put the BPF objects. */
export const BPF_OBJECT_DIR = path.join(ROOT, 'build', 'bpf');

export const ADDON_FILE = path.join(ROOT, 'build', 'Release', 'dvipa.node');
