import type { Db } from '../lib/db/types.js';
import { predictionRevenue, type PricedLine, type UsageTotals } from './pricing.js';
import { revenueModelSchema, type RevenueModel, type StageUsage } from './schemas.js';

/** SQL over the ledger tables; the same statements run on SQLite and PostgreSQL. */

export type EntryKind = 'cost' | 'expected_revenue' | 'realised_revenue';

export interface LedgerEntry {
  id: string;
  entryKey: string;
  version: number;
  runId: string;
  pipeline: string;
  stageId: string;
  kind: EntryKind;
  category: string;
  amountMicros: bigint;
  currency: string;
  quantity: string | null;
  unit: string | null;
  unitPrice: string | null;
  description: string;
  reverses: string | null;
  occurredAt: string;
  bookedAt: string;
}

interface EntryRow {
  id: string;
  entry_key: string;
  version: number | string;
  run_id: string;
  pipeline: string;
  stage_id: string;
  kind: EntryKind;
  category: string;
  amount: string;
  currency: string;
  quantity: string | null;
  unit: string | null;
  unit_price: string | null;
  description: string;
  reverses: string | null;
  occurred_at: string;
  booked_at: string;
}

const ENTRY_COLUMNS = `id, entry_key, version, run_id, pipeline, stage_id, kind, category,
  CAST(amount_micros AS TEXT) AS amount, currency, quantity, unit, unit_price, description, reverses, occurred_at, booked_at`;

function toEntry(r: EntryRow): LedgerEntry {
  return {
    id: r.id,
    entryKey: r.entry_key,
    version: Number(r.version),
    runId: r.run_id,
    pipeline: r.pipeline,
    stageId: r.stage_id,
    kind: r.kind,
    category: r.category,
    amountMicros: BigInt(r.amount),
    currency: r.currency,
    quantity: r.quantity,
    unit: r.unit,
    unitPrice: r.unit_price,
    description: r.description,
    reverses: r.reverses,
    occurredAt: r.occurred_at,
    bookedAt: r.booked_at,
  };
}

const toMs = (seconds: number): number => Math.round(seconds * 1000);

/** The usage key's default activity id when the caller gave none (no Temporal context). */
export function defaultActivityId(u: Pick<StageUsage, 'stageId' | 'replica'>): string {
  return `stage:${u.stageId}${u.replica === undefined ? '' : `:replica-${u.replica}`}`;
}

/**
 * Records one attempt's usage, keyed by (run, workflow run, activity id, attempt): recording the
 * same attempt twice is a no-op, while an operator retry (a new round: a new activity id) or a
 * reset (a new workflow run) is a new line. A partial record (an attempt still running) is
 * replaced by a later partial one and by the final one; a final record is never replaced.
 * Returns true if stored.
 */
export async function insertUsage(db: Db, u: StageUsage, now = new Date()): Promise<boolean> {
  const gpus = u.gpuDevices ?? [];
  const n = await db.run(
    `INSERT INTO ledger_usage (run_id, workflow_run_id, activity_id, attempt, stage_id, replica, pipeline, plugin, resource,
       wall_ms, cpu_ms, device_ms, gpu_ms, gpu_devices, bytes_written, bytes_kept, metered, succeeded, recorded_at, partial)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?)
     ON CONFLICT (run_id, workflow_run_id, activity_id, attempt) DO UPDATE SET
       wall_ms = excluded.wall_ms, cpu_ms = excluded.cpu_ms, device_ms = excluded.device_ms, gpu_ms = excluded.gpu_ms,
       gpu_devices = excluded.gpu_devices, bytes_written = excluded.bytes_written, bytes_kept = excluded.bytes_kept,
       succeeded = excluded.succeeded, recorded_at = excluded.recorded_at, partial = excluded.partial
     WHERE ledger_usage.partial = 1 AND (excluded.partial = 0 OR excluded.wall_ms >= ledger_usage.wall_ms)`,
    [
      u.runId,
      u.workflowRunId ?? '',
      u.activityId ?? defaultActivityId(u),
      u.attempt,
      u.stageId,
      u.replica ?? -1,
      u.pipeline,
      u.plugin,
      u.resource,
      toMs(u.wallSeconds),
      toMs(u.cpuSeconds),
      toMs(u.deviceSeconds),
      toMs(u.deviceSeconds) * gpus.length,
      gpus.join(','),
      u.bytesWritten,
      u.bytesKept ?? u.bytesWritten,
      u.succeeded ? 1 : 0,
      now.toISOString(),
      u.partial ? 1 : 0,
    ],
  );
  return n > 0;
}

