// The ROI ledger over GraphQL: a run's entries, a pipeline's ROI over a period, and PipelineRun.roi.
import { formatMoneyExact } from '../../ledger/money.js';
import { computeRoi } from '../../ledger/pricing.js';
import { listEntries, pipelineTotals, runTotals, type LedgerEntry, type Totals } from '../../ledger/repository.js';
import { apiError } from '../errors.js';
import type { ApiContext, ApiModule } from '../module.js';
import { ledgerTypeDefs } from '../schema/ledger.js';

const kindToEnum = { cost: 'COST', expected_revenue: 'EXPECTED_REVENUE', realised_revenue: 'REALISED_REVENUE' } as const;

function entryView(e: LedgerEntry) {
  return {
    id: e.id,
    runId: e.runId,
    pipeline: e.pipeline,
    stageId: e.stageId,
    kind: kindToEnum[e.kind],
    category: e.category,
    amount: formatMoneyExact(e.amountMicros),
    currency: e.currency,
    quantity: e.quantity,
    unit: e.unit,
    unitPrice: e.unitPrice,
    description: e.description,
    reverses: e.reverses,
    occurredAt: e.occurredAt,
    bookedAt: e.bookedAt,
  };
}

function roiView(t: Totals, what: string) {
  if (t.currencies.length > 1) {
    throw apiError('LEDGER_CURRENCY_MISMATCH', `${what} has ledger entries in several currencies (${t.currencies.join(', ')}); ROI needs one`);
  }
  const expected = computeRoi(t.expectedRevenue, t.cost);
  const realised = computeRoi(t.realisedRevenue, t.cost);
  return {
    currency: t.currencies[0] ?? null,
    cost: formatMoneyExact(t.cost),
    revenue: formatMoneyExact(t.expectedRevenue),
    roi: expected.roi,
    realisedRevenue: formatMoneyExact(t.realisedRevenue),
    realisedRoi: realised.roi,
    explanation: expected.explanation,
  };
}

function isoOrUndefined(v: unknown, arg: string): string | undefined {
  if (v === null || v === undefined) return undefined;
  const d = v instanceof Date ? v : new Date(String(v));
  if (Number.isNaN(d.getTime())) throw apiError('BAD_DATE', `${arg}: not an ISO-8601 date-time`);
  return d.toISOString();
}

/** GraphQL for the ledger: reads over the ledger tables of ctx.db (migrated at start by app/). */
export const ledgerModule: ApiModule = {
  name: 'ledger',
  typeDefs: ledgerTypeDefs,
  resolvers: {
    Query: {
      ledger: async (_: unknown, a: { runId: string }, ctx: ApiContext) => (await listEntries(ctx.db, a.runId)).map(entryView),
      roi: async (_: unknown, a: { pipeline: string; from?: unknown; to?: unknown }, ctx: ApiContext) => {
        const from = isoOrUndefined(a.from, 'from');
        const to = isoOrUndefined(a.to, 'to');
        if (from && to && from >= to) throw apiError('BAD_INPUT', '`from` must be before `to`');
        const t = await pipelineTotals(ctx.db, { pipeline: a.pipeline, from, to });
        return {
          pipeline: a.pipeline,
          from: from ?? null,
          to: to ?? null,
          runs: t.runs,
          ...roiView(t, `pipeline ${a.pipeline}`),
          byStage: t.byStage.map((b) => ({ key: b.key, cost: formatMoneyExact(b.amount) })),
          byResource: t.byResource.map((b) => ({ key: b.key, cost: formatMoneyExact(b.amount) })),
        };
      },
    },
    PipelineRun: {
      roi: async (run: { id: string }, _: unknown, ctx: ApiContext) => {
        const t = await runTotals(ctx.db, run.id);
        if (t.entries === 0) return null;
        const v = roiView(t, `run ${run.id}`);
        return { ...v, currency: v.currency ?? '' };
      },
    },
  },
};
