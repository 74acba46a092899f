/*
 * Katran's balancer built from a checkout the user supplies (`dvipa bench fastpath --katran
 * DIR`), at run time and into a temporary directory: bpf/bench_katran.bpf.c includes DIR's
 * program unmodified and puts the harness of bpf/bench_harness.h around it.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DvipaError, EXIT } from '../errors.js';
import { ROOT } from '../kernel/paths.js';

/** Katran's program, by the name it has had: balancer.bpf.c since 2023, balancer_kern.c before. */
const KATRAN_PROGRAMS = ['katran/lib/bpf/balancer.bpf.c', 'katran/lib/bpf/balancer_kern.c'] as const;
/** Katran's copies of the uapi and libbpf headers, which its build puts on the include path. */
const KATRAN_INCLUDES = 'katran/lib/linux_includes';

/**
 * What Katran's own build passes (katran/lib/Makefile-bpf, as build_bpf_modules_opensource.sh
 * runs it without -d): DEBUG and __KERNEL__, three warnings off, -O2 -g to LLVM IR for the
 * host, then llc -march=bpf. MAX_CONN_RATE is the one define added: Katran's new-flow guard
 * skips the LRU insert beyond that many new flows per second per CPU (125000 by default), and
 * a bench run makes hundreds of thousands in a fraction of a second; raised to the largest
 * value that is still a 32-bit immediate, the guard's code is the same and never engages by
 * itself (katran_syn_guarded engages it through its counter, KatranBench.guard).
 */
const KATRAN_CFLAGS = [
  '-DDEBUG',
  '-D__KERNEL__',
  '-Wno-unused-value',
  '-Wno-pointer-sign',
  '-Wno-compare-distinct-pointer-types',
  '-O2',
  '-g',
];
const KATRAN_BENCH_MAX_CONN_RATE = 0x7fffffff;

export class KatranSourceError extends DvipaError {
  constructor(message: string) {
    super(message, EXIT.usage);
  }
}

/** Katran's program file in `dir` (relative), after checking that `dir` holds what the build needs. */
export function katranProgram(dir: string): string {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory())
    throw new KatranSourceError(
      `--katran ${dir}: not a directory (give a checkout of github.com/facebookincubator/katran)`,
    );
  const program = KATRAN_PROGRAMS.find((p) => fs.existsSync(path.join(dir, p)));
  if (!program)
    throw new KatranSourceError(
      `--katran ${dir}: no Katran balancer program (${KATRAN_PROGRAMS.join(' or ')}); is it a Katran checkout?`,
    );
  for (const h of ['bpf.h', 'bpf_helpers.h', 'jhash.h']) {
    if (!fs.existsSync(path.join(dir, KATRAN_INCLUDES, h)))
      throw new KatranSourceError(`--katran ${dir}: ${KATRAN_INCLUDES}/${h} is missing: an incomplete Katran checkout`);
  }
  return program;
}

export interface KatranBuild {
  /** Where bench_katran.bpf.o is (for loadObject's `dir`). */
  dir: string;
  program: string;
  remove(): void;
}

/** Compiles bpf/bench_katran.bpf.c around `dir`'s balancer into a temporary directory. */
export function buildKatranBench(dir: string): KatranBuild {
  const program = katranProgram(dir);
  const harness = path.join(ROOT, 'bpf', 'bench_katran.bpf.c');
  if (!fs.existsSync(harness))
    throw new DvipaError(
      `--katran needs dvipa's source tree: ${harness} is not there (packages ship no sources)`,
      EXIT.usage,
    );
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'dvipa-katran-'));
  const remove = () => fs.rmSync(out, { recursive: true, force: true });
  const ir = path.join(out, 'bench_katran.bc');
  const run = (tool: string, args: string[]) => {
    try {
      execFileSync(tool, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (e) {
      const err = e as { code?: string; stderr?: Buffer };
      if (err.code === 'ENOENT') throw new DvipaError(`${tool} not found: scripts/setup installs clang and llvm`);
      throw new DvipaError(
        `building Katran's balancer from ${dir} failed:\n${err.stderr?.toString().trim() ?? ''}`,
        EXIT.failed,
        {
          cause: e,
        },
      );
    }
  };
  try {
    run('clang', [
      ...KATRAN_CFLAGS,
      `-DMAX_CONN_RATE=${KATRAN_BENCH_MAX_CONN_RATE}`,
      `-DKATRAN_PROGRAM="${program}"`,
      '-I',
      path.join(dir, KATRAN_INCLUDES),
      '-I',
      dir,
      '-emit-llvm',
      '-c',
      harness,
      '-o',
      ir,
    ]);
    run('llc', ['-march=bpf', '-filetype=obj', '-o', path.join(out, 'bench_katran.bpf.o'), ir]);
  } catch (e) {
    remove();
    throw e;
  }
  return { dir: out, program, remove };
}
