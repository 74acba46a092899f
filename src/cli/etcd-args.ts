/* The options that reach the coupling facility (etcd), shared by `dvipa agent` and `dvipa dvipa`. */
import * as fs from 'node:fs';
import type { Argv } from 'yargs';
import type { EtcdOptions } from '../cluster/coupling.js';
import { readSecretFile } from '../config/secret-file.js';
import { CliError, EXIT } from './errors.js';

export interface EtcdArgs {
  etcd?: string;
  etcdPrefix: string;
  etcdCa?: string;
  etcdCert?: string;
  etcdKey?: string;
  etcdUser?: string;
  etcdPasswordFile?: string;
  insecureEtcd?: boolean;
}

export function withEtcd<T>(y: Argv<T>) {
  return y
    .option('etcd', {
      type: 'string',
      describe: 'the coupling facility: etcd endpoints, comma-separated (http://127.0.0.1:2379)',
    })
    .option('etcd-prefix', { type: 'string', default: '/dvipa/', describe: 'key prefix of this cluster in etcd' })
    .option('etcd-ca', { type: 'string', describe: 'TLS: CA certificate of the etcd servers (https endpoints)' })
    .option('etcd-cert', { type: 'string', describe: 'TLS: client certificate' })
    .option('etcd-key', { type: 'string', describe: 'TLS: client key' })
    .option('etcd-user', { type: 'string', describe: 'etcd user (password auth)' })
    .option('etcd-password-file', {
      type: 'string',
      describe: "a file holding the etcd user's password (mode 0600, at least 12 bytes)",
    })
    .option('insecure-etcd', {
      type: 'boolean',
      describe:
        'accept etcd over plain http or without a client certificate or user: anyone who reaches etcd can then move DVIPAs (labs and tests only)',
    });
}

/** The checked etcd options, or undefined without --etcd. */
export function etcdOptions(a: EtcdArgs): Omit<EtcdOptions, 'node' | 'xcf' | 'logger' | 'ttlSec'> | undefined {
  if (!a.etcd) {
    if (a.etcdCa || a.etcdCert || a.etcdKey || a.etcdUser)
      throw new CliError('--etcd-ca, --etcd-cert, --etcd-key and --etcd-user need --etcd', EXIT.usage);
    return undefined;
  }
  const endpoints = a.etcd
    .split(',')
    .map((e) => e.trim())
    .filter(Boolean);
  if (!endpoints.length) throw new CliError('--etcd: no endpoint given', EXIT.usage);
  for (const e of endpoints) {
    let u: URL;
    try {
      u = new URL(e);
    } catch {
      throw new CliError(`--etcd ${e}: not a URL (expected http://host:port or https://host:port)`, EXIT.usage);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:')
      throw new CliError(`--etcd ${e}: expected http:// or https://`, EXIT.usage);
    if (u.protocol === 'https:' && !a.etcdCa)
      throw new CliError(`--etcd ${e}: https needs --etcd-ca (the CA that signed etcd's certificate)`, EXIT.usage);
  }
  if (Boolean(a.etcdCert) !== Boolean(a.etcdKey))
    throw new CliError('--etcd-cert and --etcd-key go together (client certificate and its key)', EXIT.usage);
  if (!/^\/[\w./-]*\/$/.test(a.etcdPrefix))
    throw new CliError('--etcd-prefix must start and end with / (e.g. /dvipa/)', EXIT.usage);
  for (const f of [a.etcdCa, a.etcdCert]) {
    if (f && !fs.existsSync(f)) throw new CliError(`${f}: no such file`, EXIT.usage);
  }
  const secret = (file: string, what: string, min: number) => {
    try {
      return readSecretFile(file, min);
    } catch (e) {
      throw new CliError(`${what} ${(e as Error).message}`, EXIT.usage);
    }
  };
  if (a.etcdKey) secret(a.etcdKey, 'etcd client key', 1);
  let password: string | undefined;
  if (a.etcdUser) {
    if (!a.etcdPasswordFile) throw new CliError('--etcd-user needs --etcd-password-file', EXIT.usage);
    password = secret(a.etcdPasswordFile, 'etcd password file', 12)
      .toString('utf8')
      .replace(/\r?\n$/, '');
  }
  const plain = endpoints.filter((e) => e.startsWith('http:'));
  if (!a.insecureEtcd && (plain.length || !(a.etcdCert || a.etcdUser))) {
    const what = plain.length
      ? `${plain.join(', ')} is plain http`
      : 'no client certificate (--etcd-cert) or user (--etcd-user)';
    throw new CliError(
      `--etcd: ${what}: anyone who reaches etcd could move DVIPAs and roll back IPsec records. ` +
        'Use https with --etcd-ca and a client certificate or an etcd user with RBAC on the prefix, or --insecure-etcd for a lab',
      EXIT.usage,
    );
  }
  return {
    endpoints,
    prefix: a.etcdPrefix,
    caFile: a.etcdCa,
    certFile: a.etcdCert,
    keyFile: a.etcdKey,
    user: a.etcdUser,
    password,
  };
}
