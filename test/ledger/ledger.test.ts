import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../lib/db/migrate.js';
import type { Db } from '../../lib/db/types.js';
import { createLedgerService, type LedgerService } from '../../ledger/meter.js';
import { ledgerMigrations } from '../../ledger/migrations.js';
import { parsePriceSheet } from '../../ledger/price-sheet.js';
import { listEntries, pipelineTotals, runTotals, usageCount } from '../../ledger/repository.js';
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
    cpuSeconds: 100,
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
    expect(await migrate(db, ledgerMigrations)).toEqual([
      'ledger/0001-init',
      'ledger/0002-usage-keys',
      'ledger/0003-estimates-roi-watch',
      'ledger/0004-partial-usage',
    ]);
    expect(await migrate(db, ledgerMigrations)).toEqual([]);
    ledger = createLedgerService(db, { priceSheet: sheet });
  });
  afterAll(async () => t?.drop());

  /** A GPU attempt: held one GPU, used no CPU time worth pricing. */
  const onGpu: Partial<StageUsage> = { resource: 'gpu', gpuDevices: ['0'], cpuSeconds: 0 };

  /** A run with: prep 100 CPU-s (0.001), fit 2 attempts × 30 min on one GPU (3.60) + 1 GB kept (0.20). */
  async function meterTypicalRun(runId: string, l: LedgerService = ledger) {
    await l.recordUsage(usage(runId));
    await l.recordUsage(
      usage(runId, {
        ...onGpu,
        stageId: 'fit',
        plugin: 'core:multi-device-fit',
        attempt: 1,
        replica: 0,
        deviceSeconds: 1800,
        wallSeconds: 1800,
        succeeded: false,
      }),
    );
    await l.recordUsage(
      usage(runId, {
        ...onGpu,
        stageId: 'fit',
        plugin: 'core:multi-device-fit',
        attempt: 2,
        replica: 0,
        deviceSeconds: 1800,
        wallSeconds: 1800,
        bytesWritten: 1_000_000_000,
      }),
    );
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
    const u = usage(runId, { ...onGpu, stageId: 'fit', deviceSeconds: 3600 });
    await ledger.recordUsage(u);
    await ledger.recordUsage(u); // the activity recorded, crashed, and the retry records the same attempt again
    await ledger.recordUsage({ ...u, attempt: 2 }); // a real second attempt costs money too
    const booking = await ledger.bookRun({ runId, pipeline: 'mnist', stageId: 'ledger', revenue: { kind: 'contract', value: '10' } });
    expect(booking.cost).toBe('7.20');
    const rows = await db.query<{ n: number | string }>('SELECT COUNT(*) AS n FROM ledger_usage WHERE run_id = ?', [runId]);
    expect(Number(rows[0]?.n)).toBe(2);
  });

  it('keys usage by Temporal attempt: operator retries and resets are new lines, a repeat is not', async () => {
    const runId = run('keys');
    const base = usage(runId, { stageId: 'fit', cpuSeconds: 3600, workflowRunId: 'wf-run-1', activityId: 'stage:fit' });
    await ledger.recordUsage(base);
    await ledger.recordUsage(base); // the same attempt recorded again (flushed twice)
    await ledger.recordUsage({ ...base, activityId: 'stage:fit#1' }); // operator retry: round 1 restarts at attempt 1
    await ledger.recordUsage({ ...base, workflowRunId: 'wf-run-2' }); // reset: a new workflow run, attempt 1 again
    await ledger.recordUsage({ ...base, workflowRunId: 'wf-run-2', activityId: 'stage:fit:replica-0', replica: 0 });
    await ledger.recordUsage({ ...base, workflowRunId: 'wf-run-2', activityId: 'stage:fit:reduce' });
    const rows = await db.query<{ n: number | string }>('SELECT COUNT(*) AS n FROM ledger_usage WHERE run_id = ?', [runId]);
    expect(Number(rows[0]?.n)).toBe(5);
    const booking = await ledger.bookRun({ runId, pipeline: 'mnist', stageId: 'ledger', revenue: { kind: 'contract', value: '1' } });
    expect(booking.cost).toBe('0.18'); // 5 CPU-hours × 0.036
  });

  it('prices what was used: CPU time at the CPU rate, assigned GPUs at the GPU rate, whatever was declared', async () => {
    const runId = run('used');
    // multi-device fit declared gpu but ran as wasm processes on a CPU-only host: 2 CPU-hours, no GPU
    await ledger.recordUsage(usage(runId, { stageId: 'wasm-fit', resource: 'gpu', wallSeconds: 3600, deviceSeconds: 3600, cpuSeconds: 7200 }));
    // a stage declared cpu that was given two GPUs for half an hour: 1 GPU-hour
    await ledger.recordUsage(usage(runId, { stageId: 'gpu-fit', resource: 'cpu', gpuDevices: ['0', '1'], deviceSeconds: 1800, cpuSeconds: 0 }));
    await ledger.bookRun({ runId, pipeline: 'mnist', stageId: 'ledger', revenue: { kind: 'contract', value: '1' } });
    const amounts = Object.fromEntries(
      (await listEntries(db, runId)).filter((e) => e.kind === 'cost').map((e) => [`${e.stageId}/${e.category}`, [e.amountMicros, e.quantity, e.unit]]),
    );
    expect(amounts).toEqual({
      'wasm-fit/cpu': [72_000n, '2.0000000', 'cpu-hour'], // 2 h × 0.036
      'gpu-fit/gpu': [3_600_000n, '1.0000000', 'gpu-hour'], // 2 GPUs × 0.5 h × 3.60
    });
  });

  it('prices the bytes a stage keeps once: the largest any attempt measured', async () => {
    const runId = run('kept');
    await ledger.recordUsage(usage(runId, { stageId: 'fit', cpuSeconds: 0, attempt: 1, bytesWritten: 0, bytesKept: 400_000_000, succeeded: false }));
    await ledger.recordUsage(usage(runId, { stageId: 'fit', cpuSeconds: 0, attempt: 2, bytesWritten: 100_000_000, bytesKept: 1_000_000_000 }));
    await ledger.recordUsage(
      usage(runId, { stageId: 'fit', cpuSeconds: 0, attempt: 1, replica: 0, activityId: 'stage:fit:replica-0', bytesWritten: 0, bytesKept: 700_000_000 }),
    );
    const booking = await ledger.bookRun({ runId, pipeline: 'mnist', stageId: 'ledger', revenue: { kind: 'contract', value: '1' } });
    expect(booking.cost).toBe('0.20'); // 1 GB × 0.02 × 10 months
  });

  it('books usage that arrives after the run was booked, reconciling the difference', async () => {
    const runId = run('late');
    await meterTypicalRun(runId);
    const first = await ledger.bookRun({
      runId,
      pipeline: 'mnist',
      stageId: 'ledger',
      costs: [{ category: 'other', description: 'x', amount: '1' }],
      revenue: { kind: 'contract', value: '10' },
    });
    expect(first.cost).toBe('4.801');
    // a replica's usage flushed late from another worker's outbox: 1 more GPU-hour
    await ledger.recordUsage(usage(runId, { ...onGpu, stageId: 'fit', attempt: 1, replica: 1, deviceSeconds: 3600 }));
    expect((await runTotals(db, runId)).cost).toBe(8_401_000n); // + 3.60, declared cost kept
    // the ledger stage's own last attempt, recorded after it booked, is booked too: 10 CPU-hours
    await ledger.recordUsage(usage(runId, { stageId: 'ledger', cpuSeconds: 36_000 }));
    expect((await runTotals(db, runId)).cost).toBe(8_761_000n); // + 0.36
    const live = (await listEntries(db, runId)).filter((e) => e.category === 'gpu');
    expect(live.map((e) => e.amountMicros)).toEqual([3_600_000n, -3_600_000n, 7_200_000n]);
  });

  it('replaces usage written while an attempt runs by later records of it, never a final one', async () => {
    const runId = run('partial');
    const key = { stageId: 'fit', activityId: 'stage:fit', workflowRunId: 'wf-1' };
    await ledger.recordUsage(usage(runId, { ...key, cpuSeconds: 3600, wallSeconds: 10, partial: true }));
    await ledger.recordUsage(usage(runId, { ...key, cpuSeconds: 7200, wallSeconds: 20, partial: true }));
    await ledger.recordUsage(usage(runId, { ...key, cpuSeconds: 3600, wallSeconds: 10, partial: true })); // an older one, flushed late
    expect((await ledger.spend(runId)).total).toBe(72_000n); // 2 CPU-hours × 0.036, not 3 or 4
    await ledger.recordUsage(usage(runId, { ...key, cpuSeconds: 9000, wallSeconds: 25 })); // the final record
    await ledger.recordUsage(usage(runId, { ...key, cpuSeconds: 10_800, wallSeconds: 30, partial: true })); // a stray partial after it
    expect(await usageCount(db, runId)).toBe(1);
    expect((await ledger.spend(runId)).total).toBe(90_000n); // 2.5 CPU-hours
    const booking = await ledger.bookRun({ runId, pipeline: 'mnist', stageId: 'ledger', revenue: { kind: 'contract', value: '1' } });
    expect(booking.cost).toBe('0.09');
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
    await ledger.bookRun({
      runId,
      pipeline: 'mnist',
      stageId: 'ledger',
      costs: [{ category: 'other', description: 'x', amount: '1' }],
      revenue: { kind: 'contract', value: '10' },
    });
    // The replay sees a cheaper GPU price and no declared cost any more.
    const again = await ledger.bookRun({
      runId,
      pipeline: 'mnist',
      stageId: 'ledger',
      priceSheet: { compute: { gpuHour: '1.80' } },
      revenue: { kind: 'contract', value: '10' },
    });
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
            l.recordUsage(usage(runId, { ...onGpu, pipeline: 'conc', stageId: 'fit', attempt: a + 1, deviceSeconds: 3600 })),
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
