/*
 * The benchmark's chart: packets per second over time, one line per way of forwarding, and
 * beside it the packets each target received, as bars. Plain SVG, no dependencies.
 */
export interface ChartSeries {
  name: string;
  points: Array<{ t: number; pps: number }>;
  perTarget: Record<string, number>;
}

const COLOURS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e'];
const esc = (s: string) => s.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!);

function niceMax(v: number): number {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * p).find((x) => x >= v)!;
}

export function chartSvg(title: string, series: ChartSeries[]): string {
  const W = 900,
    H = 360,
    L = 70,
    T = 40,
    PW = 520,
    PH = 260,
    BX = L + PW + 60,
    BW = 230;
  const tMax = Math.max(1e-9, ...series.flatMap((s) => s.points.map((p) => p.t)));
  const yMax = niceMax(Math.max(0, ...series.flatMap((s) => s.points.map((p) => p.pps))));
  const x = (t: number) => L + (t / tMax) * PW;
  const y = (v: number) => T + PH - (v / yMax) * PH;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<text x="${L}" y="20" font-size="14" font-weight="bold">${esc(title)}</text>`,
    `<line x1="${L}" y1="${T + PH}" x2="${L + PW}" y2="${T + PH}" stroke="#000"/><line x1="${L}" y1="${T}" x2="${L}" y2="${T + PH}" stroke="#000"/>`,
  ];
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4;
    out.push(
      `<text x="${L - 6}" y="${y(v) + 4}" text-anchor="end">${Math.round(v).toLocaleString('en')}</text>`,
      `<line x1="${L}" y1="${y(v)}" x2="${L + PW}" y2="${y(v)}" stroke="#ddd"/>`,
    );
  }
  out.push(
    `<text x="${L + PW / 2}" y="${T + PH + 30}" text-anchor="middle">seconds</text>`,
    `<text x="14" y="${T + PH / 2}" transform="rotate(-90 14 ${T + PH / 2})" text-anchor="middle">packets/s delivered</text>`,
  );
  series.forEach((s, i) => {
    const c = COLOURS[i % COLOURS.length];
    if (s.points.length)
      out.push(
        `<polyline fill="none" stroke="${c}" stroke-width="2" points="${s.points.map((p) => `${x(p.t).toFixed(1)},${y(p.pps).toFixed(1)}`).join(' ')}"/>`,
      );
    out.push(
      `<rect x="${L + 10}" y="${T + 8 + i * 16}" width="10" height="10" fill="${c}"/><text x="${L + 26}" y="${T + 17 + i * 16}">${esc(s.name)}</text>`,
    );
  });
  // Per target: packets received, grouped by series.
  const targets = [...new Set(series.flatMap((s) => Object.keys(s.perTarget)))].sort();
  const bMax = niceMax(Math.max(0, ...series.flatMap((s) => Object.values(s.perTarget))));
  const group = BW / Math.max(1, targets.length);
  const bar = group / (series.length + 1);
  out.push(
    `<text x="${BX}" y="${T - 8}">packets per target</text>`,
    `<line x1="${BX}" y1="${T + PH}" x2="${BX + BW}" y2="${T + PH}" stroke="#000"/>`,
  );
  targets.forEach((t, ti) => {
    series.forEach((s, si) => {
      const v = s.perTarget[t] ?? 0;
      const h = (v / bMax) * PH;
      out.push(
        `<rect x="${(BX + ti * group + si * bar).toFixed(1)}" y="${(T + PH - h).toFixed(1)}" width="${(bar * 0.9).toFixed(1)}" height="${h.toFixed(1)}" fill="${COLOURS[si % COLOURS.length]}"><title>${esc(`${s.name} ${t}: ${v}`)}</title></rect>`,
      );
    });
    out.push(
      `<text x="${(BX + ti * group + group / 2 - bar / 2).toFixed(1)}" y="${T + PH + 16}" text-anchor="middle">${esc(t)}</text>`,
    );
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
