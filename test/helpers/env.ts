/*
 * What every kernel-facing test needs: root (CI runs as root, so a test never skips for
 * lack of it; it fails, saying why), scratch pin roots that are always removed, and
 * unique names so test files can run side by side.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FastPath } from '../../src/dataplane/fastpath.js';
import { BPF_OBJECT_DIR } from '../../src/kernel/paths.js';
import { sys } from '../../src/kernel/sys.js';

export function requireRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new Error('this test needs root (BPF, bpffs, network namespaces); run it as root, as CI does');
  }
}

/** scripts/kernel-lab sets this: the kernel there has ESP, so a test that cannot install an ESP SA fails there. */
export const IN_KERNEL_LAB = process.env.DVIPA_KERNEL_LAB === '1';
/**
 * Agents' options where the kernel lab emulates the CPU (TCG, 10-50 times slower): the owner's
 * 20 ms renewals and the etcd writes they cause (both at real-time priority then, before
 * 2026-12-02) left a second agent starting for minutes on the 2 emulated CPUs. Renewals, fence
 * and claim delay scaled by 10.
 */
export const EMULATED_AGENT_ARGS = IN_KERNEL_LAB ? ['--renew-ms', '200'] : [];
/** How long etcd may take to start there (it took over 30 s late in a long boot). */
export const EMULATED_ETCD_START_MS = IN_KERNEL_LAB ? 180_000 : undefined;
/** How long a charon may take to start there (three at once with etcd: over 15 s at host load 16). */
export const EMULATED_CHARON_START_MS = IN_KERNEL_LAB ? 180_000 : undefined;

let seq = 0;
/** A short unique prefix for namespaces and pins of this test process. */
export function uniquePrefix(tag: string): string {
  return `dvt${process.pid % 100000}${tag}${seq++}-`;
}

/** Scratch pin roots not removed yet: removed when the test process exits, whatever the tests did. */
const scratchRoots = new Set<string>();
function removePinRoot(pinRoot: string): void {
  FastPath.purge(pinRoot);
  scratchRoots.delete(pinRoot);
}
// A test whose FastPath.open threw before its `try` never reaches its `remove()`, and
// FastPath.open had already made the directory (found after a session's failed runs).
process.on('exit', () => {
  for (const r of scratchRoots) removePinRoot(r);
});

export function scratchPinRoot(tag: string): { pinRoot: string; remove(): void } {
  const pinRoot = `/sys/fs/bpf/${uniquePrefix(tag)}pins`;
  scratchRoots.add(pinRoot);
  return { pinRoot, remove: () => removePinRoot(pinRoot) };
}

export function objectPath(name: string): string {
  return path.join(BPF_OBJECT_DIR, `${name}.bpf.o`);
}

/** A kernel type's BTF: in vmlinux, or in xfrm_user's module BTF where XFRM is a module (the kernel lab). */
function kernelBtf<T>(lookup: (path: string, base?: string) => T): T {
  try {
    return lookup('/sys/kernel/btf/vmlinux');
  } catch (e) {
    if (!fs.existsSync('/sys/kernel/btf/xfrm_user')) throw e;
    return lookup('/sys/kernel/btf/xfrm_user', '/sys/kernel/btf/vmlinux');
  }
}

export const kernelStruct = (name: string) => kernelBtf((path, base) => sys.btfStruct(path, path, name, base));
export const kernelEnum = (name: string) => kernelBtf((path, base) => sys.btfEnum(path, path, name, base));
