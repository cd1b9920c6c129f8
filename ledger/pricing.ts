import { divRound, formatScaled, parseMoney, type Micros } from './money.js';
import type { DeclaredCost, PriceSheet, RevenueModel } from './schemas.js';

/** Usage of one stage, summed over its attempts and replicas (integers), as priced. */
export interface UsageTotals {
  stageId: string;
  /** CPU time priced at the CPU rate (ms). */
  cpuMs: bigint;
  /** Device time of assigned GPUs × their count, priced at the GPU rate (ms). */
  gpuMs: bigint;
  wallMs: bigint;
  /** Bytes the run keeps for the stage (priced as storage). */
  bytesKept: bigint;
  attempts: number;
}

/** One priced line, before it is booked. */
export interface PricedLine {
  stageId: string;
  kind: 'cost' | 'expected_revenue';
  /** cpu | gpu | storage | a declared-cost category | contract | predictions */
  category: string;
  /** Distinguishes several lines of the same stage/kind/category (declared cost index). */
  discriminator?: string;
  amount: Micros;
  quantity: string;
  unit: string;
  unitPrice: string;
  description: string;
}

const MS_PER_HOUR = 3_600_000n;
const BYTES_PER_GB = 1_000_000_000n;

/**
 * Compute and storage lines for metered usage: per stage, CPU time at `cpuHour`, assigned-GPU
 * time at `gpuHour` (whatever the plugin declared), and the bytes it keeps at `gbMonth` ×
 * `retentionMonths`. Each line is rounded once, to the micro-unit.
 */
export function priceUsage(totals: UsageTotals[], sheet: PriceSheet): PricedLine[] {
  const lines: PricedLine[] = [];
  const storagePerGb = parseMoney(sheet.storage.gbMonth) * BigInt(sheet.storage.retentionMonths);
  for (const t of totals) {
    const compute: [resource: 'cpu' | 'gpu', ms: bigint, hourly: string, what: string][] = [
      ['cpu', t.cpuMs, sheet.compute.cpuHour, 'CPU time (worker and child processes)'],
      ['gpu', t.gpuMs, sheet.compute.gpuHour, 'time of the GPUs assigned'],
    ];
    for (const [resource, ms, hourly, what] of compute) {
      if (ms === 0n) continue;
      lines.push({
        stageId: t.stageId,
        kind: 'cost',
        category: resource,
        amount: divRound(ms * parseMoney(hourly), MS_PER_HOUR),
        // hours, exact to the millisecond (ms / 3.6e6 has at most 7 significant decimals; shown to 7)
        quantity: formatScaled(divRound(ms * 10_000_000n, MS_PER_HOUR), 7),
        unit: `${resource}-hour`,
        unitPrice: hourly,
        description: `${t.stageId}: ${t.attempts} attempt(s), ${what}`,
      });
    }
    if (t.bytesKept === 0n) continue;
    lines.push({
      stageId: t.stageId,
      kind: 'cost',
      category: 'storage',
      amount: divRound(t.bytesKept * storagePerGb, BYTES_PER_GB),
      quantity: formatScaled(t.bytesKept, 9),
      unit: 'GB',
      unitPrice: `${sheet.storage.gbMonth} per GB-month × ${sheet.storage.retentionMonths} months`,
      description: `${t.stageId}: bytes kept (outputs, checkpoints, rounds, exports), stored ${sheet.storage.retentionMonths} months`,
    });
  }
  return lines;
}

/** Declared (unmetered) costs, booked against the ledger stage. */
export function priceDeclared(costs: DeclaredCost[], ledgerStageId: string): PricedLine[] {
  return costs.map((c, i) => {
    if (c.amount !== undefined) {
      return {
        stageId: ledgerStageId,
        kind: 'cost',
        category: c.category,
        discriminator: String(i),
        amount: parseMoney(c.amount),
        quantity: '1',
        unit: 'item',
        unitPrice: c.amount,
        description: c.description,
      };
    }
    const hours = parseMoney(c.hours!);
    const rate = parseMoney(c.hourlyRate!);
    return {
      stageId: ledgerStageId,
      kind: 'cost',
      category: c.category,
      discriminator: String(i),
      amount: divRound(hours * rate, 1_000_000n),
      quantity: c.hours!,
      unit: 'hour',
      unitPrice: c.hourlyRate!,
      description: c.description,
    };
  });
}

/** The revenue the run's business case expects. */
export function priceExpectedRevenue(model: RevenueModel, ledgerStageId: string): PricedLine {
  if (model.kind === 'contract') {
    return {
      stageId: ledgerStageId,
      kind: 'expected_revenue',
      category: 'contract',
      amount: parseMoney(model.value),
      quantity: '1',
      unit: 'contract',
      unitPrice: model.value,
      description: model.description ?? `contract value${model.horizonDays ? ` over ${model.horizonDays} days` : ''}`,
    };
  }
  return {
    stageId: ledgerStageId,
    kind: 'expected_revenue',
    category: 'predictions',
    amount: predictionRevenue(BigInt(model.expectedPredictions), model.pricePer1000),
    quantity: String(model.expectedPredictions),
    unit: 'prediction',
    unitPrice: `${model.pricePer1000} per 1000`,
    description: model.description ?? `${model.expectedPredictions} predictions expected over ${model.horizonDays} days`,
  };
}

/** count × pricePer1000 / 1000, rounded to the micro-unit. */
export function predictionRevenue(count: bigint, pricePer1000: string): Micros {
  return divRound(count * parseMoney(pricePer1000), 1000n);
}

export type RoiResult = { roi: string; explanation: null } | { roi: null; explanation: string };

/** ROI = (R − C) / C as a decimal string with 4 places (a ratio: "0.2500" is 25 %); null when C is 0. */
export function computeRoi(revenue: Micros, cost: Micros): RoiResult {
  if (cost === 0n) {
    return { roi: null, explanation: 'cost is zero, so ROI = (R − C) / C is undefined: nothing was metered or declared' };
  }
  return { roi: formatScaled(divRound((revenue - cost) * 10_000n, cost), 4), explanation: null };
}
