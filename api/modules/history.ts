// What a run leaves behind, over GraphQL: stage attempts and per-epoch metrics (recorded by the
// worker), the params stages ran with, money per run, and the facts of a model version.
import { listAttempts, listEpochs, type AttemptRecord, type EpochRecord } from '../../activities/stage-records.js';
import type { RunPipelineInput } from '../../workflows/types.js';
import { formatMoneyExact } from '../../ledger/money.js';
import { computeRoi } from '../../ledger/pricing.js';
import { ledgerPipelines, pipelineRunMoney } from '../../ledger/repository.js';
import { apiError, redactForRole } from '../errors.js';
import type { ApiContext, ApiModule } from '../module.js';
import { historyTypeDefs } from '../schema/history.js';
import { RUN_OF_STAGE } from './core.js';

/** Per-request memo (keyed by the request's run loader): each run's records and input are read once per request. */
const memo = new WeakMap<object, Map<string, Promise<unknown>>>();
function once<T>(ctx: ApiContext, key: string, load: () => Promise<T>): Promise<T> {
  let m = memo.get(ctx.runs);
  if (!m) memo.set(ctx.runs, (m = new Map()));
  let p = m.get(key) as Promise<T> | undefined;
  if (!p) m.set(key, (p = load()));
  return p;
}

interface StageParent {
  id: string;
  paramsOverride?: unknown;
  [RUN_OF_STAGE]?: string;
}

const attemptsOf = (ctx: ApiContext, runId: string) => once(ctx, `attempts:${runId}`, () => listAttempts(ctx.db, runId));
const epochsOf = (ctx: ApiContext, runId: string) => once(ctx, `epochs:${runId}`, () => listEpochs(ctx.db, runId));
const inputOf = (ctx: ApiContext, runId: string) => once(ctx, `input:${runId}`, () => ctx.engine.input(runId).catch(() => undefined));
async function resolvedStage(s: StageParent, ctx: ApiContext): Promise<RunPipelineInput['stages'][number] | undefined> {
  const runId = s[RUN_OF_STAGE];
  return runId ? (await inputOf(ctx, runId))?.stages.find((x) => x.id === s.id) : undefined;
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

function attemptView(a: AttemptRecord) {
  return { ...a, replica: a.replica < 0 ? null : a.replica, role: a.role === 'reduce' ? 'REDUCE' : 'RUN', outcome: a.outcome.toUpperCase() };
}

function epochView(e: EpochRecord) {
  return {
    round: e.round,
    attempt: e.attempt,
    replica: e.replica < 0 ? null : e.replica,
    epoch: e.epoch,
    trainLoss: num(e.metrics.trainLoss) ?? num(e.metrics.loss),
    trainAccuracy: num(e.metrics.trainAccuracy) ?? num(e.metrics.accuracy),
    valLoss: num(e.metrics.valLoss),
    valAccuracy: num(e.metrics.valAccuracy),
    values: e.metrics,
    recordedAt: e.recordedAt,
  };
}

function isoOrUndefined(v: unknown, arg: string): string | undefined {
  if (v === null || v === undefined) return undefined;
  const d = v instanceof Date ? v : new Date(String(v));
  if (Number.isNaN(d.getTime())) throw apiError('BAD_DATE', `${arg}: not an ISO-8601 date-time`);
  return d.toISOString();
}

export const historyModule: ApiModule = {
  name: 'history',
  typeDefs: historyTypeDefs,
  resolvers: {
    StageRun: {
      params: async (s: StageParent, _: unknown, ctx: ApiContext) => s.paramsOverride ?? (await resolvedStage(s, ctx))?.params ?? null,
      needs: async (s: StageParent, _: unknown, ctx: ApiContext) => (await resolvedStage(s, ctx))?.needs ?? [],
      replicas: async (s: StageParent, _: unknown, ctx: ApiContext) => (await resolvedStage(s, ctx))?.replicas ?? 1,
      attemptHistory: async (s: StageParent, _: unknown, ctx: ApiContext) => {
        const runId = s[RUN_OF_STAGE];
        return runId ? (await attemptsOf(ctx, runId)).filter((a) => a.stageId === s.id).map(attemptView) : [];
      },
      epochs: async (s: StageParent, _: unknown, ctx: ApiContext) => {
        const runId = s[RUN_OF_STAGE];
        return runId ? (await epochsOf(ctx, runId)).filter((e) => e.stageId === s.id).map(epochView) : [];
      },
    },
    StageAttempt: {
      error: (a: { error?: string | null }, _: unknown, ctx: ApiContext) => redactForRole(a.error ?? null, ctx.principal, ctx.dataRoots),
    },
    ModelVersion: {
      p50LatencyMs: (v: { metrics: Record<string, unknown> }) => num(v.metrics.p50LatencyMs),
      sizeBytes: (v: { metrics: Record<string, unknown> }) => num(v.metrics.sizeBytes),
      dtype: (v: { metrics: Record<string, unknown> }) => (typeof v.metrics.weightFormat === 'string' ? v.metrics.weightFormat : null),
      sparsity: async (v: { runId: string }, _: unknown, ctx: ApiContext) => {
        const run = await ctx.runs.load(v.runId).catch(() => undefined);
        for (const s of run?.stages ?? []) if (typeof s.metrics.sparsity === 'number') return s.metrics.sparsity;
        return null;
      },
      gates: async (v: { runId: string; stageId: string }, _: unknown, ctx: ApiContext) =>
        ((await ctx.engine.deploymentGates(v.runId, v.stageId).catch(() => undefined)) as Record<string, unknown>[] | undefined)?.map((g) => ({
          gate: String(g.gate),
          threshold: num(g.threshold) ?? 0,
          measured: num(g.measured) ?? 0,
          passed: g.passed === true,
          note: typeof g.note === 'string' ? g.note : null,
        })) ?? null,
    },
    Query: {
      ledgerPipelines: (_: unknown, __: unknown, ctx: ApiContext) => ledgerPipelines(ctx.db),
      roiByRun: async (_: unknown, a: { pipeline: string; from?: unknown; to?: unknown; last: number }, ctx: ApiContext) => {
        const from = isoOrUndefined(a.from, 'from');
        const to = isoOrUndefined(a.to, 'to');
        if (from && to && from >= to) throw apiError('BAD_INPUT', '`from` must be before `to`');
        if (!Number.isInteger(a.last) || a.last < 1 || a.last > 500) throw apiError('BAD_INPUT', 'last must be between 1 and 500');
        const runs = await pipelineRunMoney(ctx.db, { pipeline: a.pipeline, from, to, limit: a.last });
        return runs.map((r) => {
          const expected = computeRoi(r.totals.expectedRevenue, r.totals.cost);
          const realised = computeRoi(r.totals.realisedRevenue, r.totals.cost);
          return {
            runId: r.runId,
            at: r.firstAt,
            currency: r.totals.currencies[0] ?? null,
            cost: formatMoneyExact(r.totals.cost),
            revenue: formatMoneyExact(r.totals.expectedRevenue),
            realisedRevenue: formatMoneyExact(r.totals.realisedRevenue),
            roi: expected.roi,
            realisedRoi: realised.roi,
            byStage: r.byStage.map((b) => ({ key: b.key, cost: formatMoneyExact(b.amount) })),
            byResource: r.byResource.map((b) => ({ key: b.key, cost: formatMoneyExact(b.amount) })),
          };
        });
      },
    },
  },
};
