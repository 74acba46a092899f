/*
 * Failover drills on the HA topology's pair of routing nodes (r1 the owner, r2 the backup),
 * whatever moves the address between them (dvipa's agents, keepalived): r1 dies the way nodes
 * die (links down at one instant, then its process killed) or comes back, while a probe on the
 * client measures what a user sees.
 */
import { LabError, until } from './wait.js';
import { OutageProbe, type OutageReport } from './procs.js';
import { HA } from './ha-topology.js';
import type { Topology } from './netns.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Two routing nodes sharing the DVIPA, as a drill drives them. */
export interface HaPair {
  /** Whether the address is configured on the node's external interface. */
  holds(node: string): boolean;
  /** Whether the node's control plane says it owns the address. */
  active(node: string): Promise<boolean>;
  /** Links down at one instant, then the process killed; the instant of death. */
  kill(node: string): Promise<number>;
  /** Links up, process started; when that began. */
  revive(node: string): number;
  /** When the node's control plane logged taking the address, at or after `since`, if it logs that. */
  acquired?(node: string, since: number): number | undefined;
  /** What the node says of itself now and logged since `since`, if it can: why a wait timed out. */
  explain?(node: string, since: number): Promise<string>;
  /** What the coupling facility logged since `since`, if there is one. */
  storeSays?(since: number): string;
}

export interface Drill {
  event: 'takeover' | 'takeback';
  /** Control-plane times after the failure (or the return), from the logs where there are any. */
  acquiredMs?: number;
  /** Until the new owner held the address alone (polled). */
  settledMs: number;
  /** What the client saw, from just before the failure to SETTLE_MS after it settled. */
  client: OutageReport;
}

/** After a change of owner, the client's retransmissions (200 ms, 400 ms, ...) get this long to land. */
export const SETTLE_MS = 2000;

/**
 * Fails the owner over to the backup (r1 dies), or brings r1 back for the takeback if it is not
 * the owner; `watchers` (more probes of the client's) start a window just before.
 */
export async function failoverStep(
  pair: HaPair,
  probe: OutageProbe,
  watchers: Array<{ mark(label?: string): Promise<void> }> = [],
): Promise<Drill> {
  const takeover = await pair.active('r1');
  await Promise.all([probe, ...watchers].map((w) => w.mark(takeover ? 'takeover' : 'takeback')));
  const t0 = takeover ? await pair.kill('r1') : pair.revive('r1');
  const [to, from] = takeover ? ['r2', 'r1'] : ['r1', 'r2'];
  // The dead r1 keeps the address on its downed link; the backup must have let it go.
  const alone = () => takeover || !pair.holds(from);
  await until(
    `${to} to hold ${HA.dvipa}`,
    async () => (await pair.active(to)) && pair.holds(to) && alone(),
    takeover ? 15000 : 30000,
  ).catch(async (e: Error) => {
    // The operator's first questions: who holds it, why the other does not claim, what they logged.
    const said =
      pair.explain &&
      (await Promise.all(
        [to, from].map((n) => pair.explain!(n, t0).catch((x: Error) => `${n}: not explained (${x.message})`)),
      ));
    if (said && pair.storeSays) said.push(pair.storeSays(t0));
    throw said ? new LabError(`${e.message}\n${said.join('\n')}`) : e;
  });
  const settledMs = Date.now() - t0;
  await sleep(SETTLE_MS);
  const acquired = pair.acquired?.(to, t0);
  return {
    event: takeover ? 'takeover' : 'takeback',
    acquiredMs: acquired === undefined ? undefined : acquired - t0,
    settledMs,
    client: await probe.report(),
  };
}

/** A probe on the lab's client: 10 ms pings, 16 keep-alive HTTP connections, 20 new connections a second (to the IPv4 DVIPA unless named). */
export function startProbe(
  spawner: Topology,
  clientNs: string,
  port: number,
  host: string = HA.dvipa,
): Promise<OutageProbe> {
  return OutageProbe.start(spawner, clientNs, { host, port, keepAlive: 16, newPerSec: 20 });
}
