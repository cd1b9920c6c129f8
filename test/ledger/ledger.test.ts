import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../lib/db/migrate.js';
import type { Db } from '../../lib/db/types.js';
import { createLedgerService, type LedgerService } from '../../ledger/meter.js';
import { ledgerMigrations } from '../../ledger/migrations.js';
import { parsePriceSheet } from '../../ledger/price-sheet.js';
import { listEntries, pipelineTotals, runTotals } from '../../ledger/repository.js';
import type { StageUsage } from '../../ledger/schemas.js';
import { roiLedgerStage } from '../../plugins/core/roi-ledger/index.js';
import type { StageServices } from '../../plugins/services.js';
import { makeContext, tmpStore } from '../ml/helpers.js';
import { createTestDatabase, dialects, type TestDatabase } from './dbs.js';

const sheet = parsePriceSheet({ currency: 'USD', compute: { cpuHour: '0.036', gpuHour: '3.60' }, storage: { gbMonth: '0.02', retentionMonths: 10 } });

function usage(runId: string, over: Partial<StageUsage> = {}): StageUsage {
  return {
    runId,
    pipeline: 'mnist',
    stageId: 'prep',
    plugin: 'core:data-prep',
    attempt: 1,
    resource: 'cpu',
    wallSeconds: 100,
    cpuSeconds: 90,
    deviceSeconds: 100,
    bytesWritten: 0,
    succeeded: true,
    ...over,
  };
}

const run = (label: string) => `pipeline/mnist/${label}-${randomUUID().slice(0, 8)}`;