/**
 * The run's usage per stage, over every attempt and replica, failed ones included. Rows metered
 * by this version price CPU time and assigned-GPU time; rows migrated from before
 * (`metered = 0`) keep their old meaning (device time at the declared resource's rate), so a
 * replayed booking of an old run changes nothing. Storage: the largest `bytes_kept` of the stage
 * (each attempt measures everything the stage keeps), or the old rows' bytes written.
 */
export async function usageTotals(db: Db, runId: string): Promise<UsageTotals[]> {
  const rows = await db.query<{ stage_id: string; cpu: string; gpu: string; wall: string; kept: string | null; written: string; attempts: number | string }>(
    `SELECT stage_id,
       CAST(SUM(CASE WHEN metered = 1 THEN cpu_ms WHEN resource = 'cpu' THEN device_ms ELSE 0 END) AS TEXT) AS cpu,
       CAST(SUM(CASE WHEN metered = 1 THEN gpu_ms WHEN resource = 'gpu' THEN device_ms ELSE 0 END) AS TEXT) AS gpu,
       CAST(SUM(wall_ms) AS TEXT) AS wall,
       CAST(MAX(bytes_kept) AS TEXT) AS kept,
       CAST(SUM(CASE WHEN bytes_kept IS NULL THEN bytes_written ELSE 0 END) AS TEXT) AS written,
       COUNT(*) AS attempts
     FROM ledger_usage WHERE run_id = ? GROUP BY stage_id ORDER BY stage_id`,
    [runId],
  );
  return rows.map((r) => {
    const kept = BigInt(r.kept ?? '0');
    const written = BigInt(r.written);
    return {
      stageId: r.stage_id,
      cpuMs: BigInt(r.cpu),
      gpuMs: BigInt(r.gpu),
      wallMs: BigInt(r.wall),
      bytesKept: kept > written ? kept : written,
      attempts: Number(r.attempts),
    };
  });
}

/** How many usage lines the run has (one per attempt, replica and round). */
export async function usageCount(db: Db, runId: string): Promise<number> {
  const rows = await db.query<{ n: number | string }>('SELECT COUNT(*) AS n FROM ledger_usage WHERE run_id = ?', [runId]);
  return Number(rows[0]?.n ?? 0);
}

export interface BookingContext {
  runId: string;
  pipeline: string;
  currency: string;
  now: Date;
}

export function entryKeyOf(runId: string, line: Pick<PricedLine, 'stageId' | 'kind' | 'category' | 'discriminator'>): string {
  return [runId, line.stageId, line.kind, line.category, ...(line.discriminator !== undefined ? [line.discriminator] : [])].join('|');
}

/** Live (not reversed) entries of the run of the given kinds. */
async function liveEntries(db: Db, runId: string, kinds: EntryKind[]): Promise<LedgerEntry[]> {
  const rows = await db.query<EntryRow>(
    `SELECT ${ENTRY_COLUMNS} FROM ledger_entries e
     WHERE e.run_id = ? AND e.kind IN (${kinds.map(() => '?').join(', ')}) AND e.reverses IS NULL
       AND NOT EXISTS (SELECT 1 FROM ledger_entries r WHERE r.reverses = e.id)
     ORDER BY e.entry_key, e.version`,
    [runId, ...kinds],
  );
  return rows.map(toEntry);
}

