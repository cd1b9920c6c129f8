/** Small scalar metrics only: drops undefined, NaN and Infinity, rounds floats to 6 significant digits. */
export function cleanMetrics(m: Record<string, number | string | boolean | undefined>): Record<string, number | string | boolean> {
  const out: Record<string, number | string | boolean> = {};
  for (const [k, v] of Object.entries(m)) {
    if (v === undefined) continue;
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) continue;
      out[k] = Number.isInteger(v) ? v : Number(v.toPrecision(6));
    } else out[k] = v;
  }
  return out;
}
