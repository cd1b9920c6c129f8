import type { ApiContext, ApiModule } from '../module.js';
import { operationsTypeDefs } from '../schema/operations.js';
import { starterOf, stripNulls } from './core.js';
import { authorize } from '../authz.js';
import { EngineError } from '../../engine/index.js';
import type { RunStarter } from '../../workflows/types.js';

type Ctx = ApiContext;

/**
 * Who a new schedule acts as: the caller, or (admins only) the active token named by runAs, e.g. a
 * service principal's, so the schedule does not depend on a person's token staying active.
 */
async function scheduleActor(ctx: Ctx, runAs: string | null | undefined): Promise<RunStarter> {
  if (runAs == null) return starterOf(ctx);
  authorize(ctx.principal, 'admin', 'schedulePipeline(runAs)');
  const t = (await ctx.tokens.list()).find((x) => x.id === runAs);
  if (!t || !(await ctx.tokens.isActive(t.id))) throw new EngineError('BAD_ARGUMENT', `runAs: no active token has the id "${runAs}"`);
  return { name: t.name, role: t.role, tokenId: t.id };
}

/** Operator actions on runs, saved pipelines, schedules, events and the live run stream: thin over the engine. */
export const operationsModule: ApiModule = {
  name: 'operations',
  typeDefs: operationsTypeDefs,
  resolvers: {
    Query: {
      savedPipelines: (_: unknown, __: unknown, ctx: Ctx) => ctx.engine.triggers.pipelines.list(),
      savedPipeline: (_: unknown, a: { name: string }, ctx: Ctx) => ctx.engine.triggers.pipelines.get(a.name),
      schedules: (_: unknown, a: { pipeline?: string | null }, ctx: Ctx) => ctx.engine.triggers.schedules(a.pipeline ?? undefined),
    },
    Mutation: {
      // Decisions act with the decider's rights (the rerun stage gets them as its starter) and are recorded with their name.
      retryStage: (_: unknown, a: { runId: string; stageId: string; params?: unknown; pluginVersion?: string | null }, ctx: Ctx) =>
        ctx.engine.retryStage(a.runId, a.stageId, a.params ?? undefined, a.pluginVersion ?? undefined, { by: starterOf(ctx) }),
      skipStage: (_: unknown, a: { runId: string; stageId: string }, ctx: Ctx) => ctx.engine.skipStage(a.runId, a.stageId, { by: starterOf(ctx) }),
      abortRun: (_: unknown, a: { runId: string; reason: string }, ctx: Ctx) => ctx.engine.abort(a.runId, a.reason, { by: starterOf(ctx) }),
      cancelRun: (_: unknown, a: { runId: string }, ctx: Ctx) => ctx.engine.cancel(a.runId),
      resumeRun: async (_: unknown, a: { runId: string; fromStage?: string | null; dryRun: boolean }, ctx: Ctx) => {
        const r = await ctx.engine.resume(a.runId, { dryRun: a.dryRun, startedBy: starterOf(ctx), ...(a.fromStage != null ? { fromStage: a.fromStage } : {}) });
        return { plan: r.plan, run: r.run ?? null };
      },
      savePipeline: (_: unknown, a: { spec: unknown; triggers?: string[] | null }, ctx: Ctx) =>
        ctx.engine.triggers.savePipeline(stripNulls(a.spec), a.triggers ?? [], { savedBy: starterOf(ctx) }),
      deleteSavedPipeline: (_: unknown, a: { name: string }, ctx: Ctx) => ctx.engine.triggers.pipelines.delete(a.name),
      schedulePipeline: async (_: unknown, a: { name: string; cron?: string | null; every?: string | null; runAs?: string | null }, ctx: Ctx) =>
        ctx.engine.triggers.schedule(a.name, {
          startedBy: await scheduleActor(ctx, a.runAs),
          ...(a.cron ? { cron: a.cron } : {}),
          ...(a.every ? { every: a.every } : {}),
        }),
      pauseSchedule: (_: unknown, a: { id: string; paused: boolean }, ctx: Ctx) => ctx.engine.triggers.pauseSchedule(a.id, a.paused),
      deleteSchedule: (_: unknown, a: { id: string }, ctx: Ctx) => ctx.engine.triggers.deleteSchedule(a.id),
      emitEvent: (_: unknown, a: { type: string; payload?: unknown; eventId?: string | null }, ctx: Ctx) =>
        ctx.engine.triggers.emitEvent(a.type, a.payload ?? {}, { startedBy: starterOf(ctx), ...(a.eventId != null ? { eventId: a.eventId } : {}) }),
    },
    Subscription: {
      runEvents: {
        subscribe: (_: unknown, a: { runId: string }, ctx: Ctx) => ctx.engine.follow(a.runId, ctx.signal),
        resolve: (e: unknown) => e,
      },
    },
  },
};
