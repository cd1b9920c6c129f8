import { divRound, formatScaled, parseMoney, type Micros } from './money.js';
import type { DeclaredCost, PriceSheet, RevenueModel } from './schemas.js';

/** Usage of one stage on one resource class, summed over its attempts and replicas (integers). */
export interface UsageTotals {
  stageId: string;
  resource: 'cpu' | 'gpu';
  deviceMs: bigint;
  cpuMs: bigint;
  wallMs: bigint;
  bytesWritten: bigint;
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

/** Compute and storage lines for metered usage. Each line is rounded once, to the micro-unit. */
export function priceUsage(totals: UsageTotals[], sheet: PriceSheet): PricedLine[] {
  const lines: PricedLine[] = [];
  const storagePerGb = parseMoney(sheet.storage.gbMonth) * BigInt(sheet.storage.retentionMonths);
  const bytesByStage = new Map<string, bigint>();
  for (const t of totals) {
    const hourly = t.resource === 'gpu' ? sheet.compute.gpuHour : sheet.compute.cpuHour;
    lines.push({
      stageId: t.stageId,
      kind: 'cost',
      category: t.resource,
      amount: divRound(t.deviceMs * parseMoney(hourly), MS_PER_HOUR),
      // device-hours, exact to the millisecond (ms / 3.6e6 has at most 7 significant decimals; shown to 7)
      quantity: formatScaled(divRound(t.deviceMs * 10_000_000n, MS_PER_HOUR), 7),
      unit: `${t.resource}-hour`,
      unitPrice: hourly,
      description: `${t.stageId}: ${t.attempts} attempt(s), ${t.resource.toUpperCase()} device time`,
    });
    bytesByStage.set(t.stageId, (bytesByStage.get(t.stageId) ?? 0n) + t.bytesWritten);
  }
  for (const [stageId, bytes] of bytesByStage) {
    if (bytes === 0n) continue;
    lines.push({
      stageId,
      kind: 'cost',
      category: 'storage',
      amount: divRound(bytes * storagePerGb, BYTES_PER_GB),
      quantity: formatScaled(bytes, 9),
      unit: 'GB',
      unitPrice: `${sheet.storage.gbMonth} per GB-month × ${sheet.storage.retentionMonths} months`,
      description: `${stageId}: artifacts written, stored ${sheet.storage.retentionMonths} months`,
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
