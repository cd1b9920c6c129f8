import { readFile } from 'node:fs/promises';
import type { z } from 'zod';
import { badInput } from '../lib/errors.js';
import { priceSheetOverrideSchema, priceSheetSchema, type PriceSheet, type PriceSheetOverride } from './schemas.js';

/** "priceSheet.compute.cpuHour: must be …; priceSheet.currency: …" — every bad field named. */
export function describeIssues(error: z.ZodError, root: string): string {
  return error.issues
    .map((i) => {
      const path = [root, ...i.path.map(String)].filter(Boolean).join('.');
      const keys = i.code === 'unrecognized_keys' ? ` (${(i as { keys: string[] }).keys.join(', ')})` : '';
      return `${path || '(root)'}: ${i.message}${keys}`;
    })
    .join('; ');
}

/** Validates a complete price sheet; throws a non-retryable PRICE_SHEET_INVALID error naming each bad field. */
export function parsePriceSheet(input: unknown, where = 'priceSheet'): PriceSheet {
  const r = priceSheetSchema.safeParse(input);
  if (!r.success) throw badInput(`invalid price sheet: ${describeIssues(r.error, where)}`, 'PRICE_SHEET_INVALID');
  return r.data;
}

/** The configured sheet with a pipeline's partial override applied, validated as a whole. */
export function mergePriceSheet(base: PriceSheet, override: PriceSheetOverride | undefined, where = 'priceSheet'): PriceSheet {
  if (!override) return base;
  const o = priceSheetOverrideSchema.safeParse(override);
  if (!o.success) throw badInput(`invalid price sheet: ${describeIssues(o.error, where)}`, 'PRICE_SHEET_INVALID');
  return parsePriceSheet(
    {
      currency: o.data.currency ?? base.currency,
      compute: { ...base.compute, ...stripUndefined(o.data.compute ?? {}) },
      storage: { ...base.storage, ...stripUndefined(o.data.storage ?? {}) },
    },
    where,
  );
}

/** Reads and validates a price sheet JSON file (e.g. config/price-sheet.json). */
export async function loadPriceSheet(path: string): Promise<PriceSheet> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw badInput(`cannot read price sheet ${path}: ${(err as Error).message}`, 'PRICE_SHEET_INVALID');
  }
  return parsePriceSheet(raw, path);
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
