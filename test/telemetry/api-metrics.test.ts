// The API's scrape-time metrics over a real ledger database (SQLite, and PostgreSQL when the tests
// have one): booked cost and realised revenue summed exactly by pipeline, resource and currency,
// the ROI watch state of each model; and a Temporal that cannot be reached: its metrics are left
// out (capstan_scrape_source_up says so), the rest is served, and it is asked once per cache window
// however often the scrape comes.
import { randomUUID } from 'node:crypto';
import type { Client } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiMetrics } from '../../app/api-metrics.js';
import { ledgerMigrations } from '../../ledger/migrations.js';
import { createLedgerService } from '../../ledger/meter.js';
import { parsePriceSheet } from '../../ledger/price-sheet.js';
import { migrate } from '../../lib/db/migrate.js';
import { silentLogger } from '../../lib/logger.js';
import { createMetricsRegistry, renderMetrics } from '../../lib/telemetry/metrics.js';
import { createTestDatabase, dialects, type TestDatabase } from '../ledger/dbs.js';
import { sample } from './prom-text.js';

const sheet = parsePriceSheet({ currency: 'EUR', compute: { cpuHour: '0.05', gpuHour: '2.00' }, storage: { gbMonth: '0.02', retentionMonths: 1 } });

/** A Temporal client whose every call fails as an unreachable server's would, counting the calls. */
function unreachableClient(): { client: Client; calls: () => number } {
  let n = 0;
  const fail = () => {
    n++;
    throw new Error('14 UNAVAILABLE: connection refused');
  };
  const client = {
    workflow: {
      list: () => ({
        [Symbol.asyncIterator]: () => ({ next: async () => fail() }),
      }),
      count: async () => fail(),
      getHandle: () => ({ query: async () => fail() }),
    },
  } as unknown as Client;
  return { client, calls: () => n };
}

describe.each(dialects)('API metrics read at scrape time, on %s', (dialect) => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await createTestDatabase(dialect);
    await migrate(t.db, ledgerMigrations);
  });
  afterAll(async () => t?.drop());

  it('sums booked cost and realised revenue exactly, reports ROI watches, and survives an unreachable Temporal', async () => {
    const pipeline = `m-${randomUUID().slice(0, 8)}`;
    const ledger = createLedgerService(t.db, { priceSheet: sheet });
    for (const [i, hours] of [
      ['a', '1'],
      ['b', '2'],
    ] as const) {
      await ledger.bookRun({
        runId: `pipeline/${pipeline}/${i}`,
        pipeline,
        stageId: 'roi',
        costs: [{ category: 'people', description: 'review', hours, hourlyRate: '0.9895' }],
        revenue: { kind: 'contract', value: '4.00' },
      });
    }
    await t.db.run('INSERT INTO roi_watch_state (model, version, run_id, below, crossings, last_roi, checked_at) VALUES (?, ?, ?, ?, ?, ?, ?)', [
      'watched',
      '1',
      `pipeline/${pipeline}/a`,
      1,
      1,
      '-0.5052',
      '2026-01-01T00:00:00.000Z',
    ]);
    await t.db.run('INSERT INTO roi_watch_state (model, version, run_id, below, crossings, last_roi, checked_at) VALUES (?, ?, ?, ?, ?, ?, ?)', [
      'watched',
      '2',
      `pipeline/${pipeline}/b`,
      0,
      0,
      '0.7500',
      '2026-01-02T00:00:00.000Z',
    ]);

    const registry = createMetricsRegistry();
    const temporal = unreachableClient();
    const m = createApiMetrics({
      registry,
      client: temporal.client,
      taskQueues: { workflows: 'q', cpu: 'q-cpu', gpu: 'q-gpu' },
      db: t.db,
      logger: silentLogger,
      cacheMs: 60_000,
    });
    m.predicted('watched', 2, 3, 0.004);
    const first = (await renderMetrics(registry)).body;
    // 1 h + 2 h at 0.9895 EUR: 2.9685 EUR, exactly.
    expect(sample(first, 'capstan_ledger_cost_total', { pipeline, resource: 'people', currency: 'EUR' })).toBe(2.9685);
    expect(sample(first, 'capstan_roi_watch_below', { model: 'watched' })).toBe(0);
    expect(sample(first, 'capstan_roi_realised', { model: 'watched' })).toBe(0.75);
    expect(sample(first, 'capstan_predictions_total', { model: 'watched', version: '2' })).toBe(3);
    expect(sample(first, 'capstan_prediction_duration_seconds_count', { model: 'watched', version: '2' })).toBe(1);
    // Temporal's metrics are left out, and the scrape says why.
    expect(sample(first, 'capstan_scrape_source_up', { source: 'temporal' })).toBe(0);
    expect(sample(first, 'capstan_scrape_source_up', { source: 'ledger' })).toBe(1);
    expect(first).not.toMatch(/^capstan_runs\{/m);
    const calls = temporal.calls();
    expect(calls).toBeGreaterThan(0);
    // Scraped again within the cache window: Temporal is not asked again.
    await renderMetrics(registry);
    await renderMetrics(registry);
    expect(temporal.calls()).toBe(calls);
  });
});
