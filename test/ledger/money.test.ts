import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { divRound, formatMoney, formatMoneyExact, parseMoney } from '../../ledger/money.js';
import { mergePriceSheet, parsePriceSheet } from '../../ledger/price-sheet.js';
import { computeRoi, predictionRevenue, priceDeclared, priceExpectedRevenue, priceUsage } from '../../ledger/pricing.js';
import { priceSheetSchema } from '../../ledger/schemas.js';
import { roiLedgerParamsSchema } from '../../plugins/core/roi-ledger/index.js';

const sheet = parsePriceSheet({ currency: 'USD', compute: { cpuHour: '0.0425', gpuHour: '2.48' }, storage: { gbMonth: '0.023', retentionMonths: 12 } });

describe('money', () => {
  it('parses and prints decimals exactly', () => {
    expect(parseMoney('12.34')).toBe(12_340_000n);
    expect(parseMoney('0.000001')).toBe(1n);
    expect(parseMoney(0.1)).toBe(100_000n);
    expect(parseMoney('-3')).toBe(-3_000_000n);
    expect(() => parseMoney('0.0000001')).toThrow(/more than 6 decimal places/);
    expect(() => parseMoney('1e3')).toThrow(/not a decimal/);
    expect(() => parseMoney(1e-7)).toThrow(/decimal strings/);
    expect(formatMoneyExact(12_340_000n)).toBe('12.34');
    expect(formatMoneyExact(1n)).toBe('0.000001');
    expect(formatMoneyExact(-1_500_000n)).toBe('-1.50');
    expect(formatMoney(1_234_567n)).toBe('1.23');
    expect(formatMoney(1_235_000n)).toBe('1.24');
    expect(formatMoney(-1_235_000n)).toBe('-1.24');
  });

  it('does what floats cannot: 0.1 + 0.2 = 0.3', () => {
    expect(formatMoneyExact(parseMoney('0.1') + parseMoney('0.2'))).toBe('0.30');
    let total = 0n;
    for (let i = 0; i < 1000; i++) total += parseMoney('0.01');
    expect(formatMoneyExact(total)).toBe('10.00');
  });

  it('rounds half away from zero', () => {
    expect(divRound(5n, 2n)).toBe(3n);
    expect(divRound(-5n, 2n)).toBe(-3n);
    expect(divRound(4n, 3n)).toBe(1n);
  });
});

describe('pricing', () => {
  it('prices CPU time and assigned-GPU time per hour and kept bytes per GB-month, to the micro-unit', () => {
    const lines = priceUsage(
      [
        // a fit that held GPUs: 1.5 GPU-hours plus 20 min of CPU time
        { stageId: 'fit', cpuMs: 1_200_000n, gpuMs: 5_400_000n, wallMs: 0n, bytesKept: 2_000_000_000n, attempts: 2 },
        { stageId: 'prep', cpuMs: 1_000n, gpuMs: 0n, wallMs: 0n, bytesKept: 0n, attempts: 1 },
        // a multi-device fit on a CPU-only host: declared gpu, held none — CPU rate only
        { stageId: 'wasm-fit', cpuMs: 3_600_000n, gpuMs: 0n, wallMs: 3_600_000n, bytesKept: 0n, attempts: 1 },
      ],
      sheet,
    );
    const byKey = Object.fromEntries(lines.map((l) => [`${l.stageId}/${l.category}`, l]));
    expect(byKey['fit/gpu']?.amount).toBe(3_720_000n); // 1.5 h × 2.48
    expect(byKey['fit/gpu']?.quantity).toBe('1.5000000');
    expect(byKey['fit/cpu']?.amount).toBe(14_167n); // 1/3 h × 0.0425 = 0.0141666… → 0.014167
    expect(byKey['prep/cpu']?.amount).toBe(12n); // 1 s × 0.0425/3600 = 0.0000118 → 0.000012
    expect(byKey['fit/storage']?.amount).toBe(552_000n); // 2 GB × 0.023 × 12
    expect(byKey['prep/storage']).toBeUndefined();
    expect(byKey['prep/gpu']).toBeUndefined();
    expect(byKey['wasm-fit/gpu']).toBeUndefined();
    expect(byKey['wasm-fit/cpu']?.amount).toBe(42_500n); // 1 CPU-hour × 0.0425
  });

  it('prices declared costs and revenue models', () => {
    const [fixed, people] = priceDeclared(
      [
        { category: 'data-acquisition', description: 'dataset licence', amount: '1500.00' },
        { category: 'people', description: 'ML engineer', hours: '7.5', hourlyRate: '85.10' },
      ],
      'ledger',
    );
    expect(fixed?.amount).toBe(1_500_000_000n);
    expect(people?.amount).toBe(638_250_000n);
    expect(priceExpectedRevenue({ kind: 'contract', value: '5000' }, 'ledger').amount).toBe(5_000_000_000n);
    expect(priceExpectedRevenue({ kind: 'per-prediction', pricePer1000: '0.40', expectedPredictions: 2_500_000, horizonDays: 90 }, 'ledger').amount).toBe(
      1_000_000_000n,
    );
    expect(predictionRevenue(1n, '0.0004')).toBe(0n); // 0.4 micros rounds to 0
    expect(predictionRevenue(1n, '0.0005')).toBe(1n); // 0.5 micros rounds up
    expect(predictionRevenue(3n, '0.50')).toBe(1_500n);
  });

  it('computes ROI = (R − C) / C to 4 places, and refuses C = 0', () => {
    expect(computeRoi(1_500n, 1_000n)).toEqual({ roi: '0.5000', explanation: null });
    expect(computeRoi(0n, 1_000n).roi).toBe('-1.0000');
    expect(computeRoi(1_000n, 3_000n).roi).toBe('-0.6667');
    expect(computeRoi(10_000n, 3n).roi).toBe('3332.3333');
    const zero = computeRoi(5n, 0n);
    expect(zero.roi).toBeNull();
    expect(zero.explanation).toMatch(/cost is zero/);
  });
});

