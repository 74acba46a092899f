/*
 * The native addon (native/, built by cmake-js): the only module that loads it. The rest of
 * src/kernel wraps it so that every failure is a SyscallError naming what it acted on;
 * nothing outside src/kernel imports this file (test/unit/imports.test.ts checks).
 */
import { createRequire } from 'node:module';
import type * as Native from '../../native/index.js';
import { ADDON_FILE } from './paths.js';

export type { MapArg, MapRef, MapSpec, XfrmEventMessage } from '../../native/index.js';
export type Addon = typeof Native;

function load(): Addon {
  try {
    return createRequire(import.meta.url)(ADDON_FILE) as Addon;
  } catch (e) {
    throw new Error(`cannot load the native addon ${ADDON_FILE}: run \`npm install\` (or \`npm run build\`) first`, {
      cause: e,
    });
  }
}

export const native: Addon = load();
