import type { Db } from '../lib/db/types.js';
import type { Micros } from './money.js';
import { priceUsage } from './pricing.js';
import { usageTotals } from './repository.js';
import type { PriceSheet } from './schemas.js';

/** What a run has spent so far: its metered usage (every attempt, failed ones included), priced now. */
export interface RunSpend {
  currency: string;
  total: Micros;
  byStage: Record<string, Micros>;
}

/**
 * Prices a run's usage so far with `sheet`, the same way its booking will (per stage: CPU time,
 * assigned-GPU time, bytes kept), without booking anything. Budgets compare against it.
 */
export async function runSpend(db: Db, runId: string, sheet: PriceSheet): Promise<RunSpend> {
  const lines = priceUsage(await usageTotals(db, runId), sheet);
  const byStage: Record<string, Micros> = {};
  let total = 0n;
  for (const l of lines) {
    byStage[l.stageId] = (byStage[l.stageId] ?? 0n) + l.amount;
    total += l.amount;
  }
  return { currency: sheet.currency, total, byStage };
}
