/*
 * The small service description the fast-path commands take (`fastpath apply`, `fastpath
 * replay`): the node's cluster address, the interfaces towards the targets, and the
 * distributed services with their targets and weights. JSON or YAML. The full VIPADynamic
 * configuration of the cluster compiles down to the same model.
 *
 *   clusterAddress: 198.18.1.1
 *   clusterAddress6: 2001:db8:1::1   # optional: the outer source towards IPv6 targets
 *   egress: [eth1]
 *   services:
 *     - vip: 192.0.2.10
 *       port: 80            # 0 or omitted: every port of the DVIPA
 *       protocol: tcp       # tcp (default) or udp
 *       targets: [198.18.1.11, { address: 198.18.1.12, weight: 2 }]   # either family, mixed too
 *       timedAffinity: 60   # optional: a client's new connections follow its last target for 60 s
 */
import { DvipaError, EXIT } from '../errors.js';
import * as fs from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { canonicalIpv6, ipFamily, ipv4MappedProblem, parseIpv4 } from '../net/addr.js';
import type { Service, Target } from '../net/service.js';

export interface ServiceFile {
  clusterAddress: string;
  clusterAddress6?: string;
  egress: string[];
  services: Array<Service & { targets: Target[]; timedAffinity: number }>;
}

export class ServiceFileError extends DvipaError {
  constructor(
    readonly file: string,
    readonly problems: string[],
  ) {
    super(
      `${file}: ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n  ${problems.join('\n  ')}`,
      EXIT.usage,
    );
  }
}

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

export function parseServiceFile(text: string, file = '<input>'): ServiceFile {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new ServiceFileError(file, [(e as Error).message.split('\n')[0]]);
  }
  const problems: string[] = [];
  const bad = (where: string, what: string) => problems.push(`${where}: ${what}`);
  const address = (where: string, x: unknown): string | undefined => {
    if (typeof x !== 'string') return void bad(where, 'expected an IPv4 address');
    try {
      parseIpv4(x);
      return x;
    } catch (e) {
      return void bad(where, (e as Error).message);
    }
  };
  /** A DVIPA or target: either family, IPv6 in its one spelling. */
  const anyAddress = (where: string, x: unknown): string | undefined => {
    const family = typeof x === 'string' ? ipFamily(x) : undefined;
    if (family === 4) return x as string;
    const mapped = family === 6 ? ipv4MappedProblem(x as string) : undefined;
    if (mapped) return void bad(where, mapped);
    if (family === 6) return canonicalIpv6(x as string);
    return void bad(where, `${JSON.stringify(x)} is not an IPv4 or IPv6 address`);
  };

  if (!isObject(doc)) throw new ServiceFileError(file, ['expected a mapping with clusterAddress, egress and services']);
  for (const k of Object.keys(doc))
    if (!['clusterAddress', 'clusterAddress6', 'egress', 'services'].includes(k)) bad(k, 'unknown key');
  const clusterAddress = address('clusterAddress', doc.clusterAddress) ?? '';
  let clusterAddress6: string | undefined;
  if (doc.clusterAddress6 !== undefined) {
    clusterAddress6 = anyAddress('clusterAddress6', doc.clusterAddress6);
    if (clusterAddress6 && ipFamily(clusterAddress6) !== 6)
      bad('clusterAddress6', `${clusterAddress6} is not an IPv6 address`);
  }
  const egress: string[] = [];
  if (doc.egress !== undefined) {
    if (!Array.isArray(doc.egress)) bad('egress', 'expected a list of interface names');
    else
      doc.egress.forEach((e, i) =>
        typeof e === 'string' && e.length > 0 && e.length < 16
          ? egress.push(e)
          : bad(`egress[${i}]`, 'expected an interface name'),
      );
  }
  const services: ServiceFile['services'] = [];
  if (!Array.isArray(doc.services)) bad('services', 'expected a list of services');
  else {
    const seen = new Set<string>();
    doc.services.forEach((s, i) => {
      const at = `services[${i}]`;
      if (!isObject(s)) return bad(at, 'expected a mapping with vip, port, protocol, targets');
      for (const k of Object.keys(s))
        if (!['vip', 'port', 'protocol', 'targets', 'timedAffinity'].includes(k)) bad(`${at}.${k}`, 'unknown key');
      const timedAffinity = s.timedAffinity ?? 0;
      if (
        typeof timedAffinity !== 'number' ||
        !Number.isInteger(timedAffinity) ||
        timedAffinity < 0 ||
        timedAffinity > 99999
      )
        bad(`${at}.timedAffinity`, 'expected whole seconds from 0 to 99999');
      const vip = anyAddress(`${at}.vip`, s.vip);
      const port = s.port ?? 0;
      if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65535)
        bad(`${at}.port`, 'expected a port from 0 (all ports) to 65535');
      const protocol = s.protocol ?? 'tcp';
      if (protocol !== 'tcp' && protocol !== 'udp') bad(`${at}.protocol`, 'expected tcp or udp');
      const targets: Target[] = [];
      if (!Array.isArray(s.targets)) bad(`${at}.targets`, 'expected a list of target addresses');
      else {
        s.targets.forEach((t, j) => {
          const tat = `${at}.targets[${j}]`;
          const spec: Record<string, unknown> = isObject(t) ? t : { address: t };
          for (const k of Object.keys(spec)) if (!['address', 'weight'].includes(k)) bad(`${tat}.${k}`, 'unknown key');
          const a = anyAddress(`${tat}.address`, spec.address);
          const weight = spec.weight ?? 1;
          if (typeof weight !== 'number' || !Number.isInteger(weight) || weight < 0 || weight > 65535)
            bad(`${tat}.weight`, 'expected an integer weight from 0 to 65535');
          else if (a) {
            if (targets.some((x) => x.addr === a)) bad(tat, `duplicate target ${a}`);
            else targets.push({ addr: a, weight });
          }
        });
      }
      if (vip && typeof port === 'number' && (protocol === 'tcp' || protocol === 'udp')) {
        const key = `${vip}:${port}/${protocol}`;
        if (seen.has(key)) bad(at, `duplicate service ${key}`);
        seen.add(key);
        services.push({
          vip,
          port,
          protocol,
          targets,
          timedAffinity: typeof timedAffinity === 'number' ? timedAffinity : 0,
        });
      }
    });
  }
  if (problems.length) throw new ServiceFileError(file, problems);
  return { clusterAddress, ...(clusterAddress6 ? { clusterAddress6 } : {}), egress, services };
}

export function readServiceFile(file: string): ServiceFile {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ServiceFileError(file, [
      (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message,
    ]);
  }
  return parseServiceFile(text, file);
}
