/*
 * `dvipa bench tables`: the control plane's table work. Maglev build time, balance and
 * disruption; the CRT moved through the batch API, both as raw syscalls on pre-encoded
 * buffers and through the typed API (encoding and decoding in JavaScript included).
 */
import { buildMaglev, tableShares } from '../tables/maglev.js';
import { FastPath } from '../dataplane/fastpath.js';
import { CrtOrigin, crtEntry, flow, type CrtEntry } from '../dataplane/structs.js';
import type { Flow } from '../net/flow.js';
import { MAGLEV_SIZE } from '../tables/maglev.js';
import { formatIpv4 } from '../net/addr.js';

export interface TablesBench {
  maglev: {
    slots: number;
    buildMs100Weighted: number;
    maxImbalancePct: Record<string, number>;
    movedOnRemovePct: Record<string, number>;
    limitOnRemovePct: Record<string, number>;
  };
  crt: { entries: number; rawInsertMs: number; rawDumpMs: number; typedInsertMs: number; typedDumpMs: number };
}

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const targets = (n: number, weight: (i: number) => number = () => 1) =>
  Array.from({ length: n }, (_, i) => ({ addr: formatIpv4(0xc6120100 + i + 1), weight: weight(i) }));

function maglevFigures(): TablesBench['maglev'] {
  const weighted = targets(100, (i) => 1 + (i % 7));
  const times = Array.from({ length: 21 }, () => {
    const t0 = process.hrtime.bigint();
    buildMaglev(weighted);
    return ms(t0);
  });
  const maxImbalancePct: Record<string, number> = {};
  const movedOnRemovePct: Record<string, number> = {};
  const limitOnRemovePct: Record<string, number> = {};
  for (const n of [3, 10, 100]) {
    const full = buildMaglev(targets(n));
    const shares = [...tableShares(full).values()];
    maxImbalancePct[n] = Math.max(...shares.map((c) => Math.abs(c / (MAGLEV_SIZE / n) - 1))) * 100;
    const less = buildMaglev(targets(n).slice(1));
    let moved = 0;
    for (let i = 0; i < MAGLEV_SIZE; i++) if (full[i] !== less[i]) moved++;
    movedOnRemovePct[n] = (moved / MAGLEV_SIZE) * 100;
    limitOnRemovePct[n] = (1 / n + 0.02) * 100;
  }
  return { slots: MAGLEV_SIZE, buildMs100Weighted: median(times), maxImbalancePct, movedOnRemovePct, limitOnRemovePct };
}

function crtFigures(entries: number): TablesBench['crt'] {
  const pinRoot = `/sys/fs/bpf/dvipa-bench-tables-${process.pid}`;
  const fp = FastPath.open({ pinRoot, crtMaxEntries: entries * 2 });
  try {
    const list: Array<[Flow, CrtEntry]> = [];
    for (let i = 0; i < entries; i++) {
      list.push([
        { saddr: formatIpv4(0xc6120000 + (i >>> 16)), daddr: '192.0.2.10', sport: i & 0xffff, dport: 80, proto: 6 },
        { target: formatIpv4(0xc6120100 + (i % 3)), svcId: 0, origin: CrtOrigin.Control, targetIdx: 0, createdNs: 0n },
      ]);
    }
    const keys = Buffer.alloc(entries * flow.size);
    const values = Buffer.alloc(entries * crtEntry.size);
    list.forEach(([k, v], i) => {
      flow.encode(k, keys, i * flow.size);
      crtEntry.encode(v, values, i * crtEntry.size);
    });

    let t0 = process.hrtime.bigint();
    fp.crtEst.setBatchRaw(keys, values, entries);
    const rawInsertMs = ms(t0);
    t0 = process.hrtime.bigint();
    let seen = 0;
    for (const b of fp.crtEst.rawBatches()) seen += b.count;
    const rawDumpMs = ms(t0);
    if (seen !== entries) throw new Error(`CRT dump returned ${seen} entries, expected ${entries}`);
    fp.crtEst.deleteBatch(list.map(([k]) => k));

    t0 = process.hrtime.bigint();
    fp.crtEst.setBatch(list);
    const typedInsertMs = ms(t0);
    t0 = process.hrtime.bigint();
    seen = 0;
    for (const _ of fp.crtEst.entries()) seen++;
    const typedDumpMs = ms(t0);
    if (seen !== entries) throw new Error(`CRT dump returned ${seen} entries, expected ${entries}`);
    return { entries, rawInsertMs, rawDumpMs, typedInsertMs, typedDumpMs };
  } finally {
    fp.close();
    FastPath.purge(pinRoot);
  }
}

export function benchTables(opts: { crtEntries: number }): TablesBench {
  return { maglev: maglevFigures(), crt: crtFigures(opts.crtEntries) };
}

export function formatTablesBench(b: TablesBench): string {
  const m = b.maglev;
  const c = b.crt;
  return [
    `Maglev, ${m.slots} slots`,
    `  build, 100 weighted targets     ${m.buildMs100Weighted.toFixed(2)} ms (median of 21)`,
    ...Object.keys(m.maxImbalancePct).map(
      (n) =>
        `  N=${n.padEnd(4)} equal weights: worst share off by ${m.maxImbalancePct[n].toFixed(2)} %; removing one moves ${m.movedOnRemovePct[n].toFixed(2)} % of slots (limit ${m.limitOnRemovePct[n].toFixed(2)} %)`,
    ),
    '',
    `CRT, ${c.entries} entries through BPF_MAP_*_BATCH`,
    `  raw buffers    insert ${c.rawInsertMs.toFixed(0)} ms, dump ${c.rawDumpMs.toFixed(0)} ms, total ${(c.rawInsertMs + c.rawDumpMs).toFixed(0)} ms`,
    `  typed API      insert ${c.typedInsertMs.toFixed(0)} ms, dump ${c.typedDumpMs.toFixed(0)} ms, total ${(c.typedInsertMs + c.typedDumpMs).toFixed(0)} ms (JS encode/decode included)`,
  ].join('\n');
}
