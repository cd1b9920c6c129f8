import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../lib/logger.js';
import { logContext, withLogContext } from '../../lib/telemetry/log-context.js';
import { migrate } from '../../lib/db/migrate.js';
import { createLedgerService, type LedgerService } from '../../ledger/meter.js';
import { ledgerMigrations } from '../../ledger/migrations.js';
import { ledgerWithOutbox, openLedgerOutbox } from '../../ledger/outbox.js';
import { parsePriceSheet } from '../../ledger/price-sheet.js';
import { listEntries, runTotals, usageCount } from '../../ledger/repository.js';
import type { StageUsage } from '../../ledger/schemas.js';
import { createTestDatabase, type TestDatabase } from './dbs.js';

const sheet = parsePriceSheet({ currency: 'USD', compute: { cpuHour: '0.036', gpuHour: '3.60' }, storage: { gbMonth: '0', retentionMonths: 0 } });

function usage(runId: string, over: Partial<StageUsage> = {}): StageUsage {
  return {
    runId,
    pipeline: 'p',
    stageId: 'prep',
    plugin: 'test:x',
    attempt: 1,
    resource: 'cpu',
    wallSeconds: 1,
    cpuSeconds: 3600,
    deviceSeconds: 1,
    bytesWritten: 0,
    succeeded: true,
    ...over,
  };
}

