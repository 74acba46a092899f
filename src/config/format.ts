/* A configuration written back in the VIPADynamic language, with keywords spelled out in full. */
import type { ClusterConfig, Destination, VipaDistribute } from './model.js';

function destination(d: Destination): string {
  if (d.weight !== undefined) return `${d.xcf} WEIGHT ${d.weight}`;
  if (d.role === 'preferred') return `${d.xcf} PREFERRED`;
  if (d.role === 'backup') return `${d.xcf} BACKUP ${d.rank}`;
  return d.xcf;
}

function distribute(d: VipaDistribute): string {
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
  return `  VIPADISTRIBUTE ${method}${affinity}${d.address}${ports} DESTIP ${dest}`;
}

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
  for (const n of cfg.nodes) {
    const ext = n.external ? ` EXTERNAL ${n.external}` : '';
    const int = n.internal.length ? ` INTERNAL ${n.internal.join(' ')}` : '';
    lines.push(`NODE ${n.name} XCF ${n.xcf}${ext}${int}`, 'VIPADYNAMIC');
    const v = n.vipaDynamic;
    for (const d of v.define) lines.push(`  VIPADEFINE MOVEABLE ${d.moveable.toUpperCase()} ${d.mask} ${d.address}`);
    for (const b of v.backup)
      lines.push(
        `  VIPABACKUP ${b.rank}${b.moveable ? ` MOVEABLE ${b.moveable.toUpperCase()} ${b.mask}` : ''} ${b.address}`,
      );
    for (const d of v.distribute) lines.push(distribute(d));
    for (const r of v.range) lines.push(`  VIPARANGE MOVEABLE ${r.moveable.toUpperCase()} ${r.mask} ${r.address}`);
    for (const r of v.route ?? []) lines.push(`  VIPAROUTE DEFINE ${r.xcf} ${r.via}`);
    lines.push('ENDVIPADYNAMIC');
  }
  for (const p of cfg.peers) lines.push(`PEER ${p.name} XCF ${p.xcf}`);
  return `${lines.join('\n')}\n`;
}