async function insertEntry(db: Db, e: Omit<LedgerEntry, 'bookedAt'> & { bookedAt: string }): Promise<boolean> {
  const n = await db.run(
    `INSERT INTO ledger_entries (id, entry_key, version, run_id, pipeline, stage_id, kind, category, amount_micros,
       currency, quantity, unit, unit_price, description, reverses, occurred_at, booked_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT DO NOTHING`,
    [
      e.id,
      e.entryKey,
      e.version,
      e.runId,
      e.pipeline,
      e.stageId,
      e.kind,
      e.category,
      e.amountMicros,
      e.currency,
      e.quantity,
      e.unit,
      e.unitPrice,
      e.description,
      e.reverses,
      e.occurredAt,
      e.bookedAt,
    ],
  );
  return n > 0;
}

async function reverse(db: Db, e: LedgerEntry, now: string, why: string): Promise<boolean> {
  return insertEntry(db, {
    ...e,
    id: `${e.id}~reversal`,
    amountMicros: -e.amountMicros,
    description: `reversal of ${e.id}: ${why}`,
    reverses: e.id,
    occurredAt: now,
    bookedAt: now,
  });
}

/**
 * Serialises bookings of one run. PostgreSQL: a transaction-scoped advisory lock on the run id
 * (without it, a concurrent booking that commits between our reads could make us book a second
 * version). Take it first in the transaction, before reading anything the booking depends on.
 * SQLite: transactions are already serialised by BEGIN IMMEDIATE.
 */
export async function lockRun(db: Db, runId: string): Promise<void> {
  if (db.dialect === 'postgres') await db.query("SELECT pg_advisory_xact_lock(hashtext('capstan-ledger:' || CAST(? AS TEXT)))", [runId]);
}

export interface ReconcileResult {
  booked: number;
  reversed: number;
  unchanged: number;
}

/**
 * Makes the run's live cost and expected-revenue entries equal `lines`, append-only:
 * a line already booked with the same amount is left alone (so a retried or replayed ledger
 * stage books nothing twice); a changed amount is a reversal of the old entry plus a new
 * version; an entry no longer wanted is reversed. Every insert is keyed, so two processes
 * doing this at once cannot double-book. Call inside a transaction.
 */
export async function reconcileRun(db: Db, ctx: BookingContext, lines: PricedLine[]): Promise<ReconcileResult> {
  const now = ctx.now.toISOString();
  await lockRun(db, ctx.runId);
  const live = await liveEntries(db, ctx.runId, ['cost', 'expected_revenue']);
  const versionRows = await db.query<{ k: string; v: number | string }>(
    'SELECT entry_key AS k, MAX(version) AS v FROM ledger_entries WHERE run_id = ? GROUP BY entry_key',
    [ctx.runId],
  );
  const maxVersion = new Map(versionRows.map((r) => [r.k, Number(r.v)]));
  const liveByKey = new Map(live.map((e) => [e.entryKey, e]));
  const wanted = new Set<string>();
  const result: ReconcileResult = { booked: 0, reversed: 0, unchanged: 0 };

  for (const line of lines) {
    const key = entryKeyOf(ctx.runId, line);
    if (wanted.has(key)) throw new Error(`two ledger lines with the key ${key}`);
    wanted.add(key);
    const current = liveByKey.get(key);
    if (current && current.amountMicros === line.amount) {
      result.unchanged++;
      continue;
    }
    if (current) {
      if (await reverse(db, current, now, 'amount corrected')) result.reversed++;
    }
    if (line.amount === 0n) continue;
    const version = (maxVersion.get(key) ?? 0) + 1;
    const inserted = await insertEntry(db, {
      id: `${key}#${version}`,
      entryKey: key,
      version,
      runId: ctx.runId,
      pipeline: ctx.pipeline,
      stageId: line.stageId,
      kind: line.kind,
      category: line.category,
      amountMicros: line.amount,
      currency: ctx.currency,
      quantity: line.quantity,
      unit: line.unit,
      unitPrice: line.unitPrice,
      description: line.description,
      reverses: null,
      occurredAt: now,
      bookedAt: now,
    });
    if (inserted) result.booked++;
  }
  for (const e of live) {
    if (!wanted.has(e.entryKey) && (await reverse(db, e, now, 'no longer part of the run'))) result.reversed++;
  }
  return result;
}