describe('ledger outbox', () => {
  let t: TestDatabase;
  let ledger: LedgerService;
  const dir = mkdtempSync(join(tmpdir(), 'capstan-outbox-'));
  beforeAll(async () => {
    t = await createTestDatabase('sqlite');
    await migrate(t.db, ledgerMigrations);
    ledger = createLedgerService(t.db, { priceSheet: sheet });
  });
  afterAll(async () => {
    await t?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('keeps records through failures and restarts, and books each once even if it crashed after booking', async () => {
    const runId = `pipeline/p/${randomUUID().slice(0, 8)}`;
    const path = join(dir, `a-${randomUUID()}.db`);
    let down = true;
    let crashAfterBooking = 1;
    const flaky: LedgerService = {
      ...ledger,
      async recordUsage(u) {
        if (down) throw new Error('connect ECONNREFUSED 127.0.0.1:5432');
        await ledger.recordUsage(u);
        if (crashAfterBooking-- > 0) throw new Error('killed between booking and marking');
      },
    };
    const outbox = await openLedgerOutbox({ path, ledger: flaky, logger: silentLogger, retry: { initialMs: 10, maxMs: 50 } });
    await outbox.recordUsage(usage(runId));
    await outbox.recordUsage(usage(runId)); // the same attempt twice: one record
    await outbox.recordUsage(usage(runId, { attempt: 2 }));
    await expect(outbox.flush({ runId })).rejects.toMatchObject({ type: 'LEDGER_OUTBOX_PENDING', retryable: true });
    expect(await outbox.stats()).toEqual({ pending: 2, dead: 0 });
    await outbox.close();

    // A new life of the process: the records are still there.
    down = false;
    const again = await openLedgerOutbox({ path, ledger: flaky, logger: silentLogger, retry: { initialMs: 10, maxMs: 50 } });
    await expect(again.flush({ runId })).rejects.toThrow(/killed between booking and marking/);
    expect(await usageCount(t.db, runId)).toBe(2); // booked, though the first was not marked
    expect(await again.flush({ runId })).toEqual({ flushed: 1 });
    expect(await again.stats()).toEqual({ pending: 0, dead: 0 });
    expect(await usageCount(t.db, runId)).toBe(2);
    await again.close();
  });

  it('flushes in the background with backoff, and a booking waits for the run’s usage', async () => {
    const runId = `pipeline/p/${randomUUID().slice(0, 8)}`;
    let failures = 3;
    const flaky: LedgerService = {
      ...ledger,
      async recordUsage(u) {
        if (failures-- > 0) throw new Error('database is down');
        await ledger.recordUsage(u);
      },
    };
    const outbox = await openLedgerOutbox({
      path: join(dir, `b-${randomUUID()}.db`),
      ledger: flaky,
      logger: silentLogger,
      retry: { initialMs: 10, maxMs: 40 },
    });
    await outbox.recordUsage(usage(runId));
    for (let i = 0; i < 200 && (await outbox.stats()).pending > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(await outbox.stats()).toEqual({ pending: 0, dead: 0 });
    expect(await usageCount(t.db, runId)).toBe(1);

    // Through the wrapped ledger, bookRun flushes the run's queued usage first.
    const stages = ledgerWithOutbox(ledger, outbox);
    await stages.recordUsage(usage(runId, { stageId: 'fit', attempt: 1 }));
    const booking = await stages.bookRun({ runId, pipeline: 'p', stageId: 'ledger', revenue: { kind: 'contract', value: '1' } });
    expect(booking.cost).toBe('0.072');
    expect((await runTotals(t.db, runId)).cost).toBe(72_000n);
    await outbox.close();
  });

  it('books in the background outside the context of the request that queued the record (no request id, no trace)', async () => {
    const runId = `pipeline/p/${randomUUID().slice(0, 8)}`;
    const seen: unknown[] = [];
    const watching: LedgerService = {
      ...ledger,
      async recordUsage(u) {
        seen.push(logContext());
        await ledger.recordUsage(u);
      },
    };
    const outbox = await openLedgerOutbox({ path: join(dir, `c-${randomUUID()}.db`), ledger: watching, logger: silentLogger });
    // Queued inside a request's context: the timer the outbox sets would otherwise inherit it.
    await withLogContext({ requestId: 'req-that-queued-it' }, () => outbox.recordUsage(usage(runId)));
    for (let i = 0; i < 200 && (await outbox.stats()).pending > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(await usageCount(t.db, runId)).toBe(1);
    expect(seen).toEqual([{}]);
    await outbox.close();
  });

  it('replaces partial usage of an attempt by its later records, and keeps one that arrives while the last is booked', async () => {
    const runId = `pipeline/p/${randomUUID().slice(0, 8)}`;
    let outbox: Awaited<ReturnType<typeof openLedgerOutbox>> | undefined;
    let during: (() => Promise<void>) | undefined;
    const slow: LedgerService = {
      ...ledger,
      async recordUsage(u) {
        await ledger.recordUsage(u);
        // The attempt's final record arrives between booking the partial one and deleting it.
        const next = during;
        during = undefined;
        await next?.();
      },
    };
    outbox = await openLedgerOutbox({ path: join(dir, `d-${randomUUID()}.db`), ledger: slow, logger: silentLogger, retry: { initialMs: 10, maxMs: 40 } });
    const held = ledgerWithOutbox(ledger, outbox);
    await outbox.recordUsage(usage(runId, { cpuSeconds: 3600, wallSeconds: 1, partial: true }));
    await outbox.recordUsage(usage(runId, { cpuSeconds: 7200, wallSeconds: 2, partial: true })); // replaces the queued one
    during = () => outbox!.recordUsage(usage(runId, { cpuSeconds: 10_800, wallSeconds: 3 }));
    await outbox.flush({ runId });
    expect(await outbox.stats()).toEqual({ pending: 1, dead: 0 }); // the final record was not deleted with the partial one
    expect((await held.spend(runId)).total).toBe(108_000n); // 3 CPU-hours × 0.036: the final record, booked once
    expect(await outbox.stats()).toEqual({ pending: 0, dead: 0 });
    expect(await usageCount(t.db, runId)).toBe(1);
    await outbox.close();
  });

  it('books predictions under the batch key once; a version no run produced is kept aside, not retried', async () => {
    const runId = `pipeline/p/${randomUUID().slice(0, 8)}`;
    await ledger.recordUsage(usage(runId));
    await ledger.bookRun({
      runId,
      pipeline: 'p',
      stageId: 'ledger',
      revenue: { kind: 'per-prediction', pricePer1000: '1.00', expectedPredictions: 1000, horizonDays: 1 },
    });
    const outbox = await openLedgerOutbox({
      path: join(dir, `c-${randomUUID()}.db`),
      ledger,
      resolveRunId: async (m) => (m === 'digits' ? runId : undefined),
      logger: silentLogger,
    });
    await outbox.recordPredictions('digits', 1, 500);
    await outbox.recordPredictions('digits', 1, 1500);
    await outbox.recordPredictions('nobody', 1, 7);
    await outbox.flush();
    await outbox.flush();
    expect(await outbox.stats()).toEqual({ pending: 0, dead: 1 });
    const realised = (await listEntries(t.db, runId)).filter((e) => e.kind === 'realised_revenue');
    expect(realised.map((e) => e.quantity).sort()).toEqual(['1500', '500']);
    expect((await runTotals(t.db, runId)).realisedRevenue).toBe(2_000_000n);
    await outbox.close();
  });
});

describe('ledger/0002 migration', () => {
  let t: TestDatabase;
  afterAll(async () => t?.drop());

  it('keeps every usage row and prices old runs as before', async () => {
    t = await createTestDatabase('postgres');
    const db = t.db;
    await migrate(db, [ledgerMigrations[0]!]);
    const runId = 'pipeline/old/1';
    const row = (stage: string, attempt: number, replica: number, resource: string, deviceMs: number, bytes: number) =>
      db.run(
        `INSERT INTO ledger_usage (run_id, stage_id, attempt, replica, pipeline, plugin, resource, wall_ms, cpu_ms, device_ms, bytes_written, succeeded, recorded_at)
         VALUES (?, ?, ?, ?, 'old', 'x', ?, ?, 5, ?, ?, 1, '2030-01-01T00:00:00Z')`,
        [runId, stage, attempt, replica, resource, deviceMs, deviceMs, bytes],
      );
    await row('prep', 1, -1, 'cpu', 3_600_000, 0);
    await row('fit', 1, 0, 'gpu', 1_800_000, 0);
    await row('fit', 1, 1, 'gpu', 1_800_000, 500_000_000);
    await row('fit', 2, 0, 'gpu', 3_600_000, 500_000_000);
    expect(await migrate(db, ledgerMigrations)).toEqual(['ledger/0002-usage-keys', 'ledger/0003-estimates-roi-watch', 'ledger/0004-partial-usage']);
    expect(await usageCount(db, runId)).toBe(4);
    const ledger = createLedgerService(db, {
      priceSheet: parsePriceSheet({ currency: 'USD', compute: { cpuHour: '1', gpuHour: '2' }, storage: { gbMonth: '1', retentionMonths: 1 } }),
    });
    const booking = await ledger.bookRun({ runId, pipeline: 'old', stageId: 'roi', revenue: { kind: 'contract', value: '1' } });
    // as before: prep 1 h × 1 + fit 2 h × 2 (device time at the declared rate) + 1 GB × 1
    expect(booking.cost).toBe('6.00');
    // the old key still dedups: the same old attempt is a no-op under its legacy id, a new one is a new line
    await ledger.recordUsage({
      runId,
      pipeline: 'old',
      stageId: 'fit',
      plugin: 'x',
      attempt: 3,
      replica: 0,
      resource: 'gpu',
      wallSeconds: 1,
      cpuSeconds: 0,
      deviceSeconds: 1,
      bytesWritten: 0,
      succeeded: true,
    });
    expect(await usageCount(db, runId)).toBe(5);
  });
});
