/* A configuration written back in the VIPADynamic language, with keywords spelled out in full. */
import type { ClusterConfig, Destination, VipaDistribute, VipaDynamic } from './model.js';

function destination(d: Destination): string {
  if (d.weight !== undefined) return `${d.xcf} WEIGHT ${d.weight}`;
  if (d.role === 'preferred') return `${d.xcf} PREFERRED`;
  if (d.role === 'backup') return `${d.xcf} BACKUP ${d.rank}`;
  return d.xcf;
}

/** An IPv6 DVIPA as z/OS writes it: interface name, address, /prefix_len unless it is the whole address. */
function ipv6Dvipa(d: { interface?: string; address: string; mask?: string }, prefix = false): string | undefined {
  if (d.interface === undefined) return undefined;
  return `${d.interface} ${d.address}${d.mask === undefined || (d.mask === '128' && !prefix) ? '' : `/${d.mask}`}`;
}

/** z/OS's VIPADISTRIBUTE names an IPv6 DVIPA by its interface. */
function distribute(d: VipaDistribute, v: VipaDynamic): string {
  const method =
    d.method.name === 'hotstandby'
      ? `DISTMETHOD HOTSTANDBY ${d.method.autoSwitchBack ? '' : 'NO'}AUTOSWITCHBACK ` +
        `${d.method.healthSwitch ? '' : 'NO'}HEALTHSWITCH `
      : `DISTMETHOD ${d.method.name.toUpperCase()} `;
  const affinity = d.timedAffinity ? `TIMEDAFFINITY ${d.timedAffinity} ` : '';
  const ports =
    d.ports === 'all'
      ? ''
      : ` PORT ${d.ports.map((p) => (p.from === p.to ? `${p.from}` : `${p.from}-${p.to}`)).join(' ')}`;
  const dest = d.destinations === 'all' ? 'ALL' : d.destinations.map(destination).join(' ');
  const name = [...v.define, ...v.backup].find((x) => x.address === d.address)?.interface ?? d.address;
  return `  VIPADISTRIBUTE ${method}${affinity}${name}${ports} DESTIP ${dest}`;
}

const xcf = (n: { xcf: string; xcf6?: string }) => (n.xcf6 === undefined ? n.xcf : `${n.xcf} ${n.xcf6}`);

export function formatProfile(cfg: ClusterConfig): string {
  const lines: string[] = [];
  if (cfg.keyFile) lines.push(`CLUSTER KEYFILE ${cfg.keyFile}`);
  if (cfg.identities) lines.push(`CLUSTER IDENTITIES ${cfg.identities}`);
  const c = cfg.coupling;
  if (c) {
    const opts = [
      c.leaseTtl !== undefined ? ` LEASETTL ${c.leaseTtl}` : '',
      c.nopreempt ? ' NOPREEMPT' : '',
      c.takebackDelay !== undefined ? ` TAKEBACKDELAY ${c.takebackDelay}` : '',
    ].join('');
    lines.push(`CLUSTER ETCD ${c.etcd.join(' ')}${opts}`);
  }
  if (cfg.ipsec)
    lines.push(
      `CLUSTER IPSEC${cfg.ipsec.seqMargin !== undefined ? ` SEQMARGIN ${cfg.ipsec.seqMargin}` : ''}${cfg.ipsec.interval !== undefined ? ` INTERVAL ${cfg.ipsec.interval}` : ''}`,
    );
  if (cfg.newFlowRate !== undefined) lines.push(`CLUSTER NEWFLOWRATE ${cfg.newFlowRate}`);
  for (const n of cfg.nodes) {
    const ext = n.external ? ` EXTERNAL ${n.external}` : '';
    const int = n.internal.length ? ` INTERNAL ${n.internal.join(' ')}` : '';
    lines.push(`NODE ${n.name} XCF ${xcf(n)}${ext}${int}`, 'VIPADYNAMIC');
    const v = n.vipaDynamic;
    for (const d of v.define)
      lines.push(`  VIPADEFINE MOVEABLE ${d.moveable.toUpperCase()} ${ipv6Dvipa(d) ?? `${d.mask} ${d.address}`}`);
    for (const b of v.backup) {
      const moveable = b.moveable ? ` MOVEABLE ${b.moveable.toUpperCase()}` : '';
      const what = ipv6Dvipa(b) ?? `${b.moveable ? `${b.mask} ` : ''}${b.address}`;
      lines.push(`  VIPABACKUP ${b.rank}${moveable} ${what}`);
    }
    for (const d of v.distribute) lines.push(distribute(d, v));
    for (const r of v.range)
      lines.push(`  VIPARANGE MOVEABLE ${r.moveable.toUpperCase()} ${ipv6Dvipa(r, true) ?? `${r.mask} ${r.address}`}`);
    for (const r of v.route ?? []) lines.push(`  VIPAROUTE DEFINE ${r.xcf} ${r.via}`);
    lines.push('ENDVIPADYNAMIC');
  }
  for (const p of cfg.peers) lines.push(`PEER ${p.name} XCF ${xcf(p)}`);
  return `${lines.join('\n')}\n`;
}
