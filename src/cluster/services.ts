/* What agents name things by: data-plane services of a distribution, and connection keys. */
import type { Service } from '../net/service.js';
import type { VipaDistribute } from '../config/model.js';
import type { ConnRef } from './messages.js';

/** Distributed ports are expanded: the data plane keys services by single port (0 = all). */
const MAX_PORTS_PER_DISTRIBUTION = 256;

export function servicesOf(d: VipaDistribute): Service[] {
  if (d.ports === 'all') return [{ vip: d.address, port: 0, protocol: 'tcp' }];
  const out: Service[] = [];
  for (const r of d.ports) for (let p = r.from; p <= r.to; p++) out.push({ vip: d.address, port: p, protocol: 'tcp' });
  if (out.length > MAX_PORTS_PER_DISTRIBUTION)
    throw new RangeError(
      `VIPADISTribute ${d.address}: ${out.length} ports; at most ${MAX_PORTS_PER_DISTRIBUTION} per statement`,
    );
  return out;
}

export const connKey = (c: ConnRef) => `${c.saddr}:${c.sport}>${c.daddr}:${c.dport}/${c.protocol}`;
