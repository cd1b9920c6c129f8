// Money: what a spec is expected to cost and return before it runs, budgets raised while it runs,
// what a run has spent by the meters, and the realised-ROI watch that emits roi.below.
import type { Db } from '../lib/db/types.js';
import type { Logger } from '../lib/logger.js';
import { formatMoneyExact, isMoney, parseMoney } from '../ledger/money.js';
import { mergePriceSheet } from '../ledger/price-sheet.js';
import { loadBookingInput } from '../ledger/repository.js';
import { checkRoiWatches, listRoiAlerts, markAlertEmitted, type RoiAlert, type RoiCheck } from '../ledger/roi-watch.js';
import type { PriceSheet, PriceSheetOverride } from '../ledger/schemas.js';
import { runSpend, type RunSpend } from '../ledger/spend.js';
import type { StageRegistry } from '../plugins/registry.js';
import type { Decision, RunEstimateView, RunPipelineInput, RunStarter } from '../workflows/types.js';
import { EngineError } from './errors.js';
import { estimateSpec } from './estimate.js';
import type { RunView } from './read-model.js';
import { LEDGER_PLUGIN, type ResolvedSpec } from './spec.js';

export interface MoneyDeps {
  db: Db;
  logger: Logger;
  stages: StageRegistry;
  /** The configured price sheet: estimates and spend are priced with it (none: nothing is estimated). */
  priceSheet?: PriceSheet;
  resolve(spec: unknown): ResolvedSpec;
  /** Sends a decision to a run (the engine's Update). */
  decide(id: string, d: Decision): Promise<RunView>;
  /** A run's workflow input (its resolved spec). */
  input(id: string): Promise<RunPipelineInput | undefined>;
  /** Emits an event to the saved pipelines that it triggers. */
  emitEvent(type: string, payload: unknown, o: { startedBy?: RunStarter; eventId?: string }): Promise<RunView[]>;
}

export class Money {
  constructor(private readonly deps: MoneyDeps) {}

  /**
   * What a spec is expected to cost, take and return, from past runs (nothing starts).
   * Throws SpecValidationError for an invalid spec, BAD_ARGUMENT when this host has no price sheet.
   */
  async estimate(spec: unknown): Promise<RunEstimateView> {
    if (!this.deps.priceSheet) throw new EngineError('BAD_ARGUMENT', 'this host has no price sheet, so nothing can be estimated');
    return estimateSpec(this.deps.resolve(spec), { registry: this.deps.stages, db: this.deps.db, priceSheet: this.deps.priceSheet });
  }

  /** Raises a run's budget (or one stage's) to `max`: only upward, on an open run with a budget. */
  async raiseBudget(id: string, max: string, o: { stageId?: string; by?: string } = {}): Promise<RunView> {
    if (!isMoney(max) || parseMoney(max) < 0n)
      throw new EngineError('BAD_ARGUMENT', `max must be a non-negative decimal amount such as "12.50"; got ${JSON.stringify(max)}`);
    return this.deps.decide(id, {
      action: 'raise-budget',
      max: formatMoneyExact(parseMoney(max)),
      ...(o.stageId !== undefined ? { stageId: o.stageId } : {}),
      ...(o.by ? { by: o.by } : {}),
    });
  }

  /**
   * What a run has spent so far by the ledger's meters, priced as its booking will be: the
   * configured sheet with its ledger stage's override (from its booking, else from its spec).
   * Books nothing; undefined when the run is unknown or this host has no price sheet.
   */
  async spend(runId: string): Promise<RunSpend | undefined> {
    const base = this.deps.priceSheet;
    if (!base) return undefined;
    const booked = (await loadBookingInput(this.deps.db, runId)) as { priceSheet?: PriceSheetOverride } | undefined;
    let override = booked?.priceSheet;
    if (!booked) {
      const input = await this.deps.input(runId);
      if (!input) return undefined;
      const ledgerStage = input.stages.find((s) => s.plugin === LEDGER_PLUGIN);
      override = (ledgerStage?.params as { priceSheet?: PriceSheetOverride } | undefined)?.priceSheet;
    }
    let sheet = base;
    try {
      sheet = mergePriceSheet(base, override, 'priceSheet');
    } catch {
      // An override the booking will refuse: price with the configured sheet.
    }
    return runSpend(this.deps.db, runId, sheet);
  }

  /**
   * Judges every watched deployment's realised ROI now; each new crossing under its threshold
   * emits `roi.below` once (its alert id is the event id, so a saved pipeline triggered by it
   * starts exactly once per crossing, even when two API processes check at once). Alerts whose
   * event could not be emitted before are emitted again.
   */
  async checkRoiWatches(now = new Date()): Promise<RoiCheck[]> {
    const checks = await checkRoiWatches(this.deps.db, now);
    for (const a of await listRoiAlerts(this.deps.db, { pending: true, limit: 100 })) {
      const payload = {
        model: a.model,
        version: a.version,
        runId: a.runId,
        pipeline: a.pipeline,
        crossing: a.crossing,
        realisedRoi: a.realisedRoi,
        minRealisedRoi: a.minRealisedRoi,
        windowMs: a.windowMs,
        revenue: a.revenue,
        costShare: a.costShare,
        currency: a.currency,
      };
      try {
        const runs = await this.deps.emitEvent('roi.below', payload, { eventId: a.id });
        await markAlertEmitted(
          this.deps.db,
          a.id,
          runs.map((r) => r.id),
        );
      } catch (e) {
        this.deps.logger.warn('could not emit roi.below; retried at the next check', { alert: a.id, error: (e as Error).message });
      }
    }
    return checks;
  }

  /** Recorded realised-ROI alerts, newest first. */
  roiAlerts(o: { model?: string; limit?: number } = {}): Promise<RoiAlert[]> {
    return listRoiAlerts(this.deps.db, o);
  }
}