/** The run's entries in booking order (reversals included). */
export async function listEntries(db: Db, runId: string): Promise<LedgerEntry[]> {
  const rows = await db.query<EntryRow>(`SELECT ${ENTRY_COLUMNS} FROM ledger_entries WHERE run_id = ? ORDER BY booked_at, id`, [runId]);
  return rows.map(toEntry);
}

export interface Totals {
  cost: bigint;
  expectedRevenue: bigint;
  realisedRevenue: bigint;
  currencies: string[];
  entries: number;
}

function foldTotals(rows: { kind: EntryKind; currency: string; total: string; n: number | string }[]): Totals {
  const t: Totals = { cost: 0n, expectedRevenue: 0n, realisedRevenue: 0n, currencies: [], entries: 0 };
  const currencies = new Set<string>();
  for (const r of rows) {
    const v = BigInt(r.total);
    if (r.kind === 'cost') t.cost += v;
    else if (r.kind === 'expected_revenue') t.expectedRevenue += v;
    else if (r.kind === 'realised_revenue') t.realisedRevenue += v;
    currencies.add(r.currency);
    t.entries += Number(r.n);
  }
  t.currencies = [...currencies].sort();
  return t;
}

/** Net totals of one run (reversals included, so they net out). */
export async function runTotals(db: Db, runId: string): Promise<Totals> {
  const rows = await db.query<{ kind: EntryKind; currency: string; total: string; n: number | string }>(
    `SELECT kind, currency, CAST(SUM(amount_micros) AS TEXT) AS total, COUNT(*) AS n
     FROM ledger_entries WHERE run_id = ? GROUP BY kind, currency`,
    [runId],
  );
  return foldTotals(rows);
}

export interface PipelineWindow {
  pipeline: string;
  /** ISO instant, inclusive. */
  from?: string | undefined;
  /** ISO instant, exclusive. */
  to?: string | undefined;
}

function windowSql(w: PipelineWindow): { where: string; params: unknown[] } {
  const parts = ['pipeline = ?'];
  const params: unknown[] = [w.pipeline];
  if (w.from) {
    parts.push('occurred_at >= ?');
    params.push(w.from);
  }
  if (w.to) {
    parts.push('occurred_at < ?');
    params.push(w.to);
  }
  return { where: parts.join(' AND '), params };
}

export interface PipelineTotals extends Totals {
  runs: number;
  /** Cost per stage id. */
  byStage: { key: string; amount: bigint }[];
  /** Cost per resource/category (cpu, gpu, storage, people, …). */
  byResource: { key: string; amount: bigint }[];
}

/** Net totals of a pipeline's entries that occurred in [from, to). */
export async function pipelineTotals(db: Db, w: PipelineWindow): Promise<PipelineTotals> {
  const { where, params } = windowSql(w);
  const rows = await db.query<{ kind: EntryKind; currency: string; total: string; n: number | string }>(
    `SELECT kind, currency, CAST(SUM(amount_micros) AS TEXT) AS total, COUNT(*) AS n
     FROM ledger_entries WHERE ${where} GROUP BY kind, currency`,
    params,
  );
  const runs = await db.query<{ n: number | string }>(`SELECT COUNT(DISTINCT run_id) AS n FROM ledger_entries WHERE ${where}`, params);
  const group = async (col: 'stage_id' | 'category') =>
    (
      await db.query<{ k: string; total: string }>(
        `SELECT ${col} AS k, CAST(SUM(amount_micros) AS TEXT) AS total FROM ledger_entries
         WHERE ${where} AND kind = 'cost' GROUP BY ${col} ORDER BY ${col}`,
        params,
      )
    ).map((r) => ({ key: r.k, amount: BigInt(r.total) }));
  return { ...foldTotals(rows), runs: Number(runs[0]?.n ?? 0), byStage: await group('stage_id'), byResource: await group('category') };
}

