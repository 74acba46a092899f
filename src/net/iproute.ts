/* iproute2 for what netlink calls the project makes rarely: addresses, links, lab set-up. */
import { execFileSync } from 'node:child_process';

/** Runs `ip` in this process's network namespace; its stderr becomes the error. */
export function ip(...args: string[]): string {
  try {
    return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: string; status?: number };
    throw new Error(`ip ${args.join(' ')}: ${(err.stderr ?? '').trim() || `exit ${err.status}`}`, { cause: e });
  }
}

/** Whether `address` (IPv4, or IPv6 in RFC 5952 form, as ip writes it) is on `ifname` (in namespace `netns`, or this process's). */
export function hasAddress(ifname: string, address: string, netns?: string): boolean {
  const family = address.includes(':') ? '-6' : '-4';
  return ip(...(netns ? ['-n', netns] : []), '-o', family, 'addr', 'show', 'dev', ifname)
    .split('\n')
    .some((l) => l.includes(` ${address}/`));
}

/**
 * `ip addr` arguments for a DVIPA held as a host address: /32, or /128 without duplicate
 * address detection (nodad), which would hold an IPv6 address tentative, unusable, for a second
 * or more after a takeover, and fail it outright while the deposed owner still answers.
 */
export function hostAddress(address: string): string[] {
  return address.includes(':') ? [`${address}/128`, 'nodad'] : [`${address}/32`];
}

/** The interface's MAC address (aa:bb:cc:dd:ee:ff). */
export function interfaceMac(ifname: string): string {
  const [link] = JSON.parse(ip('-j', 'link', 'show', 'dev', ifname)) as Array<{ address?: string }>;
  if (!link?.address) throw new Error(`${ifname}: no link-layer address`);
  return link.address;
}
