import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../lib/db/migrate.js';
import type { Db } from '../../lib/db/types.js';
import { createLedgerService } from '../../ledger/meter.js';
import { ledgerMigrations } from '../../ledger/migrations.js';
import { parsePriceSheet } from '../../ledger/price-sheet.js';
import { checkRoiWatches, listRoiAlerts, saveRoiWatch } from '../../ledger/roi-watch.js';
import { registryMigrations } from '../../serving/registry.js';
import { createTestDatabase, dialects, type TestDatabase } from './dbs.js';

const HOUR = 3_600_000;

describe.each(dialects)('realised-ROI watch on %s', (dialect) => {
  let t: TestDatabase;
  let db: Db;
  beforeAll(async () => {
    t = await createTestDatabase(dialect);
    db = t.db;
    await migrate(db, [...ledgerMigrations, ...registryMigrations]);
  });
  afterAll(async () => t?.drop());

  it('judges a version over a sliding window once it is a window old, counts each crossing once, and re-arms above the threshold', async () => {
    const t0 = Date.parse('2030-01-01T00:00:00.000Z');
    const at = (ms: number) => new Date(t0 + ms);
    const ledger = createLedgerService(db, {
      priceSheet: parsePriceSheet({ currency: 'USD', compute: { cpuHour: '1', gpuHour: '2' }, storage: { gbMonth: '1', retentionMonths: 1 } }),
      now: () => at(0),
    });
    const runId = 'pipeline/watched/aaaaa';
    // C = 1 CPU-hour at 1.00; revenue 1.00 per prediction over a 1-day horizon, so a 1 h window's
    // cost share is 1/24 ≈ 0.041667 and one prediction in the window is ROI (1 − 1/24) / (1/24) = 23.
    await ledger.recordUsage({
      runId,
      pipeline: 'watched',
      stageId: 'train',
      plugin: 'p',
      attempt: 1,
      resource: 'cpu',
      wallSeconds: 3600,
      cpuSeconds: 3600,
      deviceSeconds: 3600,
      bytesWritten: 0,
      succeeded: true,
    });
    await ledger.bookRun({
      runId,
      pipeline: 'watched',
      stageId: 'ledger',
      revenue: { kind: 'per-prediction', pricePer1000: '1000', expectedPredictions: 10, horizonDays: 1 },
    });
    await db.run(
      `INSERT INTO model_versions (model, version, run_id, stage_id, artifact_uri, sha256, bytes, metrics, created_at) VALUES ('m', 1, ?, 'deploy', 'artifact:x', 'x', 1, '{}', ?)`,
      [runId, at(0).toISOString()],
    );
    await saveRoiWatch(db, { runId, pipeline: 'watched', minRealisedRoi: '0', windowMs: HOUR });
    await saveRoiWatch(db, { runId, pipeline: 'watched', minRealisedRoi: '9', windowMs: 1 }); // a second save changes nothing

    const serve = (ms: number, key: string) => ledger.recordPredictions({ model: 'm', version: 1, runId, count: 1, at: at(ms).toISOString(), key });
    const check = async (ms: number) => (await checkRoiWatches(db, at(ms))).filter((c) => c.runId === runId);

    expect(await check(HOUR / 2)).toEqual([]); // younger than the window: not judged yet
    await serve(HOUR, 'p1');
    expect(await check(HOUR + 1000)).toEqual([
      expect.objectContaining({ below: false, realisedRoi: '23.0000', predictions: 1, revenue: '1.00', costShare: '0.041667' }),
    ]);
    const [down] = await check(2 * HOUR + 2000); // the window has no predictions: ROI −1
    expect(down).toMatchObject({ below: true, crossing: 1, realisedRoi: '-1.0000' });
    expect((await check(2 * HOUR + 3000))[0]).toMatchObject({ below: true });
    expect((await check(2 * HOUR + 3000))[0]!.crossing).toBeUndefined();
    await serve(2 * HOUR + 10_000, 'p2');
    expect((await check(2 * HOUR + 11_000))[0]).toMatchObject({ below: false }); // re-armed
    // Two processes checking at once count the next crossing once.
    const other = await t.open();
    const both = await Promise.all([checkRoiWatches(db, at(3 * HOUR + 20_000)), checkRoiWatches(other, at(3 * HOUR + 20_000))]);
    const crossings = both.flat().filter((c) => c.runId === runId && c.crossing !== undefined);
    expect(crossings.map((c) => c.crossing)).toEqual([2]);

    const alerts = await listRoiAlerts(db, { model: 'm' });
    expect(alerts.map((a) => [a.id, a.crossing, a.realisedRoi, a.emitted])).toEqual([
      ['roi.below/m/1/2', 2, '-1.0000', false],
      ['roi.below/m/1/1', 1, '-1.0000', false],
    ]);
  });
});
