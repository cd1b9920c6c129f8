// Charts: uPlot for lines (fast canvas, ~50 kB), hand-drawn SVG for the Gantt timeline and the
// stacked cost bars (each bar is an element with a label, so it is readable by assistive tech and tests).
import { html } from 'htm/preact';
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import { OUTCOME_COLOUR, PALETTE, duration } from './format.js';

export interface LineSeries {
  label: string;
  values: (number | null)[];
  dash?: number[];
}

/** A uPlot line chart; `xs` are the x values (epochs, or seconds for time axes). */
export function LineChart(props: {
  title: string;
  xLabel: string;
  xs: number[];
  series: LineSeries[];
  time?: boolean;
  testid?: string;
  height?: number;
  width?: number;
}) {
  const el = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const node = el.current;
    if (!node) return;
    const width = Math.max(280, Math.min(node.parentElement?.parentElement?.clientWidth ?? 440, props.width ?? 440));
    const plot = new uPlot(
      {
        width,
        height: props.height ?? 220,
        scales: { x: { time: props.time ?? false } },
        axes: [{ label: props.xLabel, ...(props.time ? {} : { incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500] }) }, {}],
        series: [
          { label: props.xLabel },
          ...props.series.map((s, i) => ({
            label: s.label,
            stroke: PALETTE[i % PALETTE.length]!,
            width: 2,
            ...(s.dash ? { dash: s.dash } : {}),
            points: { show: true, size: 6 },
          })),
        ],
      },
      [props.xs, ...props.series.map((s) => s.values)] as uPlot.AlignedData,
      node,
    );
    return () => plot.destroy();
  }, [JSON.stringify([props.xs, props.series])]);
  return html`<figure class="chart" data-testid=${props.testid} data-points=${props.xs.length}>
    <figcaption>${props.title}</figcaption>
    <div ref=${el} role="img" aria-label=${`${props.title}: ${props.series.map((s) => `${s.label} ${s.values.filter((v) => v !== null).length} points`).join(', ')}`}></div>
  </figure>`;
}

export interface GanttBar {
  lane: string;
  start: number;
  end: number;
  kind: string;
  label: string;
  testid: string;
}

/** A Gantt chart: one row per lane, bars positioned by time; pauses are hatched, waits pale and dashed. */
export function Gantt(props: { lanes: string[]; bars: GanttBar[]; t0: number; t1: number }) {
  const { lanes, bars, t0 } = props;
  const t1 = Math.max(props.t1, t0 + 1000);
  const W = 900;
  const L = 170;
  const rowH = 26;
  const H = lanes.length * rowH + 30;
  const x = (t: number) => L + ((t - t0) / (t1 - t0)) * (W - L - 10);
  const ticks = 5;
  return html`<svg class="gantt" viewBox=${`0 0 ${W} ${H}`} role="img" aria-label=${`Stage timeline: ${bars.length} bars`} preserveAspectRatio="xMinYMin meet">
    <defs>
      <pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">
        <rect width="6" height="6" fill="#fff3d6" /><line x1="0" y1="0" x2="0" y2="6" stroke="#E69F00" stroke-width="3" />
      </pattern>
    </defs>
    ${lanes.map(
      (l, i) => html`<g>
        <rect x="0" y=${i * rowH} width=${W} height=${rowH} fill=${i % 2 ? '#f6f7f9' : '#fff'} />
        <text x="6" y=${i * rowH + 17} class="lane-label">${l}</text>
      </g>`,
    )}
    ${Array.from({ length: ticks + 1 }, (_, i) => {
      const t = t0 + ((t1 - t0) * i) / ticks;
      return html`<g>
        <line x1=${x(t)} x2=${x(t)} y1="0" y2=${lanes.length * rowH} stroke="#ddd" />
        <text x=${x(t)} y=${lanes.length * rowH + 18} text-anchor="middle" class="tick">+${duration(new Date(t0).toISOString(), new Date(t).toISOString())}</text>
      </g>`;
    })}
    ${bars.map((b) => {
      const row = lanes.indexOf(b.lane);
      const bx = x(b.start);
      const w = Math.max(3, x(b.end) - bx);
      const pause = b.kind === 'PAUSED';
      // Waiting (for slots or other replicas): pale with a dashed outline, so it never reads as work.
      const wait = b.kind === 'WAITING';
      const stroke = b.kind === 'FAILED' ? '#7a2800' : wait ? '#56B4E9' : 'none';
      return html`<g data-testid=${b.testid} data-kind=${b.kind} tabindex="0" aria-label=${b.label}>
        <title>${b.label}</title>
        <rect x=${bx} y=${row * rowH + (pause ? 3 : wait ? 7 : 5)} width=${w} height=${pause ? rowH - 6 : wait ? rowH - 14 : rowH - 10} rx="3"
          fill=${pause ? 'url(#hatch)' : wait ? '#e3f1fb' : (OUTCOME_COLOUR[b.kind] ?? '#888')} stroke=${stroke} stroke-dasharray=${b.kind === 'FAILED' ? '3 2' : wait ? '4 3' : ''} />
      </g>`;
    })}
  </svg>`;
}

/** Stacked bars (one per x, stacked by key), e.g. cost per run by stage. */
export function StackedBars(props: { title: string; columns: { label: string; href?: string; parts: { key: string; value: number }[] }[]; unit: string }) {
  const keys = [...new Set(props.columns.flatMap((c) => c.parts.map((p) => p.key)))].sort();
  const max = Math.max(1e-9, ...props.columns.map((c) => c.parts.reduce((s, p) => s + p.value, 0)));
  const W = 900;
  const H = 220;
  const B = 30;
  const bw = Math.max(4, Math.min(40, (W - 60) / Math.max(1, props.columns.length) - 4));
  return html`<figure class="chart" data-testid="stacked-bars">
    <figcaption>${props.title}</figcaption>
    <svg viewBox=${`0 0 ${W} ${H + B}`} role="img" aria-label=${props.title}>
      <text x="0" y="12" class="tick">${max.toFixed(4)} ${props.unit}</text>
      ${props.columns.map((c, i) => {
        let y = H;
        return html`<g>
          ${c.parts
            .slice()
            .sort((a, b) => (a.key < b.key ? -1 : 1))
            .map((p) => {
              const h = (p.value / max) * (H - 20);
              y -= h;
              return html`<rect x=${60 + i * (bw + 4)} y=${y} width=${bw} height=${h} fill=${PALETTE[keys.indexOf(p.key) % PALETTE.length]}><title>${`${c.label} · ${p.key}: ${p.value.toFixed(4)} ${props.unit}`}</title></rect>`;
            })}
          <text x=${60 + i * (bw + 4) + bw / 2} y=${H + 16} text-anchor="middle" class="tick">${c.label}</text>
        </g>`;
      })}
    </svg>
    <ul class="legend">${keys.map((k, i) => html`<li><span class="swatch" style=${`background:${PALETTE[i % PALETTE.length]}`}></span>${k}</li>`)}</ul>
  </figure>`;
}