/** Net amount of one kind booked per pipeline, category and currency. */
export interface BookedTotal {
  pipeline: string;
  category: string;
  currency: string;
  amount: bigint;
}

/**
 * Net amounts of one kind booked so far, per pipeline, category and currency (reversals net out),
 * summed exactly in the database: what /metrics reports as capstan_ledger_cost_total and
 * capstan_ledger_revenue_total.
 */
export async function bookedTotals(db: Db, kind: EntryKind): Promise<BookedTotal[]> {
  const rows = await db.query<{ pipeline: string; category: string; currency: string; total: string }>(
    `SELECT pipeline, category, currency, CAST(SUM(amount_micros) AS TEXT) AS total FROM ledger_entries
     WHERE kind = ? GROUP BY pipeline, category, currency ORDER BY pipeline, category, currency`,
    [kind],
  );
  return rows.map((r) => ({ pipeline: r.pipeline, category: r.category, currency: r.currency, amount: BigInt(r.total) }));
}

/** Remembers the revenue model of a run (the latest one the ledger stage saw), for pricing served predictions. */
export async function saveRunRevenue(db: Db, ctx: BookingContext, model: RevenueModel, booking?: unknown): Promise<void> {
  await db.run(
    `INSERT INTO ledger_run_revenue (run_id, pipeline, model, currency, updated_at, booking) VALUES (?, ?, ?, ?, ?, ?)
     ON CONFLICT (run_id) DO UPDATE SET model = excluded.model, currency = excluded.currency, updated_at = excluded.updated_at, booking = excluded.booking`,
    [ctx.runId, ctx.pipeline, JSON.stringify(model), ctx.currency, ctx.now.toISOString(), booking === undefined ? null : JSON.stringify(booking)],
  );
}

export async function loadRunRevenue(db: Db, runId: string): Promise<{ pipeline: string; currency: string; model: RevenueModel } | undefined> {
  const rows = await db.query<{ pipeline: string; currency: string; model: string }>(
    'SELECT pipeline, currency, model FROM ledger_run_revenue WHERE run_id = ?',
    [runId],
  );
  const r = rows[0];
  if (!r) return undefined;
  return { pipeline: r.pipeline, currency: r.currency, model: revenueModelSchema.parse(JSON.parse(r.model)) };
}

/** What the run's last booking was asked (JSON as saved by saveRunRevenue), if it was booked by this version. */
export async function loadBookingInput(db: Db, runId: string): Promise<unknown> {
  const rows = await db.query<{ booking: string | null }>('SELECT booking FROM ledger_run_revenue WHERE run_id = ?', [runId]);
  const b = rows[0]?.booking;
  return b ? (JSON.parse(b) as unknown) : undefined;
}

export interface PredictionEvent {
  id: string;
  runId: string;
  model: string;
  version: string;
  count: number;
  at: string;
}

/** Stores a batch of served predictions; a second call with the same id is a no-op. */
export async function insertPredictions(db: Db, p: PredictionEvent, now = new Date()): Promise<boolean> {
  const n = await db.run(
    `INSERT INTO ledger_predictions (id, run_id, model, version, count, at, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT DO NOTHING`,
    [p.id, p.runId, p.model, p.version, p.count, p.at, now.toISOString()],
  );
  return n > 0;
}

/**
 * Books realised revenue for the run's prediction batches not booked yet, priced by the run's
 * revenue model (per-prediction models only; a contract earns nothing per prediction).
 * One entry per batch, keyed by the batch id: booking twice is a no-op. Returns entries booked.
 */
