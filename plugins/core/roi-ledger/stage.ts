import { defineStage, PLUGIN_API_VERSION } from '../../contract.js';
import { roiLedgerParamsSchema } from './params.js';

/**
 * `core:roi-ledger`: the last stage of a pipeline. Prices every attempt's metered usage of the
 * run (failed attempts included) with the price sheet, books per-stage and per-resource cost
 * entries, the declared costs and the expected revenue, and reports cost, revenue and
 * ROI = (R − C) / C. Safe to retry or replay: entries are keyed, nothing is booked twice.
 * Uses the `ledger` service. Fails (non-retryably) with LEDGER_ZERO_COST when the run cost
 * nothing, rather than divide by zero.
 */
export function roiLedgerStage() {
  return defineStage({
    name: 'core:roi-ledger',
    // What the run is expected to return and what it declares does not change what booking costs.
    estimateScale: { ignore: ['revenue', 'costs', 'priceSheet'] },
    version: '1.0.0',
    apiVersion: PLUGIN_API_VERSION,
    description: 'Books the run’s metered and declared costs and its expected revenue, and computes ROI = (R − C) / C',
    paramsSchema: roiLedgerParamsSchema,
    consumes: [],
    produces: [],
    resource: 'cpu',
    retry: { maximumAttempts: 5 },
    timeouts: { startToCloseMs: 60_000 },
    async run(ctx, params) {
      const booking = await ctx.services.ledger.bookRun({
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
