// Estimates, budgets and the realised-ROI watch over GraphQL.
import { formatMoneyExact } from '../../ledger/money.js';
import type { RoiAlert } from '../../ledger/roi-watch.js';
import type { BudgetState, RunEstimateView } from '../../workflows/types.js';
import { apiError } from '../errors.js';
import type { ApiContext, ApiModule } from '../module.js';
import { budgetTypeDefs } from '../schema/budget.js';
import { full, stripNulls, type RunParent } from './core.js';

const action = (a: 'pause' | 'fail') => (a === 'pause' ? 'PAUSE' : 'FAIL');

function budgetView(b: BudgetState) {
  return {
    currency: b.currency,
    max: b.max ?? null,
    onExceed: action(b.onExceed),
    spent: b.spent,
    reserved: Object.entries(b.reserved ?? {}).map(([key, cost]) => ({ key, cost })),
    stages: Object.entries(b.stages).map(([stageId, s]) => ({ stageId, max: s.max, spent: s.spent, onExceed: action(s.onExceed) })),
    raises: b.raises.map((r) => ({ at: r.at, stageId: r.stageId ?? null, from: r.from, to: r.to, by: r.by ?? null })),
  };
}

function estimateView(e: RunEstimateView) {
  return { ...e, stages: e.stages.map((s) => ({ ...s, basis: s.basis.toUpperCase() })) };
}

const alertView = (a: RoiAlert) => ({ ...a, windowSeconds: a.windowMs / 1000 });

export const budgetModule: ApiModule = {
  name: 'budget',
  typeDefs: budgetTypeDefs,
  resolvers: {
    Query: {
      estimateRun: async (_: unknown, a: { spec: unknown }, ctx: ApiContext) => estimateView(await ctx.engine.money.estimate(stripNulls(a.spec))),
      roiAlerts: async (_: unknown, a: { model?: string | null; first?: number }, ctx: ApiContext) => {
        const first = a.first ?? 20;
        if (!Number.isInteger(first) || first < 1 || first > 100) throw apiError('BAD_ARGUMENT', `first must be 1–100; got ${first}`);
        return (await ctx.engine.money.roiAlerts({ ...(a.model != null ? { model: a.model } : {}), limit: first })).map(alertView);
      },
    },
    Mutation: {
      raiseBudget: (_: unknown, a: { runId: string; max: string; stageId?: string | null }, ctx: ApiContext) =>
        ctx.engine.money.raiseBudget(a.runId, a.max, { ...(a.stageId != null ? { stageId: a.stageId } : {}), by: ctx.principal.name }),
      checkRoiWatches: (_: unknown, __: unknown, ctx: ApiContext) => ctx.engine.money.checkRoiWatches(),
    },
    PipelineRun: {
      estimate: async (r: RunParent, _: unknown, ctx: ApiContext) => {
        const e = (await full(r, ctx))?.estimate;
        return e ? estimateView(e) : null;
      },
      budget: async (r: RunParent, _: unknown, ctx: ApiContext) => {
        const b = (await full(r, ctx))?.budget;
        return b ? budgetView(b) : null;
      },
      spend: async (r: RunParent, _: unknown, ctx: ApiContext) => {
        const s = await ctx.engine.money.spend(r.id);
        if (!s) return null;
        return {
          currency: s.currency,
          total: formatMoneyExact(s.total),
          byStage: Object.entries(s.byStage).map(([key, v]) => ({ key, cost: formatMoneyExact(v) })),
        };
      },
    },
    StageRun: {
      budgetPause: (s: { budgetPause?: string }) => s.budgetPause ?? null,
    },
  },
};
