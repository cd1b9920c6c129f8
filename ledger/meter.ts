import { randomUUID } from 'node:crypto';
import { badInput } from '../lib/errors.js';
import type { Db } from '../lib/db/types.js';
import { formatMoneyExact } from './money.js';
import { recordStageProfile, type StageProfile } from './profiles.js';
import { runSpend, type RunSpend } from './spend.js';
import { saveRoiWatch, type RoiWatch } from './roi-watch.js';
import { describeIssues, mergePriceSheet } from './price-sheet.js';
import { computeRoi, priceDeclared, priceExpectedRevenue, priceUsage } from './pricing.js';
import {
  bookPendingPredictions,
  insertPredictions,
  insertUsage,
  loadBookingInput,
  lockRun,
  reconcileRun,
  runTotals,
  saveRunRevenue,
  usageTotals,
  type ReconcileResult,
} from './repository.js';
import {
  declaredCostSchema,
  predictionsRecordSchema,
  revenueModelSchema,
  stageUsageSchema,
  type DeclaredCost,
  type PredictionsRecord,
  type PriceSheet,
  type PriceSheetOverride,
  type RevenueModel,
  type StageUsage,
} from './schemas.js';

export interface BookRunInput {
  runId: string;
  pipeline: string;
  /** The ledger stage's id: declared costs and expected revenue are booked against it. */
  stageId: string;
  priceSheet?: PriceSheetOverride | undefined;
  costs?: DeclaredCost[] | undefined;
  revenue: RevenueModel;
}

/** What the ledger stage booked. Money as exact decimal strings; roi with 4 places. */
export interface RunBooking {
  currency: string;
  cost: string;
  expectedRevenue: string;
  realisedRevenue: string;
  roi: string;
  booked: number;
  reversed: number;
  unchanged: number;
}

export interface LedgerService {
  /** The configured price sheet (before any pipeline override). */
  readonly priceSheet: PriceSheet;
  /**
   * Meter hook: call after every stage attempt, success or failure. Keyed by
   * (runId, workflowRunId, activityId, attempt): recording the same attempt twice is a no-op;
   * partial usage (`partial: true`, written while the attempt runs) is replaced by later records.
   * Usage of a run already booked re-books it (reconciled: only the difference is booked).
   * Throws a non-retryable USAGE_INVALID error for malformed usage.
   */
  recordUsage(usage: StageUsage): Promise<void>;
  /** Prices the run's usage, books it with declared costs and expected revenue, returns totals. Idempotent. */
  bookRun(input: BookRunInput): Promise<RunBooking>;
  /** Served predictions → realised revenue of the run that produced the model. Idempotent per `key`. */
  recordPredictions(input: PredictionsRecord): Promise<void>;
  /** What the run has spent so far, priced with `sheet` (the configured one by default); books nothing. */
  spend(runId: string, sheet?: PriceSheet): Promise<RunSpend>;
  /** Records the profile of a stage that succeeded (what estimates learn from). */
  recordStageProfile(p: StageProfile): Promise<void>;
  /** Records the realised-ROI watch a run declared. */
  saveRoiWatch(w: RoiWatch): Promise<void>;
}

/**
 * The ledger as the worker and the API use it. Does no I/O until called; run
 * `migrate(db, ledgerMigrations)` once at start-up before using it.
 */
export function createLedgerService(db: Db, opts: { priceSheet: PriceSheet; now?: () => Date }): LedgerService {
  const now = opts.now ?? (() => new Date());
  return {
    priceSheet: opts.priceSheet,
    async recordUsage(usage) {
      const u = stageUsageSchema.safeParse(usage);
      if (!u.success) throw badInput(`invalid stage usage: ${describeIssues(u.error, 'usage')}`, 'USAGE_INVALID');
      const at = now();
      // Under the run's lock: either this line is in before a booking reads the usage, or the
      // booking is saved before this check sees it and the run is booked again with it.
      const late = await db.tx(async (tx) => {
        await lockRun(tx, u.data.runId);
        await insertUsage(tx, u.data, at);
        const saved = (await loadBookingInput(tx, u.data.runId)) as BookRunInput | undefined;
        // The ledger stage's own partial usage waits for its final record (or its retry's booking).
        return saved && !(u.data.partial && saved.stageId === u.data.stageId) ? saved : undefined;
      });
      // Usage that arrives after the run was booked (flushed late from an outbox) is booked by
      // reconciling the run again with what its ledger stage asked; unchanged lines book nothing.
      // So is the ledger stage's own last attempt: its usage is recorded after it booked.
      if (late) await bookRun(db, opts.priceSheet, late, at);
    },
    bookRun: (input) => bookRun(db, opts.priceSheet, input, now()),
    recordPredictions: (input) => recordPredictions(db, input, now()),
    spend: (runId, sheet) => runSpend(db, runId, sheet ?? opts.priceSheet),
    recordStageProfile: (p) => recordStageProfile(db, p, now()),
    saveRoiWatch: (w) => saveRoiWatch(db, w, now()),
  };
}