describe('price sheet', () => {
  it('ships a valid default price sheet', () => {
    const file = JSON.parse(readFileSync(new URL('../../config/price-sheet.json', import.meta.url), 'utf8'));
    expect(priceSheetSchema.parse(file).currency).toBe('USD');
  });

  it('rejects a bad price sheet, naming the field', () => {
    expect(() => parsePriceSheet({ currency: 'USD', compute: { cpuHour: 'cheap', gpuHour: '2' }, storage: { gbMonth: '0.02', retentionMonths: 1 } })).toThrow(
      /priceSheet\.compute\.cpuHour: must be a non-negative decimal amount.*"cheap"/,
    );
    expect(() => parsePriceSheet({ currency: 'usd', compute: { cpuHour: '1', gpuHour: '2' }, storage: { gbMonth: '0.02', retentionMonths: 1 } })).toThrow(
      /priceSheet\.currency/,
    );
    expect(() => mergePriceSheet(sheet, { compute: { gpuHour: '-1' } })).toThrow(/priceSheet\.compute\.gpuHour:.*negative/);
    expect(() => mergePriceSheet(sheet, { storage: { retentionMonths: 1.5 } })).toThrow(/priceSheet\.storage\.retentionMonths/);
    expect(() => mergePriceSheet(sheet, { compute: { cpuHours: '1' } } as never)).toThrow(/priceSheet\.compute.*cpuHours/);
    try {
      parsePriceSheet({ currency: 'USD', compute: { cpuHour: 'x', gpuHour: '2' }, storage: { gbMonth: '0.02', retentionMonths: 1 } });
    } catch (err) {
      expect((err as { type: string; retryable: boolean }).type).toBe('PRICE_SHEET_INVALID');
      expect((err as { retryable: boolean }).retryable).toBe(false);
    }
  });

  it('merges a partial override over the configured sheet', () => {
    const merged = mergePriceSheet(sheet, { compute: { gpuHour: '1.10' } });
    expect(merged.compute).toEqual({ cpuHour: '0.0425', gpuHour: '1.10' });
    expect(merged.storage).toEqual(sheet.storage);
  });

  it('validates the ledger stage params at spec time, naming the path', () => {
    const bad = roiLedgerParamsSchema.safeParse({ priceSheet: { compute: { gpuHour: 'lots' } }, revenue: { kind: 'contract', value: '10' } });
    expect(bad.success).toBe(false);
    expect(bad.error?.issues[0]?.path).toEqual(['priceSheet', 'compute', 'gpuHour']);
    const noRevenue = roiLedgerParamsSchema.safeParse({});
    expect(noRevenue.error?.issues[0]?.path).toEqual(['revenue']);
    const cost = roiLedgerParamsSchema.safeParse({ costs: [{ category: 'people', description: 'x', hours: '2' }], revenue: { kind: 'contract', value: '1' } });
    expect(cost.error?.issues[0]?.path).toEqual(['costs', 0, 'hourlyRate']);
  });
});
