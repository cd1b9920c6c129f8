// Formatting and the colour-blind-safe palette (Okabe–Ito) every page uses.

export const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#D55E00', '#CC79A7', '#56B4E9', '#F0E442', '#000000'];

export const OUTCOME_COLOUR: Record<string, string> = {
  SUCCEEDED: '#009E73',
  FAILED: '#D55E00',
  RUNNING: '#0072B2',
  CANCELLED: '#7f7f7f',
  PAUSED: '#E69F00',
};

export function duration(from?: string | null, to?: string | null): string {
  if (!from) return '—';
  const ms = (to ? Date.parse(to) : Date.now()) - Date.parse(from);
  if (!Number.isFinite(ms) || ms < 0) return '—';
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function when(iso?: string | null): string {
  if (!iso) return '—';
  const d = new Date(iso);
  return `${d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' })} ${d.toLocaleTimeString(undefined, { hour12: false })}`;
}

export function bytes(n?: number | null): string {
  if (n === null || n === undefined) return '—';
  if (n < 1024) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = -1;
  do {
    v /= 1024;
    u++;
  } while (v >= 1024 && u < units.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

export function pct(n?: number | null, digits = 1): string {
  return n === null || n === undefined ? '—' : `${(n * 100).toFixed(digits)} %`;
}

export function roi(r?: string | null): string {
  return r === null || r === undefined ? '—' : `${(Number(r) * 100).toFixed(1)} %`;
}

export function money(amount?: string | null, currency?: string | null): string {
  if (amount === null || amount === undefined) return '—';
  const n = Number(amount);
  return `${n.toFixed(Math.abs(n) < 1 ? 4 : 2)}${currency ? ` ${currency}` : ''}`;
}

export function runHref(id: string): string {
  return `#/runs/${encodeURIComponent(id)}`;
}
