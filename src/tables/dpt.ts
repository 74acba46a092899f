/*
 * The destination port table: for each distributed DVIPA:port, the candidate targets and
 * what they reported (listener up, load, active connections), and the Maglev weights the
 * service's distribution method derives from that. Only targets with a listener get new
 * connections; connections already routed (CRT) are never moved by a weight change.
 *
 * Methods:
 *  - ROUNDROBIN: every ready target the same weight, so new connections spread evenly.
 *  - WEIGHTEDACTIVE: weights follow the gap between each target's configured share of the
 *    active connections and what it has, so active counts converge to the configured ratio.
 *  - SERVERWLM: weights from the load targets report (0 = idle, 1 = saturated: no new work).
 *  - BASEWLM: as SERVERWLM. z/OS weighs whole systems there (WLM's system weights) and each
 *    server address space with SERVERWLM; a dvipa node reports one load, so both are the same.
 *  - HOTSTANDBY: everything to the PREFerred target while it listens; else to the ready
 *    BACKup of highest rank. With AUTOSWITCHBACK new connections return to the preferred
 *    target when it listens again; without it they stay on the backup until that fails.
 *    With HEALTHSWITCH (the default) a target that reports itself saturated (load 1) counts
 *    as failed too, unless no target is healthy; NOHEALTHSWITCH looks at the listener only.
 */
import type { Target } from '../net/service.js';

/** A VIPADISTRIBUTE distribution method. */
export type DistMethod =
  | { name: 'roundrobin' }
  | { name: 'weightedactive' }
  | { name: 'serverwlm' }
  /** z/OS weighs whole systems by WLM; dvipa has one load report per node, so as SERVERWLM. */
  | { name: 'basewlm' }
  /** healthSwitch: leave the active target when it reports saturation (load 1), not only when it stops listening. */
  | { name: 'hotstandby'; autoSwitchBack: boolean; healthSwitch: boolean };

export interface Destination {
  xcf: string;
  /** WEIGHTEDACTIVE: the configured weight (default 10). */
  weight?: number;
  /** HOTSTANDBY: one PREFERRED target; BACKUP targets by rank (higher first). */
  role?: 'preferred' | 'backup';
  rank?: number;
}

export interface TargetState {
  xcf: string;
  /** An application listens on the service (SRVSTAT). */
  ready: boolean;
  /** Reported load, 0 (idle) to 1 (saturated); SERVERWLM only. */
  load?: number;
  /** Connections the CRT routes to it now. */
  active: number;
}

/** Configured weight of WEIGHTEDACTIVE targets without one (as z/OS's default). */
export const DEFAULT_WEIGHT = 10;
/** Integer weight scale for SERVERWLM and WEIGHTEDACTIVE. */
const SCALE = 100;

export interface ServiceDistribution {
  method: DistMethod;
  /** Candidates as configured (DESTIP); for DESTIP ALL, every node. */
  destinations: Destination[];
}

export class Dpt {
  private readonly services = new Map<
    string,
    { dist: ServiceDistribution; targets: Map<string, TargetState>; hotActive?: string }
  >();

  /** (Re)declares a service and its candidates; state of targets that stay is kept. */
  define(service: string, dist: ServiceDistribution): void {
    const old = this.services.get(service);
    const targets = new Map<string, TargetState>();
    for (const d of dist.destinations)
      targets.set(d.xcf, old?.targets.get(d.xcf) ?? { xcf: d.xcf, ready: false, active: 0 });
    this.services.set(service, { dist, targets, hotActive: old?.hotActive });
  }

  remove(service: string): boolean {
    return this.services.delete(service);
  }

  serviceNames(): string[] {
    return [...this.services.keys()];
  }

  /** Applies what a target reported; returns whether anything changed. Unknown targets are ignored. */
  update(service: string, xcf: string, change: Partial<Omit<TargetState, 'xcf'>>): boolean {
    const t = this.services.get(service)?.targets.get(xcf);
    if (!t) return false;
    let changed = false;
    for (const k of Object.keys(change) as Array<keyof typeof change>) {
      if (change[k] !== undefined && t[k] !== change[k]) {
        (t as unknown as Record<string, unknown>)[k] = change[k];
        changed = true;
      }
    }
    return changed;
  }

  /** The distribution method's name, as the displays show it. */
  method(service: string): string {
    const m = this.services.get(service)?.dist.method;
    if (!m) return 'none';
    return m.name === 'hotstandby'
      ? `hotstandby ${m.autoSwitchBack ? '' : 'no'}autoswitchback ${m.healthSwitch ? '' : 'no'}healthswitch`
      : m.name;
  }

  targets(service: string): TargetState[] {
    return [...(this.services.get(service)?.targets.values() ?? [])];
  }

  /**
   * The Maglev weights for the service now (weight 0: no new connections). For HOTSTANDBY
   * this is also the decision: the target chosen is remembered as the active one.
   */
  weights(service: string): Target[] {
    const s = this.services.get(service);
    if (!s) throw new Error(`unknown service ${service}`);
    const { method, destinations } = s.dist;
    const states = destinations.map((d) => ({ d, t: s.targets.get(d.xcf)! }));
    const ready = states.filter((x) => x.t.ready);
    const out = (f: (x: { d: Destination; t: TargetState }) => number): Target[] =>
      states.map((x) => ({ addr: x.d.xcf, weight: x.t.ready ? f(x) : 0 }));

    switch (method.name) {
      case 'roundrobin':
        return out(() => 1);
      case 'serverwlm':
      case 'basewlm': {
        const w = (x: { t: TargetState }) => Math.round(SCALE * (1 - Math.min(1, Math.max(0, x.t.load ?? 0))));
        // All saturated: share what there is evenly rather than refuse every connection.
        if (ready.length && ready.every((x) => w(x) === 0)) return out(() => 1);
        return out(w);
      }
      case 'weightedactive': {
        const configured = (d: Destination) => d.weight ?? DEFAULT_WEIGHT;
        const total = ready.reduce((a, x) => a + configured(x.d), 0);
        const active = ready.reduce((a, x) => a + x.t.active, 0);
        // The next SCALE connections should close each target's gap to its share.
        const horizon = active + SCALE;
        return out((x) => Math.max(1, Math.round((configured(x.d) / total) * horizon - x.t.active)));
      }
      case 'hotstandby': {
        const healthy = (x: { t: TargetState }) => x.t.ready && (x.t.load ?? 0) < 1;
        const usable = method.healthSwitch && states.some(healthy) ? healthy : (x: { t: TargetState }) => x.t.ready;
        const preferred = states.find((x) => x.d.role === 'preferred');
        const current = states.find((x) => x.d.xcf === s.hotActive);
        let chosen: string | undefined;
        const stay = current !== undefined && usable(current) && current !== preferred;
        if (preferred && usable(preferred) && (method.autoSwitchBack || !stay)) chosen = preferred.d.xcf;
        else if (current && usable(current)) chosen = current.d.xcf;
        else {
          const backups = states
            .filter((x) => x.d.role === 'backup' && usable(x))
            .sort((a, b) => (b.d.rank ?? 0) - (a.d.rank ?? 0));
          chosen = backups[0]?.d.xcf ?? (preferred && usable(preferred) ? preferred.d.xcf : undefined);
        }
        s.hotActive = chosen;
        return states.map((x) => ({ addr: x.d.xcf, weight: x.d.xcf === chosen ? 1 : 0 }));
      }
    }
  }
}
