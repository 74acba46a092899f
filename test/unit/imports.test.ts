/*
 * The layering of src/ (README "Layout"): every import runs from a folder to one below it
 * (or within the folder), and only src/kernel loads the native addon. Parsed from the
 * sources, so a new upward import fails here before it becomes a loop.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { ROOT } from '../../src/kernel/paths.js';

/** Lowest first. Files directly in src/ (errors.ts, log.ts) sit below all of these. */
export const LAYERS = [
  'net',
  'kernel',
  'tables',
  'config',
  'dataplane',
  'ipsec',
  'cluster',
  'lab',
  'bench',
  'cli',
] as const;

const SRC = path.join(ROOT, 'src');

function sources(dir: string): string[] {
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .flatMap((d) =>
      d.isDirectory() ? sources(path.join(dir, d.name)) : d.name.endsWith('.ts') ? [path.join(dir, d.name)] : [],
    );
}

/** Relative module specifiers of `import ... from`, `export ... from` and `import()`. */
function imports(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  const found = [...text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^;]*?\sfrom\s+'([^']+)'|import\(\s*'([^']+)'\s*\)/g)];
  return found.map((m) => m[1] ?? m[2]).filter((s) => s.startsWith('.'));
}

/** The layer of a file under src/: its folder's rank, -1 for files directly in src/. */
function rank(file: string): number {
  const rel = path.relative(SRC, file).split(path.sep);
  if (rel.length === 1) return -1;
  const r = LAYERS.indexOf(rel[0] as (typeof LAYERS)[number]);
  assert.ok(r >= 0, `src/${rel[0]}/ is not in LAYERS: give it a place in test/imports.test.ts and the README`);
  return r;
}

const ADDON = path.join(ROOT, 'native', 'index.js');
const KERNEL = path.join(SRC, 'kernel');
const ADDON_LOADER = path.join(KERNEL, 'addon.ts');

test('imports run downward only: net, kernel, tables, config, dataplane, ipsec, cluster, lab, bench, cli', () => {
  const upward: string[] = [];
  for (const file of sources(SRC)) {
    for (const spec of imports(file)) {
      const target = path.resolve(path.dirname(file), spec).replace(/\.js$/, '.ts');
      if (!target.startsWith(SRC + path.sep)) continue;
      if (rank(target) > rank(file)) upward.push(`${path.relative(ROOT, file)} imports ${spec}`);
    }
  }
  assert.deepEqual(upward, []);
});

test('only src/kernel loads the native addon', () => {
  const outside: string[] = [];
  for (const file of [...sources(SRC), ...sources(path.join(ROOT, 'test'))]) {
    for (const spec of imports(file)) {
      const target = path.resolve(path.dirname(file), spec);
      const isAddon = target === ADDON || target === ADDON_LOADER.replace(/\.ts$/, '.js');
      if (isAddon && !file.startsWith(KERNEL + path.sep)) outside.push(`${path.relative(ROOT, file)} imports ${spec}`);
    }
  }
  assert.deepEqual(outside, []);
  // The check itself can see an import of the addon: kernel/addon.ts has one.
  assert.ok(imports(ADDON_LOADER).some((s) => path.resolve(KERNEL, s) === ADDON));
});

test('the import parser sees what it must', () => {
  // A check that cannot fail is a defect: the parser finds imports in a known file.
  assert.ok(imports(path.join(SRC, 'cli', 'main.ts')).includes('./parser.js'));
  assert.ok(sources(SRC).length > 50);
});

test('the CLI starts without etcd3: loaded only when a command makes an etcd client', () => {
  // Half a second of every `dvipa` command (netstat, --help) went to loading etcd3 and gRPC.
  const probe = (code: string) =>
    execFileSync(process.execPath, ['--input-type=module', '-e', code], { cwd: ROOT, encoding: 'utf8' }).trim();
  const loaded = `const r = (await import('node:module')).createRequire(import.meta.url);
    console.log(Object.keys(r.cache).some((k) => k.includes('/node_modules/etcd3/')));`;
  assert.equal(probe(`await import('./dist/src/cli/parser.js'); ${loaded}`), 'false');
  // The probe can see it loaded: making a client loads it.
  const client = `const { etcdClient } = await import('./dist/src/cluster/coupling.js');
    etcdClient({ endpoints: ['127.0.0.1:1'] }).close();`;
  assert.equal(probe(`${client} ${loaded}`), 'true');
});
