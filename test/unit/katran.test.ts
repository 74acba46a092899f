/*
 * `dvipa bench fastpath --katran DIR` checks DIR before building from it: a missing or
 * incomplete checkout is a usage error naming what is missing, not a compiler's error.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { katranProgram, KatranSourceError } from '../../src/bench/katran-build.js';
import { EXIT } from '../../src/errors.js';

/** A directory holding `files` (relative paths, empty files). */
function tree(files: string[]): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvipa-katran-test-'));
  for (const f of files) {
    fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    fs.writeFileSync(path.join(dir, f), '');
  }
  return dir;
}

const INCLUDES = ['bpf.h', 'bpf_helpers.h', 'jhash.h'].map((h) => `katran/lib/linux_includes/${h}`);

const refused = (dir: string, what: RegExp) =>
  assert.throws(
    () => katranProgram(dir),
    (e: unknown) => e instanceof KatranSourceError && e.exit === EXIT.usage && what.test(e.message),
  );

test('a directory that does not exist is refused', () => refused('/nonexistent/katran', /not a directory/));

test('a directory without a Katran program is refused', () => {
  const dir = tree(INCLUDES);
  try {
    refused(dir, /no Katran balancer program/);
  } finally {
    fs.rmSync(dir, { recursive: true });
  }
});

test('a checkout without its linux_includes is refused, naming the missing header', () => {
  const dir = tree(['katran/lib/bpf/balancer.bpf.c', INCLUDES[0], INCLUDES[2]]);
  try {
    refused(dir, /linux_includes\/bpf_helpers\.h is missing/);
  } finally {
    fs.rmSync(dir, { recursive: true });
  }
});

test('a complete checkout gives its program: balancer.bpf.c, or balancer_kern.c in older ones', () => {
  const newer = tree(['katran/lib/bpf/balancer.bpf.c', 'katran/lib/bpf/balancer_kern.c', ...INCLUDES]);
  const older = tree(['katran/lib/bpf/balancer_kern.c', ...INCLUDES]);
  try {
    assert.equal(katranProgram(newer), 'katran/lib/bpf/balancer.bpf.c');
    assert.equal(katranProgram(older), 'katran/lib/bpf/balancer_kern.c');
  } finally {
    fs.rmSync(newer, { recursive: true });
    fs.rmSync(older, { recursive: true });
  }
});