export async function bookPendingPredictions(db: Db, runId: string, now = new Date()): Promise<number> {
  const rev = await loadRunRevenue(db, runId);
  if (rev?.model.kind !== 'per-prediction') return 0;
  const pending = await db.query<{ id: string; model: string; version: string; count: string; at: string }>(
    `SELECT p.id, p.model, p.version, CAST(p.count AS TEXT) AS count, p.at FROM ledger_predictions p
     WHERE p.run_id = ? AND NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.entry_key = CAST(? AS TEXT) || p.id)
     ORDER BY p.at, p.id`,
    [runId, `${runId}|serving|realised_revenue|predictions|`],
  );
  let booked = 0;
  for (const p of pending) {
    const key = `${runId}|serving|realised_revenue|predictions|${p.id}`;
    const inserted = await insertEntry(db, {
      id: `${key}#1`,
      entryKey: key,
      version: 1,
      runId,
      pipeline: rev.pipeline,
      stageId: 'serving',
      kind: 'realised_revenue',
      category: 'predictions',
      amountMicros: predictionRevenue(BigInt(p.count), rev.model.pricePer1000),
      currency: rev.currency,
      quantity: p.count,
      unit: 'prediction',
      unitPrice: `${rev.model.pricePer1000} per 1000`,
      description: `${p.count} predictions served by ${p.model}@${p.version}`,
      reverses: null,
      occurredAt: p.at,
      bookedAt: now.toISOString(),
    });
    if (inserted) booked++;
  }
  return booked;
}

/** One run's money in a pipeline window: totals, and cost per stage and per resource. */
export interface RunMoney {
  runId: string;
  /** When the run's first entry in the window occurred. */
  firstAt: string;
  totals: Totals;
  byStage: { key: string; amount: bigint }[];
  byResource: { key: string; amount: bigint }[];
}

/** A pipeline's entries in [from, to), per run, oldest run first (at most `limit` runs: the newest). */
export async function pipelineRunMoney(db: Db, w: PipelineWindow & { limit: number }): Promise<RunMoney[]> {
  const { where, params } = windowSql(w);
  const rows = await db.query<{
    run_id: string;
    kind: EntryKind;
    currency: string;
    stage_id: string;
    category: string;
    total: string;
    n: number | string;
    first_at: string;
  }>(
    `SELECT run_id, kind, currency, stage_id, category, CAST(SUM(amount_micros) AS TEXT) AS total, COUNT(*) AS n, MIN(occurred_at) AS first_at
     FROM ledger_entries WHERE ${where} GROUP BY run_id, kind, currency, stage_id, category`,
    params,
  );
  const runs = new Map<string, { firstAt: string; rows: typeof rows }>();
  for (const r of rows) {
    const x = runs.get(r.run_id) ?? { firstAt: r.first_at, rows: [] };
    if (r.first_at < x.firstAt) x.firstAt = r.first_at;
    x.rows.push(r);
    runs.set(r.run_id, x);
  }
  const sum = (rs: typeof rows, key: 'stage_id' | 'category') => {
    const m = new Map<string, bigint>();
    for (const r of rs) if (r.kind === 'cost') m.set(r[key], (m.get(r[key]) ?? 0n) + BigInt(r.total));
    return [...m].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, amount]) => ({ key: k, amount }));
  };
  return [...runs]
    .map(([runId, x]) => ({ runId, firstAt: x.firstAt, totals: foldTotals(x.rows), byStage: sum(x.rows, 'stage_id'), byResource: sum(x.rows, 'category') }))
    .sort((a, b) => (a.firstAt < b.firstAt ? -1 : a.firstAt > b.firstAt ? 1 : 0))
    .slice(-w.limit);
}

/** Names of the pipelines with ledger entries, in name order. */
export async function ledgerPipelines(db: Db): Promise<string[]> {
  return (await db.query<{ pipeline: string }>('SELECT DISTINCT pipeline FROM ledger_entries ORDER BY pipeline')).map((r) => r.pipeline);
}