describe.each(dialects)('ledger on %s', (dialect) => {
  let t: TestDatabase;
  let db: Db;
  let ledger: LedgerService;

  beforeAll(async () => {
    t = await createTestDatabase(dialect);
    db = t.db;
    expect(await migrate(db, ledgerMigrations)).toEqual(['ledger/0001-init']);
    expect(await migrate(db, ledgerMigrations)).toEqual([]);
    ledger = createLedgerService(db, { priceSheet: sheet });
  });
  afterAll(async () => t?.drop());

  /** A run with: prep cpu 100 s (0.001), fit gpu 2 attempts × 30 min (3.60) + 1 GB (0.20). */
  async function meterTypicalRun(runId: string, l: LedgerService = ledger) {
    await l.recordUsage(usage(runId));
    await l.recordUsage(usage(runId, { stageId: 'fit', plugin: 'core:multi-device-fit', resource: 'gpu', attempt: 1, replica: 0, deviceSeconds: 1800, wallSeconds: 1800, succeeded: false }));
    await l.recordUsage(usage(runId, { stageId: 'fit', plugin: 'core:multi-device-fit', resource: 'gpu', attempt: 2, replica: 0, deviceSeconds: 1800, wallSeconds: 1800, bytesWritten: 1_000_000_000 }));
  }

  it('books exact sums, per stage and resource, and computes ROI', async () => {
    const runId = run('sums');
    await meterTypicalRun(runId);
    const booking = await ledger.bookRun({
      runId,
      pipeline: 'mnist',
      stageId: 'ledger',
      costs: [
        { category: 'labelling', description: 'labels', amount: '0.10' },
        { category: 'people', description: 'review', hours: '0.5', hourlyRate: '0.0002' },
      ],
      revenue: { kind: 'contract', value: '7.8021' },
    });
    // 0.001 + 3.60 + 0.20 + 0.10 + 0.0001 = 3.9011; ROI = (7.8021 − 3.9011) / 3.9011 = 1
    expect(booking).toMatchObject({ currency: 'USD', cost: '3.9011', expectedRevenue: '7.8021', realisedRevenue: '0.00', roi: '1.0000', booked: 6 });
    const entries = await listEntries(db, runId);
    const amounts = Object.fromEntries(entries.map((e) => [`${e.stageId}/${e.kind}/${e.category}`, e.amountMicros]));
    expect(amounts).toEqual({
      'prep/cost/cpu': 1_000n,
      'fit/cost/gpu': 3_600_000n,
      'fit/cost/storage': 200_000n,
      'ledger/cost/labelling': 100_000n,
      'ledger/cost/people': 100n,
      'ledger/expected_revenue/contract': 7_802_100n,
    });
    const totals = await runTotals(db, runId);
    expect(totals.cost).toBe(3_901_100n);
  });

  it('books a retried stage once: recording the same attempt twice is a no-op', async () => {
    const runId = run('retry');
    const u = usage(runId, { stageId: 'fit', resource: 'gpu', deviceSeconds: 3600 });
    await ledger.recordUsage(u);
    await ledger.recordUsage(u); // the activity recorded, crashed, and the retry records the same attempt again
    await ledger.recordUsage({ ...u, attempt: 2 }); // a real second attempt costs money too
    const booking = await ledger.bookRun({ runId, pipeline: 'mnist', stageId: 'ledger', revenue: { kind: 'contract', value: '10' } });
    expect(booking.cost).toBe('7.20');
    const rows = await db.query<{ n: number | string }>('SELECT COUNT(*) AS n FROM ledger_usage WHERE run_id = ?', [runId]);
    expect(Number(rows[0]?.n)).toBe(2);
  });

  it('books a replayed ledger stage once', async () => {
    const runId = run('replay');
    await meterTypicalRun(runId);
    const input = { runId, pipeline: 'mnist', stageId: 'ledger', revenue: { kind: 'contract' as const, value: '10' } };
    const first = await ledger.bookRun(input);
    const second = await ledger.bookRun(input);
    const third = await Promise.all([ledger.bookRun(input), ledger.bookRun(input)]);
    expect(second).toEqual({ ...first, booked: 0, unchanged: first.booked });
    for (const r of third) expect(r.cost).toBe(first.cost);
    expect((await listEntries(db, runId)).length).toBe(first.booked);
  });

  it('corrects with reversing entries, never updates or deletes', async () => {
    const runId = run('correct');
    await meterTypicalRun(runId);
    await ledger.bookRun({ runId, pipeline: 'mnist', stageId: 'ledger', costs: [{ category: 'other', description: 'x', amount: '1' }], revenue: { kind: 'contract', value: '10' } });
    // The replay sees a cheaper GPU price and no declared cost any more.
    const again = await ledger.bookRun({ runId, pipeline: 'mnist', stageId: 'ledger', priceSheet: { compute: { gpuHour: '1.80' } }, revenue: { kind: 'contract', value: '10' } });
    expect(again).toMatchObject({ cost: '2.001', booked: 1, reversed: 2 });
    const entries = await listEntries(db, runId);
    const reversals = entries.filter((e) => e.reverses !== null);
    expect(reversals.map((r) => [r.category, r.amountMicros]).sort()).toEqual([
      ['gpu', -3_600_000n],
      ['other', -1_000_000n],
    ]);
    expect((await runTotals(db, runId)).cost).toBe(2_001_000n);
    await expect(db.run('UPDATE ledger_entries SET amount_micros = 0 WHERE run_id = ?', [runId])).rejects.toThrow(/append-only/);
    await expect(db.run('DELETE FROM ledger_entries WHERE run_id = ?', [runId])).rejects.toThrow(/append-only/);
  });

  it('refuses to compute ROI on zero cost, booking nothing', async () => {
    const runId = run('zero');
    await expect(ledger.bookRun({ runId, pipeline: 'mnist', stageId: 'ledger', revenue: { kind: 'contract', value: '10' } })).rejects.toMatchObject({
      type: 'LEDGER_ZERO_COST',
      retryable: false,
      message: expect.stringMatching(/total cost is 0 USD.*no stage usage was metered.*C > 0/),
    });
    expect(await listEntries(db, runId)).toEqual([]);
  });

  it('keeps concurrent runs apart', async () => {
    const others = await Promise.all([t.open(), t.open(), t.open()]);
    const services = [ledger, ...others.map((d) => createLedgerService(d, { priceSheet: sheet }))];
    const runs = Array.from({ length: 8 }, (_, i) => ({ runId: run(`conc${i}`), hours: i + 1 }));
    await Promise.all(
      runs.map(async ({ runId, hours }, i) => {
        const l = services[i % services.length]!;
        await Promise.all(
          Array.from({ length: hours }, (_, a) =>
            l.recordUsage(usage(runId, { pipeline: 'conc', stageId: 'fit', resource: 'gpu', attempt: a + 1, deviceSeconds: 3600 })),
          ),
        );
        await Promise.all([
          l.bookRun({ runId, pipeline: 'conc', stageId: 'ledger', revenue: { kind: 'contract', value: '100' } }),
          l.bookRun({ runId, pipeline: 'conc', stageId: 'ledger', revenue: { kind: 'contract', value: '100' } }),
        ]);
      }),
    );
    for (const { runId, hours } of runs) {
      const entries = await listEntries(db, runId);
      expect(entries.every((e) => e.runId === runId)).toBe(true);
      expect(entries.length).toBe(2);
      expect((await runTotals(db, runId)).cost).toBe(BigInt(hours) * 3_600_000n);
    }
    const p = await pipelineTotals(db, { pipeline: 'conc' });
    expect(p.runs).toBe(8);
    expect(p.cost).toBe(36n * 3_600_000n);
    expect(p.expectedRevenue).toBe(800_000_000n);
  });

  it('books served predictions as realised revenue once, before or after the ledger stage', async () => {
    const runId = run('pred');
    await meterTypicalRun(runId);
    const revenue = { kind: 'per-prediction' as const, pricePer1000: '0.50', expectedPredictions: 20_000, horizonDays: 30 };
    await ledger.recordPredictions({ model: 'mnist', version: 1, runId, count: 1000, key: 'srv/1', at: '2030-01-01T00:00:00Z' });
    const booking = await ledger.bookRun({ runId, pipeline: 'mnist-pred', stageId: 'ledger', revenue });
    expect(booking).toMatchObject({ expectedRevenue: '10.00', realisedRevenue: '0.50' });
    await ledger.recordPredictions({ model: 'mnist', version: 1, runId, count: 3000, key: 'srv/2' });
    await ledger.recordPredictions({ model: 'mnist', version: 1, runId, count: 3000, key: 'srv/2' }); // retried flush
    await ledger.bookRun({ runId, pipeline: 'mnist-pred', stageId: 'ledger', revenue }); // replay
    const totals = await runTotals(db, runId);
    expect(totals.realisedRevenue).toBe(2_000_000n);
    expect(totals.expectedRevenue).toBe(10_000_000n);
    const realised = (await listEntries(db, runId)).filter((e) => e.kind === 'realised_revenue');
    expect(realised.map((e) => e.amountMicros)).toEqual([500_000n, 1_500_000n]);
    expect(realised[0]?.occurredAt).toBe('2030-01-01T00:00:00.000Z');
    const window = await pipelineTotals(db, { pipeline: 'mnist-pred', from: '2030-01-01T00:00:00.000Z', to: '2030-01-02T00:00:00.000Z' });
    expect(window.realisedRevenue).toBe(500_000n);
    expect(window.cost).toBe(0n);
  });

  it('runs as the core:roi-ledger stage', async () => {
    const runId = run('stage');
    await meterTypicalRun(runId);
    const stage = roiLedgerStage();
    const params = stage.paramsSchema.parse({ revenue: { kind: 'contract', value: 7.602 } });
    const { store, cleanup } = await tmpStore();
    try {
      const ctx = makeContext({ store, runId, pipeline: 'mnist', stageId: 'roi', services: { ledger } as StageServices });
      const result = await stage.run(ctx, params, {});
      expect(result.metrics).toMatchObject({ currency: 'USD', cost: '3.801', revenue: '7.602', roi: '1.0000' });
    } finally {
      await cleanup();
    }
    // The ledger is a required, typed service: a worker wired without it does not compile
    // (it used to fail at run time with 'stage needs the "ledger" service').
    // @ts-expect-error ledger is missing
    const withoutLedger: StageServices = { models: {} as StageServices['models'] };
    expect(withoutLedger).toBeDefined();
  });
});
