/*
 * A real etcd for a test file (or a describe block), started before its tests, and
 * coupling facilities on it; all of them stopped after the tests, also after a failure.
 */
import { after, before } from 'node:test';
import { EtcdCoupling, type EtcdOptions } from '../../src/cluster/coupling.js';
import { startEtcd, type EtcdServer } from '../../src/lab/etcd.js';
import { log } from '../../src/log.js';

export interface EtcdFixture {
  /** The server, once started. */
  readonly server: EtcdServer;
  /** A started member `node` of the cluster (lease TTL 10 s unless given: a stalled machine must not end it by accident). */
  join(node: string, o?: Partial<Omit<EtcdOptions, 'node'>>): Promise<EtcdCoupling>;
}

export function etcdFixture(): EtcdFixture {
  let etcd: EtcdServer | undefined;
  const open: EtcdCoupling[] = [];
  before(async () => {
    etcd = await startEtcd();
  });
  after(async () => {
    for (const c of open) await c.stop(0).catch(() => undefined);
    await etcd?.stop();
  });
  return {
    get server() {
      if (!etcd) throw new Error('etcd is not started yet: use it in a test or a before hook');
      return etcd;
    },
    async join(node, o = {}) {
      const c = new EtcdCoupling({
        endpoints: [this.server.url],
        xcf: '198.18.0.1',
        ttlSec: 10,
        logger: log,
        ...o,
        node,
      });
      open.push(c);
      await c.start();
      return c;
    },
  };
}
