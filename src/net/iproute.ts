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

/** Whether `address` is on `ifname` (in namespace `netns`, or this process's). */
export function hasAddress(ifname: string, address: string, netns?: string): boolean {
  return ip(...(netns ? ['-n', netns] : []), '-o', '-4', 'addr', 'show', 'dev', ifname)
    .split('\n')
    .some((l) => l.includes(` ${address}/`));
}

/** The interface's MAC address (aa:bb:cc:dd:ee:ff). */
export function interfaceMac(ifname: string): string {
  const [link] = JSON.parse(ip('-j', 'link', 'show', 'dev', ifname)) as Array<{ address?: string }>;
  if (!link?.address) throw new Error(`${ifname}: no link-layer address`);
  return link.address;
}
