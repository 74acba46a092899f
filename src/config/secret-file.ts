/*
 * Files holding secrets (the cluster key, a node's private key, the etcd password): read
 * only if nobody but the owner can read them, and refused if too short to be a real key.
 * A world-readable key is as good as published: every local user could join the cluster.
 */
import * as fs from 'node:fs';
import { DvipaError, EXIT } from '../errors.js';

export class SecretFileError extends DvipaError {
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(`${file}: ${message}`, EXIT.usage);
  }
}

/** The file's bytes; throws SecretFileError if group or others may read it, or it has fewer than `minBytes`. */
export function readSecretFile(file: string, minBytes: number): Buffer {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw new SecretFileError(file, (e as Error).message);
  }
  try {
    // Mode and content from one open file: no window between the check and the read.
    const mode = fs.fstatSync(fd).mode & 0o777;
    if (mode & 0o077) {
      const octal = mode.toString(8).padStart(4, '0');
      throw new SecretFileError(file, `mode ${octal}: open to group or others; chmod 600 ${file}`);
    }
    const data = fs.readFileSync(fd);
    if (data.length < minBytes) throw new SecretFileError(file, `${data.length} bytes, at least ${minBytes} needed`);
    return data;
  } finally {
    fs.closeSync(fd);
  }
}
