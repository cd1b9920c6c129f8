import { z } from 'zod';
import type { LedgerService } from '../../../ledger/meter.js';
import { declaredCostSchema, priceSheetOverrideSchema, revenueModelSchema } from '../../../ledger/schemas.js';
import { defineStage, PLUGIN_API_VERSION, type StagePlugin } from '../../contract.js';
import { requireService } from '../../services.js';

export const roiLedgerParamsSchema = z
  .object({
    /** Overrides fields of the configured price sheet for this pipeline. */
    priceSheet: priceSheetOverrideSchema.optional(),
    /** Costs the meters cannot see: data bought, labelling, people's time. */
    costs: z.array(declaredCostSchema).max(1000).optional(),
    /** What the run is expected to return. */
    revenue: revenueModelSchema,
  })
  .strict();
export type RoiLedgerParams = z.infer<typeof roiLedgerParamsSchema>;

/**
 * `core:roi-ledger`: the last stage of a pipeline. Prices every attempt's metered usage of the
 * run (failed attempts included) with the price sheet, books per-stage and per-resource cost
 * entries, the declared costs and the expected revenue, and reports cost, revenue and
 * ROI = (R − C) / C. Safe to retry or replay: entries are keyed, nothing is booked twice.
 * Needs the `ledger` service (createLedgerService). Fails with LEDGER_ZERO_COST when the run
 * cost nothing, rather than divide by zero.
 */
export function roiLedgerStage(): StagePlugin<RoiLedgerParams> {
  return defineStage<RoiLedgerParams>({
    name: 'core:roi-ledger',
    version: '1.0.0',
    apiVersion: PLUGIN_API_VERSION,
    description: 'Books the run’s metered and declared costs and its expected revenue, and computes ROI = (R − C) / C',
    paramsSchema: roiLedgerParamsSchema,
    consumes: [],
    produces: [],
    resource: 'cpu',
    retry: {
      maximumAttempts: 5,
      nonRetryableErrorTypes: ['LEDGER_ZERO_COST', 'PRICE_SHEET_INVALID', 'REVENUE_MODEL_INVALID', 'DECLARED_COST_INVALID', 'LEDGER_CURRENCY_MISMATCH'],
    },
    timeouts: { startToCloseMs: 60_000 },
    async run(ctx, params) {
      const ledger = requireService<LedgerService>(ctx.services, 'ledger');
      const booking = await ledger.bookRun({
        runId: ctx.runId,
        pipeline: ctx.pipeline,
        stageId: ctx.stageId,
        priceSheet: params.priceSheet,
        costs: params.costs,
        revenue: params.revenue,
      });
      ctx.logger.info('ledger booked', { runId: ctx.runId, ...booking });
      return {
        outputs: {},
        metrics: {
          currency: booking.currency,
          cost: booking.cost,
          revenue: booking.expectedRevenue,
          realisedRevenue: booking.realisedRevenue,
          roi: booking.roi,
          entriesBooked: booking.booked,
          entriesReversed: booking.reversed,
        },
      };
    },
  });
}
