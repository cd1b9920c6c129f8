import { AsyncResource } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { badInput, StageError } from '../lib/errors.js';
import { migrate } from '../lib/db/migrate.js';
import { openSqlite } from '../lib/db/sqlite.js';
import type { Db, Migration } from '../lib/db/types.js';
import type { Logger } from '../lib/logger.js';
import type { LedgerService } from './meter.js';
import { defaultActivityId } from './repository.js';
import { describeIssues } from './price-sheet.js';
import { stageUsageSchema, type StageUsage } from './schemas.js';
import { withChildSpan, withSpan } from '../lib/telemetry/tracing.js';

/**
 * A local, durable outbox in front of the ledger database. Usage records and prediction batches
 * are first written to a SQLite file of this process (synchronous = FULL: on disk when the write
 * returns), and only then acknowledged (the activity returns, the prediction answers). A flusher
 * sends them to the ledger with retries and backoff and deletes each once it is booked. Every
 * record carries its idempotency key into the ledger (the usage key; the prediction batch id),
 * so a crash between booking and deleting books nothing twice on the next flush.
 */
export interface LedgerOutbox {
  /**
   * The stage meter: durably queues one attempt's usage (partial usage while it runs, replaced by
   * later records of the same attempt). Throws USAGE_INVALID for malformed usage.
   */
  recordUsage(usage: StageUsage): Promise<void>;
  /** The model server's `onPredictions` hook: durably queues a batch of served predictions. */
  recordPredictions(model: string, version: number, count: number): Promise<void>;
  /**
   * Flushes what is queued now, ignoring backoff (only the run's usage with `runId`). Throws a
   * retryable error if any of it could not be booked (e.g. the database is down).
   */
  flush(filter?: { runId?: string }): Promise<{ flushed: number }>;
  /** Records waiting, and records given up on (malformed, or for a model version no run produced). */
  stats(): Promise<{ pending: number; dead: number }>;
  /** Starts the background flusher (it also starts on the first record). */
  start(): void;
  close(): Promise<void>;
}

export interface LedgerOutboxOptions {
  /** The outbox file (SQLite), under the process's data dir. */
  path: string;
  /** Where records go. */
  ledger: Pick<LedgerService, 'recordUsage' | 'recordPredictions'>;
  /** The run that produced a model version (needed to book predictions). */
  resolveRunId?: (model: string, version: number) => Promise<string | undefined>;
  logger: Logger;
  /** Backoff between attempts of one record: from `initialMs` doubling to `maxMs` (defaults 250 ms, 30 s). */
  retry?: { initialMs?: number; maxMs?: number };
}

export const outboxMigrations: Migration[] = [
  {
    id: 'outbox/0001-init',
    sql: `
CREATE TABLE ledger_outbox (
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  run_id TEXT,
  payload TEXT NOT NULL,
  created_at TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_at INTEGER NOT NULL,
  last_error TEXT,
  dead INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX ledger_outbox_due ON ledger_outbox (dead, next_at);
CREATE INDEX ledger_outbox_run ON ledger_outbox (run_id);
`,
  },
];

interface Row {
  id: string;
  kind: 'usage' | 'predictions';
  payload: string;
  attempts: number;
}

interface PredictionsPayload {
  model: string;
  version: number;
  count: number;
  at: string;
}

const BATCH = 200;