/** See LedgerService.bookRun. Throws LEDGER_ZERO_COST (non-retryable) before booking if the run cost nothing. */
export async function bookRun(db: Db, base: PriceSheet, input: BookRunInput, at = new Date()): Promise<RunBooking> {
  const sheet = mergePriceSheet(base, input.priceSheet, 'params.priceSheet');
  const revenue = revenueModelSchema.safeParse(input.revenue);
  if (!revenue.success) throw badInput(`invalid revenue model: ${describeIssues(revenue.error, 'params.revenue')}`, 'REVENUE_MODEL_INVALID');
  const costs = (input.costs ?? []).map((c, i) => {
    const r = declaredCostSchema.safeParse(c);
    if (!r.success) throw badInput(`invalid declared cost: ${describeIssues(r.error, `params.costs.${i}`)}`, 'DECLARED_COST_INVALID');
    return r.data;
  });

  return db.tx(async (tx) => {
    // Lock first: the totals read below must not change before this booking commits.
    await lockRun(tx, input.runId);
    const usage = await usageTotals(tx, input.runId);
    const lines = [...priceUsage(usage, sheet), ...priceDeclared(costs, input.stageId), priceExpectedRevenue(revenue.data, input.stageId)];
    const cost = lines.filter((l) => l.kind === 'cost').reduce((s, l) => s + l.amount, 0n);
    if (cost === 0n) {
      throw badInput(
        `cannot compute ROI for run ${input.runId}: its total cost is 0 ${sheet.currency} ` +
          `(${usage.length === 0 ? 'no stage usage was metered' : 'metered usage priced at 0'} and no declared costs), and ROI = (R − C) / C needs C > 0`,
        'LEDGER_ZERO_COST',
      );
    }
    const ctx = { runId: input.runId, pipeline: input.pipeline, currency: sheet.currency, now: at };
    const result: ReconcileResult = await reconcileRun(tx, ctx, lines);
    const saved: BookRunInput = {
      runId: input.runId,
      pipeline: input.pipeline,
      stageId: input.stageId,
      ...(input.priceSheet ? { priceSheet: input.priceSheet } : {}),
      ...(costs.length ? { costs } : {}),
      revenue: revenue.data,
    };
    await saveRunRevenue(tx, ctx, revenue.data, saved);
    await bookPendingPredictions(tx, input.runId, at);
    const totals = await runTotals(tx, input.runId);
    if (totals.currencies.length > 1) {
      throw badInput(`run ${input.runId} has ledger entries in several currencies (${totals.currencies.join(', ')})`, 'LEDGER_CURRENCY_MISMATCH');
    }
    const roi = computeRoi(totals.expectedRevenue, totals.cost);
    return {
      currency: sheet.currency,
      cost: formatMoneyExact(totals.cost),
      expectedRevenue: formatMoneyExact(totals.expectedRevenue),
      realisedRevenue: formatMoneyExact(totals.realisedRevenue),
      roi: roi.roi ?? '0',
      ...result,
    };
  });
}

/**
 * Books predictions served by a deployed model as realised revenue of the run that produced it,
 * priced at that run's revenue model (pricePer1000). Before the run's ledger stage has booked,
 * the batch is kept and booked by the ledger stage. Pass `key` to make retries safe; without it
 * each call is a new batch.
 */
export async function recordPredictions(db: Db, input: PredictionsRecord, at = new Date()): Promise<void> {
  const r = predictionsRecordSchema.safeParse(input);
  if (!r.success) throw badInput(`invalid predictions record: ${describeIssues(r.error, 'predictions')}`, 'PREDICTIONS_INVALID');
  const p = r.data;
  const when = p.at === undefined ? at : new Date(p.at);
  await insertPredictions(db, { id: p.key ?? randomUUID(), runId: p.runId, model: p.model, version: p.version, count: p.count, at: when.toISOString() }, at);
  // Insert first, then look for the run's revenue model: whichever of this and the ledger stage
  // comes second sees the other's write, so the batch is booked exactly once (keyed by batch id).
  await db.tx((tx) => bookPendingPredictions(tx, p.runId, at));
}

/**
 * Adapts recordPredictions to the model server's `onPredictions(model, version, count)` hook.
 * `resolveRunId` finds the run that produced a model version (the model registry knows it).
 * Errors are the caller's to log; the model server already catches and logs hook failures.
 */
export function createPredictionsHook(
  db: Db,
  opts: { resolveRunId: (model: string, version: number) => Promise<string | undefined>; now?: () => Date },
): (model: string, version: number, count: number) => Promise<void> {
  return async (model, version, count) => {
    if (count <= 0) return;
    const runId = await opts.resolveRunId(model, version);
    if (!runId) throw new Error(`no run is known for model ${model}@${version}; predictions not booked`);
    await recordPredictions(db, { model, version, runId, count }, opts.now?.() ?? new Date());
  };
}
