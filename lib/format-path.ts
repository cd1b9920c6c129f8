/** A zod-style issue path as users write it: `stages[2].params.sparsity` (with a leading dot: `.params.x`). */
export function formatPath(p: readonly PropertyKey[], leadingDot = false): string {
  let out = '';
  for (const k of p) out += typeof k === 'number' ? `[${k}]` : `.${String(k)}`;
  return leadingDot ? out : out.replace(/^\./, '');
}