export async function openLedgerOutbox(o: LedgerOutboxOptions): Promise<LedgerOutbox> {
  mkdirSync(dirname(o.path), { recursive: true });
  const db: Db = openSqlite({ path: o.path });
  try {
    await db.run('PRAGMA synchronous = FULL');
    await migrate(db, outboxMigrations);
  } catch (e) {
    await db.close();
    throw e;
  }
  const initialMs = o.retry?.initialMs ?? 250;
  const maxMs = o.retry?.maxMs ?? 30_000;
  let closed = false;
  let started = false;
  let timer: NodeJS.Timeout | undefined;
  let wakeAt = Infinity;
  // One flush at a time in this process (other processes sharing the file are safe: keyed writes).
  let chain: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const next = chain.then(fn, fn);
    chain = next.catch(() => undefined);
    return next;
  };

  // The background flush runs in the context the outbox was made in (the process's start), not the
  // one of whatever request or attempt last woke it: its bookings belong to no request's trace and
  // its log lines to no request (a timer would otherwise inherit both from the caller of wake).
  const inBackground = AsyncResource.bind((fn: () => void) => fn());
  const wake = (delayMs: number) => {
    if (closed || !started) return;
    const at = Date.now() + Math.max(0, delayMs);
    if (timer && at >= wakeAt) return;
    if (timer) clearTimeout(timer);
    wakeAt = at;
    timer = setTimeout(
      () =>
        inBackground(() => {
          timer = undefined;
          wakeAt = Infinity;
          void serial(() => flushDue(false)).then(scheduleNext, (e: unknown) => {
            o.logger.warn('ledger outbox flush failed', { error: String(e) });
            wake(maxMs);
          });
        }),
      Math.max(0, delayMs),
    );
    timer.unref();
  };

  const scheduleNext = async () => {
    const rows = await db.query<{ next_at: number | null }>('SELECT MIN(next_at) AS next_at FROM ledger_outbox WHERE dead = 0');
    const next = rows[0]?.next_at;
    if (next !== null && next !== undefined) wake(Math.min(maxMs, Math.max(20, next - Date.now())));
  };

  // A record queued under a key already waiting is kept, unless the waiting one is partial usage
  // (an attempt still running): then the newer record replaces it and is due at once.
  const append = async (id: string, kind: Row['kind'], runId: string | null, payload: unknown) => {
    if (closed) throw new Error('ledger outbox is closed');
    await db.run(
      `INSERT INTO ledger_outbox (id, kind, run_id, payload, created_at, next_at) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (id) DO UPDATE SET payload = excluded.payload, next_at = 0, attempts = 0, last_error = NULL
       WHERE ledger_outbox.dead = 0 AND json_extract(ledger_outbox.payload, '$.partial') = 1`,
      [id, kind, runId, JSON.stringify(payload), new Date().toISOString(), 0],
    );
    started = true;
    wake(0);
  };

  /** Books one record (a `capstan.ledger.book` span inside a traced flush: a stage's booking, not the background timer's). */
  const apply = (row: Row) => withChildSpan('capstan.ledger.book', { 'capstan.ledger.record': row.kind }, () => applyRow(row));
  const applyRow = async (row: Row) => {
    if (row.kind === 'usage') {
      await o.ledger.recordUsage(JSON.parse(row.payload) as StageUsage);
      return;
    }
    const p = JSON.parse(row.payload) as PredictionsPayload;
    if (!o.resolveRunId) throw badInput('this process cannot resolve model versions to runs', 'PREDICTIONS_UNRESOLVED');
    const runId = await o.resolveRunId(p.model, p.version);
    if (!runId) throw badInput(`no run is known for model ${p.model}@${p.version}; predictions not booked`, 'PREDICTIONS_UNRESOLVED');
    await o.ledger.recordPredictions({ model: p.model, version: p.version, runId, count: p.count, at: p.at, key: row.id });
  };

  /** Books due records (all with `force`), oldest first. Returns how many were booked and how many failed. */
  const flushDue = async (force: boolean, runId?: string): Promise<{ flushed: number; failed: number; lastError?: string }> => {
    let flushed = 0;
    let failed = 0;
    let lastError: string | undefined;
    const seen = new Set<string>();
    for (;;) {
      const where = ['dead = 0', ...(force ? [] : ['next_at <= ?']), ...(runId !== undefined ? ['run_id = ?'] : [])];
      const params: unknown[] = [...(force ? [] : [Date.now()]), ...(runId !== undefined ? [runId] : [])];
      const rows = (
        await db.query<Row>(`SELECT id, kind, payload, attempts FROM ledger_outbox WHERE ${where.join(' AND ')} ORDER BY created_at, id LIMIT ${BATCH}`, params)
      ).filter((r) => !seen.has(r.id));
      if (rows.length === 0) break;
      for (const row of rows) {
        seen.add(row.id);
        try {
          await apply(row);
          // Only what was booked: a newer record of the same key that arrived meanwhile stays queued.
          await db.run('DELETE FROM ledger_outbox WHERE id = ? AND payload = ?', [row.id, row.payload]);
          flushed++;
        } catch (e) {
          lastError = e instanceof Error ? e.message : String(e);
          if (e instanceof StageError && !e.retryable) {
            // Retrying cannot help: keep it (for an operator) and stop trying.
            await db.run('UPDATE ledger_outbox SET dead = 1, attempts = attempts + 1, last_error = ? WHERE id = ?', [lastError, row.id]);
            o.logger.error('ledger outbox: record cannot be booked; kept, not retried', { id: row.id, error: lastError });
            continue;
          }
          failed++;
          const attempts = Number(row.attempts) + 1;
          const backoff = Math.min(maxMs, initialMs * 2 ** Math.min(attempts - 1, 20));
          const jittered = Math.round(backoff * (0.75 + Math.random() * 0.5));
          await db.run('UPDATE ledger_outbox SET attempts = ?, next_at = ?, last_error = ? WHERE id = ?', [attempts, Date.now() + jittered, lastError, row.id]);
          if (attempts === 1 || attempts % 10 === 0)
            o.logger.warn('ledger outbox: booking failed; will retry', { id: row.id, attempts, retryInMs: jittered, error: lastError });
        }
      }
    }
    return { flushed, failed, ...(lastError !== undefined ? { lastError } : {}) };
  };

  return {
    async recordUsage(usage) {
      const u = stageUsageSchema.safeParse(usage);
      if (!u.success) throw badInput(`invalid stage usage: ${describeIssues(u.error, 'usage')}`, 'USAGE_INVALID');
      const d = u.data;
      const key = ['usage', d.runId, d.workflowRunId ?? '', d.activityId ?? defaultActivityId(d), String(d.attempt)].join('|');
      await append(key, 'usage', d.runId, d);
    },
    async recordPredictions(model, version, count) {
      if (!Number.isSafeInteger(count) || count < 0) throw badInput(`invalid prediction count ${count}`, 'PREDICTIONS_INVALID');
      if (count === 0) return;
      const payload: PredictionsPayload = { model, version, count, at: new Date().toISOString() };
      await append(`predictions/${randomUUID()}`, 'predictions', null, payload);
    },
    async flush(filter = {}) {
      const r = await serial(() => flushDue(true, filter.runId));
      if (r.failed > 0) {
        throw new StageError(`ledger outbox: ${r.failed} record(s)${filter.runId ? ` of run ${filter.runId}` : ''} could not be booked yet: ${r.lastError}`, {
          type: 'LEDGER_OUTBOX_PENDING',
          retryable: true,
        });
      }
      return { flushed: r.flushed };
    },
    async stats() {
      const rows = await db.query<{ dead: number; n: number }>('SELECT dead, COUNT(*) AS n FROM ledger_outbox GROUP BY dead');
      return { pending: Number(rows.find((r) => Number(r.dead) === 0)?.n ?? 0), dead: Number(rows.find((r) => Number(r.dead) === 1)?.n ?? 0) };
    },
    start() {
      if (closed) return;
      started = true;
      wake(0);
    },
    async close() {
      if (closed) return;
      closed = true;
      if (timer) clearTimeout(timer);
      await chain;
      await db.close();
    },
  };
}

/**
 * The ledger as stages see it when usage goes through the outbox: usage is queued durably, and a
 * booking first flushes the run's queued usage (failing, retryably, while it cannot), so the
 * ledger stage never prices a run without the usage this process metered.
 */
export function ledgerWithOutbox(ledger: LedgerService, outbox: LedgerOutbox): LedgerService {
  return {
    priceSheet: ledger.priceSheet,
    recordUsage: (u) => outbox.recordUsage(u),
    bookRun(input) {
      return withSpan('capstan.ledger.book_run', { 'capstan.run_id': input.runId }, async () => {
        await outbox.flush({ runId: input.runId });
        return ledger.bookRun(input);
      });
    },
    recordPredictions: (p) => ledger.recordPredictions(p),
    // Usage still in this process's outbox is part of the spend.
    async spend(runId, sheet) {
      await outbox.flush({ runId });
      return ledger.spend(runId, sheet);
    },
    recordStageProfile: (p) => ledger.recordStageProfile(p),
    saveRoiWatch: (w) => ledger.saveRoiWatch(w),
  };
}
