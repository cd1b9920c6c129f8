import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listEntries, pipelineTotals, runTotals } from '../../ledger/repository.js';
import { createTestDatabase, dialects, type TestDatabase } from './dbs.js';

const run = promisify(execFile);
const script = fileURLToPath(new URL('./fixtures/book-in-process.ts', import.meta.url));

describe.each(dialects)('several processes on one %s database', (dialect) => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await createTestDatabase(dialect);
  });
  afterAll(async () => t?.drop());

  it('migrate at once, meter the same attempts, and book each run exactly once', async () => {
    const pipeline = `procs-${randomUUID().slice(0, 8)}`;
    const sharedRun = `pipeline/${pipeline}/shared`;
    const ownRuns = [0, 1, 2].map((i) => `pipeline/${pipeline}/own-${i}`);
    await Promise.all(
      ownRuns.map((ownRun) =>
        run(process.execPath, ['--import', 'tsx', script, JSON.stringify({ ...t.target, sharedRun, ownRun, pipeline })], { timeout: 120_000 }),
      ),
    );
    const migrations = await t.db.query<{ id: string }>("SELECT id FROM schema_migrations WHERE id LIKE 'ledger/%'");
    expect(migrations.map((m) => m.id)).toEqual(['ledger/0001-init', 'ledger/0002-usage-keys', 'ledger/0003-estimates-roi-watch', 'ledger/0004-partial-usage']);
    // shared: 3 attempts × 20 min × 3.00/h = 3.00, booked once though three processes booked it
    expect((await runTotals(t.db, sharedRun)).cost).toBe(3_000_000n);
    expect((await listEntries(t.db, sharedRun)).length).toBe(2);
    for (const r of ownRuns) expect((await runTotals(t.db, r)).cost).toBe(3_000_000n);
    const totals = await pipelineTotals(t.db, { pipeline });
    expect(totals).toMatchObject({ runs: 4, cost: 12_000_000n, expectedRevenue: 48_000_000n });
  });
});
