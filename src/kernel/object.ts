/*
 * A BPF object file (build/bpf/NAME.bpf.o) opened and loaded through libbpf: the one way
 * dvipa loads BPF, so pinning and map sizes are passed the same way everywhere.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { native, type MapRef, type MapSpec } from './addon.js';

export type { MapRef };
import { about } from './errors.js';
import { BPF_OBJECT_DIR } from './paths.js';

export interface LoadOptions {
  /** Where maps declared LIBBPF_PIN_BY_NAME are reused from or pinned to. */
  pinRoot?: string;
  /** Map sizes by name, set before load (a pinned map is reused only if they match). */
  maxEntries?: Record<string, number>;
  /** Default: the build's object directory. */
  dir?: string;
}

/** Opens `${name}.bpf.o`, creates or reuses its maps and runs the verifier; a refusal is a VerifierError. */
export function loadObject(name: string, opts: LoadOptions = {}): BpfObject {
  const file = path.join(opts.dir ?? BPF_OBJECT_DIR, `${name}.bpf.o`);
  if (!fs.existsSync(file))
    throw new Error(`BPF object ${file} not found: run \`npm install\` (or \`npm run build\`) first`);
  const target = path.basename(file);
  const obj = about(target, () => new native.BpfObject(file, { pinRoot: opts.pinRoot, maxEntries: opts.maxEntries }));
  try {
    about(target, () => obj.load());
  } catch (e) {
    obj.close();
    throw e;
  }
  return new BpfObject(obj, target);
}

/** A loaded object (made by loadObject). */
export class BpfObject {
  constructor(
    private readonly obj: InstanceType<(typeof native)['BpfObject']>,
    readonly name: string,
  ) {}

  mapFd(map: string): number {
    return about(map, () => this.obj.mapFd(map));
  }

  progFd(program: string): number {
    return about(program, () => this.obj.progFd(program));
  }

  /** Attaches a program as its section says (tracepoints...); detached on close(). */
  attach(program: string): void {
    about(program, () => this.obj.attach(program));
  }

  /** An iterator program's output, read to its end (attached on first use, detached on close). */
  readIter(program: string): Buffer {
    return about(program, () => this.obj.readIter(program));
  }

  /** Closes the object's fds and the links attach() made; pinned maps and XDP links live on. */
  close(): void {
    this.obj.close();
  }
}

/** The maps `${name}.bpf.o` declares, read without loading it. */
export function declaredMaps(name: string, dir = BPF_OBJECT_DIR): MapSpec[] {
  const file = path.join(dir, `${name}.bpf.o`);
  const obj = about(path.basename(file), () => new native.BpfObject(file));
  try {
    return obj.maps();
  } finally {
    obj.close();
  }
}

/** `fd` with the map's info read once, for maps used many times (see sys.map*). */
export function mapRef(name: string, fd: number): MapRef {
  return about(name, () => new native.MapRef(fd));
}
