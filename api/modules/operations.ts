import { randomBytes } from 'node:crypto';
import { ScheduleNotFoundError, WorkflowUpdateFailedError } from '@temporalio/client';
import { resolveSpec, SpecValidationError } from '../../plugins/spec.js';
import { runPipelineWorkflow } from '../../workflows/index.js';
import { decideUpdate } from '../../workflows/messages.js';
import { PipelineNameKey, RunStatusKey } from '../../workflows/search-attributes.js';
import type { Decision } from '../../workflows/types.js';
import { migrateOps, savedPipelines } from '../../lib/ops-store.js';
import { parseDurationMs } from '../../lib/duration.js';
import { formatPath } from '../../plugins/spec.js';
import { apiError, notFound, specInvalid } from '../errors.js';
import type { ApiContext, ApiModule } from '../module.js';
import { planResume } from '../resume.js';
import { loadRun, type RunView } from '../runs.js';
import { requireRun, startRun, stripNulls, taskQueuesOf } from './core.js';

const typeDefs = /* GraphQL */ `
  enum ResumeAction { REUSE RERUN }
  type ResumePlanStage { id: String! action: ResumeAction! reason: String! }
  type ResumePlan { from: String! startAt: String stages: [ResumePlanStage!]! }
  type ResumeResult { plan: ResumePlan! "The new run; null for a dry run." run: PipelineRun }

  type SavedPipeline { name: String! spec: JSON! triggers: [String!]! updatedAt: DateTime! }
  type PipelineSchedule {
    id: ID!
    pipeline: String!
    cron: [String!]!
    every: [String!]!
    paused: Boolean!
    nextActionTimes: [DateTime!]!
    recentRuns: [String!]!
  }

  "What happened in a run, streamed live: stage lifecycle and per-epoch progress."
  type RunStreamEvent {
    seq: Int!
    at: DateTime!
    "RUN_STARTED, STAGE_STARTED, STAGE_PROGRESS, STAGE_RETRIED, STAGE_SUCCEEDED, STAGE_FAILED, STAGE_SKIPPED, STAGE_REUSED, RUN_PAUSED, RUN_RESUMED, RUN_COMPLETED, RUN_FAILED, RUN_CANCELLED, RUN_CLOSED"
    type: String!
    stageId: String
    message: String
    attempt: Int
    progress: JSON
    runStatus: RunStatus!
  }

  extend type Query {
    savedPipelines: [SavedPipeline!]!
    savedPipeline(name: String!): SavedPipeline
    schedules(pipeline: String): [PipelineSchedule!]!
  }

  extend type Mutation {
    "Retry a paused stage, optionally with corrected params (checked against the plugin's schema)."
    retryStage(runId: ID!, stageId: String!, params: JSON): PipelineRun!
    "Skip a paused stage; refused when a later stage needs its outputs."
    skipStage(runId: ID!, stageId: String!): PipelineRun!
    abortRun(runId: ID!, reason: String!): PipelineRun!
    "Cancel a running run: the running stage stops at its next heartbeat; completed artifacts stay."
    cancelRun(runId: ID!, reason: String): PipelineRun!
    "Start a new run of the same spec reusing the outputs of the stages that completed (before fromStage)."
    resumeRun(runId: ID!, fromStage: String, dryRun: Boolean = false): ResumeResult!

    savePipeline(spec: PipelineSpecInput!, triggers: [String!]): SavedPipeline!
    deleteSavedPipeline(name: String!): Boolean!
    "Start a saved pipeline on a schedule: a cron expression and/or an interval such as 30s or 1h."
    schedulePipeline(name: String!, cron: String, every: String): PipelineSchedule!
    pauseSchedule(id: ID!, paused: Boolean = true): PipelineSchedule!
    deleteSchedule(id: ID!): Boolean!
    "Start every saved pipeline whose triggers include this event type; {{event.x}} in params takes the payload's x."
    emitEvent(type: String!, payload: JSON): [PipelineRun!]!
  }

  type Subscription {
    runEvents(runId: ID!): RunStreamEvent!
  }
`;

async function decide(ctx: ApiContext, runId: string, d: Decision): Promise<RunView> {
  const handle = ctx.temporal.workflow.getHandle(runId);
  const run = await requireRun(ctx, runId);
  if (run.status !== 'PAUSED') throw apiError('DECISION_REJECTED', `decision refused: run is ${run.status}, not PAUSED; decisions apply to paused runs only`, { reason: `run is ${run.status}` });
  try {
    await handle.executeUpdate(decideUpdate, { args: [d] });
  } catch (e) {
    if (e instanceof WorkflowUpdateFailedError) {
      const reason = (e.cause as Error | undefined)?.message ?? e.message;
      throw apiError('DECISION_REJECTED', `decision refused: ${reason}`, { reason });
    }
    throw e;
  }
  return (await loadRun(ctx, runId))!;
}

/** Replaces `{{event.a.b}}` in string params with the payload's value (whole-string placeholders keep the value's type). */
export function applyEventPayload(v: unknown, event: { type: string; payload: unknown }): unknown {
  const lookup = (p: string): unknown => {
    const parts = p.split('.');
    let cur: unknown = { event: { type: event.type, ...(event.payload && typeof event.payload === 'object' ? (event.payload as object) : {}) } };
    for (const k of parts) cur = cur && typeof cur === 'object' ? (cur as Record<string, unknown>)[k] : undefined;
    return cur;
  };
  if (typeof v === 'string') {
    const whole = /^\{\{\s*([\w.]+)\s*\}\}$/.exec(v);
    if (whole) {
      const x = lookup(whole[1]!);
      if (x === undefined) throw apiError('EVENT_PAYLOAD_MISSING', `params refer to {{${whole[1]}}}, which the event payload does not have`);
      return x;
    }
    return v.replace(/\{\{\s*([\w.]+)\s*\}\}/g, (_, p: string) => {
      const x = lookup(p);
      if (x === undefined) throw apiError('EVENT_PAYLOAD_MISSING', `params refer to {{${p}}}, which the event payload does not have`);
      return String(x);
    });
  }
  if (Array.isArray(v)) return v.map((x) => applyEventPayload(x, event));
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, applyEventPayload(x, event)]));
  return v;
}

async function scheduleView(ctx: ApiContext, id: string) {
  const d = await ctx.temporal.schedule.getHandle(id).describe();
  return {
    id,
    pipeline: String(d.memo?.pipeline ?? ''),
    cron: (d.memo?.cron as string[] | undefined) ?? [],
    every: (d.memo?.every as string[] | undefined) ?? [],
    paused: d.state.paused,
    nextActionTimes: d.info.nextActionTimes,
    recentRuns: d.info.recentActions.map((a) => a.action.workflow.workflowId),
  };
}

export function operationsModule(): ApiModule {
  return {
    name: 'operations',
    typeDefs,
    async init(ctx) {
      await migrateOps(ctx.db);
      return {};
    },
    resolvers: {
      Query: {
        savedPipelines: (_: unknown, __: unknown, ctx: ApiContext) => savedPipelines(ctx.db).list(),
        savedPipeline: (_: unknown, a: { name: string }, ctx: ApiContext) => savedPipelines(ctx.db).get(a.name),
        schedules: async (_: unknown, a: { pipeline?: string | null }, ctx: ApiContext) => {
          const out = [];
          for await (const s of ctx.temporal.schedule.list()) {
            if (!s.scheduleId.startsWith('capstan/')) continue;
            if (a.pipeline && s.memo?.pipeline !== a.pipeline) continue;
            out.push(await scheduleView(ctx, s.scheduleId));
          }
          return out;
        },
      },
      Mutation: {
        retryStage: async (_: unknown, a: { runId: string; stageId: string; params?: unknown }, ctx: ApiContext) => {
          let params: unknown;
          if (a.params != null) {
            const run = await requireRun(ctx, a.runId);
            const stage = run.stages.find((s) => s.id === a.stageId);
            if (!stage) throw apiError('DECISION_REJECTED', `run ${a.runId} has no stage "${a.stageId}"`);
            const plugin = ctx.registry.get(stage.plugin);
            if (!plugin) throw apiError('UNKNOWN_PLUGIN', `plugin ${stage.plugin} is not installed on this API host`);
            const parsed = plugin.paramsSchema.safeParse(a.params);
            if (!parsed.success) {
              const issues = parsed.error.issues.map((i) => ({ path: `params${formatPath(i.path, true)}`, message: i.message, code: 'PLUGIN_PARAMS_INVALID' }));
              throw apiError('PLUGIN_PARAMS_INVALID', `params for ${stage.plugin} are invalid: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`, { issues });
            }
            params = a.params;
          }
          return decide(ctx, a.runId, { action: 'retry', stageId: a.stageId, ...(params !== undefined ? { params } : {}) });
        },
        skipStage: (_: unknown, a: { runId: string; stageId: string }, ctx: ApiContext) => decide(ctx, a.runId, { action: 'skip', stageId: a.stageId }),
        abortRun: async (_: unknown, a: { runId: string; reason: string }, ctx: ApiContext) => {
          if (!a.reason.trim()) throw apiError('BAD_ARGUMENT', 'abortRun needs a reason');
          return decide(ctx, a.runId, { action: 'abort', reason: a.reason });
        },
        cancelRun: async (_: unknown, a: { runId: string }, ctx: ApiContext) => {
          const run = await requireRun(ctx, a.runId);
          if (run.status !== 'RUNNING' && run.status !== 'PAUSED') throw apiError('RUN_CLOSED', `run ${a.runId} is ${run.status}; only running or paused runs can be cancelled`);
          await ctx.temporal.workflow.getHandle(a.runId).cancel();
          return (await loadRun(ctx, a.runId))!;
        },
        resumeRun: async (_: unknown, a: { runId: string; fromStage?: string | null; dryRun: boolean }, ctx: ApiContext) => {
          const old = await requireRun(ctx, a.runId);
          if (!a.dryRun && (old.status === 'RUNNING' || old.status === 'PAUSED')) {
            throw apiError('RUN_NOT_CLOSED', `run ${a.runId} is ${old.status}; resume closed runs (FAILED, CANCELLED, TERMINATED, …) — a paused run takes retryStage/skipStage`);
          }
          let plan;
          try {
            plan = await planResume({
              handle: ctx.temporal.workflow.getHandle(a.runId),
              registry: ctx.registry,
              artifacts: ctx.artifacts,
              taskQueues: taskQueuesOf(ctx),
              ...(a.fromStage != null ? { fromStage: a.fromStage } : {}),
            });
          } catch (e) {
            if (e instanceof SpecValidationError) throw specInvalid(e.issues);
            throw apiError('RESUME_IMPOSSIBLE', (e as Error).message);
          }
          const view = { from: plan.from, startAt: plan.startAt ?? null, stages: plan.stages };
          if (a.dryRun) return { plan: view, run: null };
          const run = await startRun(ctx, plan.spec, { resumedFrom: a.runId, reuse: plan.reuse });
          return { plan: view, run };
        },
        savePipeline: async (_: unknown, a: { spec: unknown; triggers?: string[] | null }, ctx: ApiContext) => {
          const spec = stripNulls(a.spec) as { name: string };
          try {
            resolveSpec(spec, ctx.registry, { taskQueues: taskQueuesOf(ctx) });
          } catch (e) {
            // Specs with {{event.x}} placeholders are checked when an event fills them in.
            if (!(e instanceof SpecValidationError)) throw e;
            const real = e.issues.filter((i) => !(i.code === 'PLUGIN_PARAMS_INVALID' && JSON.stringify(spec).includes('{{')));
            if (real.length) throw specInvalid(real);
          }
          for (const t of a.triggers ?? []) if (!/^[a-z0-9][a-z0-9._-]*$/i.test(t)) throw apiError('BAD_ARGUMENT', `trigger "${t}" must be an event type like dataset.updated`);
          return savedPipelines(ctx.db).save({ name: spec.name, spec, triggers: a.triggers ?? [] });
        },
        deleteSavedPipeline: (_: unknown, a: { name: string }, ctx: ApiContext) => savedPipelines(ctx.db).delete(a.name),
        schedulePipeline: async (_: unknown, a: { name: string; cron?: string | null; every?: string | null }, ctx: ApiContext) => {
          const saved = await savedPipelines(ctx.db).get(a.name);
          if (!saved) throw notFound(`saved pipeline ${a.name}`);
          if (!a.cron && !a.every) throw apiError('BAD_ARGUMENT', 'schedulePipeline needs cron or every');
          const everyMs = a.every ? parseDurationMs(a.every) : undefined;
          if (a.every && (everyMs === undefined || everyMs < 1000)) throw apiError('BAD_ARGUMENT', `every must be a duration of at least 1s, like "30s" or "1h"; got "${a.every}"`);
          let input;
          try {
            input = resolveSpec(saved.spec, ctx.registry, { taskQueues: taskQueuesOf(ctx) });
          } catch (e) {
            if (e instanceof SpecValidationError) throw specInvalid(e.issues);
            throw e;
          }
          const id = `capstan/${a.name}/${randomBytes(3).toString('hex')}`;
          try {
            await ctx.temporal.schedule.create({
              scheduleId: id,
              spec: { ...(a.cron ? { cronExpressions: [a.cron] } : {}), ...(everyMs ? { intervals: [{ every: everyMs }] } : {}) },
              action: {
                type: 'startWorkflow',
                workflowType: runPipelineWorkflow,
                workflowId: `pipeline/${a.name}/scheduled`,
                taskQueue: ctx.taskQueue,
                args: [input],
                typedSearchAttributes: [
                  { key: PipelineNameKey, value: input.pipeline },
                  { key: RunStatusKey, value: 'RUNNING' },
                ],
                staticSummary: `${input.pipeline} (scheduled): ${input.stages.map((s) => s.id).join(' → ')}`,
              },
              memo: { pipeline: a.name, cron: a.cron ? [a.cron] : [], every: a.every ? [a.every] : [] },
            });
          } catch (e) {
            throw apiError('SCHEDULE_INVALID', `could not create the schedule: ${(e as Error).message}`);
          }
          return scheduleView(ctx, id);
        },
        pauseSchedule: async (_: unknown, a: { id: string; paused: boolean }, ctx: ApiContext) => {
          const h = ctx.temporal.schedule.getHandle(a.id);
          try {
            if (a.paused) await h.pause('paused through the Capstan API');
            else await h.unpause('unpaused through the Capstan API');
          } catch (e) {
            if (e instanceof ScheduleNotFoundError) throw notFound(`schedule ${a.id}`);
            throw e;
          }
          return scheduleView(ctx, a.id);
        },
        deleteSchedule: async (_: unknown, a: { id: string }, ctx: ApiContext) => {
          try {
            await ctx.temporal.schedule.getHandle(a.id).delete();
            return true;
          } catch (e) {
            if (e instanceof ScheduleNotFoundError) return false;
            throw e;
          }
        },
        emitEvent: async (_: unknown, a: { type: string; payload?: unknown }, ctx: ApiContext) => {
          const targets = await savedPipelines(ctx.db).byTrigger(a.type);
          const runs = [];
          for (const p of targets) runs.push(await startRun(ctx, applyEventPayload(p.spec, { type: a.type, payload: a.payload ?? {} })));
          return runs;
        },
      },
      Subscription: {
        runEvents: {
          subscribe: (_: unknown, a: { runId: string }, ctx: ApiContext) => streamRunEvents(ctx, a.runId),
          resolve: (e: unknown) => e,
        },
      },
    },
  };
}

/**
 * Follows a run: the workflow's own events (stage lifecycle, pause/resume) plus what Temporal
 * shows of running activities (retries, heartbeat progress), until the run closes.
 */
export async function* streamRunEvents(ctx: ApiContext, runId: string, pollMs = 300): AsyncGenerator<Record<string, unknown>> {
  const first = await loadRun(ctx, runId);
  if (!first) throw notFound(`run ${runId}`);
  let lastSeq = 0;
  let seq = 0;
  const attempts = new Map<string, number>();
  const progress = new Map<string, string>();
  for (let run: RunView | undefined = first; run; run = await loadRun(ctx, runId)) {
    for (const e of run.events.filter((x) => x.seq > lastSeq)) {
      lastSeq = e.seq;
      yield { ...e, seq: ++seq, runStatus: run.status };
    }
    for (const s of run.stages) {
      if (s.status !== 'RUNNING') continue;
      const att = s.currentAttempt ?? 1;
      if (att > (attempts.get(s.id) ?? 1)) {
        attempts.set(s.id, att);
        yield { seq: ++seq, at: new Date().toISOString(), type: 'STAGE_RETRIED', stageId: s.id, attempt: att, message: s.error ?? null, runStatus: run.status };
      }
      const p = s.progress === undefined ? undefined : JSON.stringify(s.progress);
      if (p !== undefined && p !== progress.get(s.id)) {
        progress.set(s.id, p);
        yield { seq: ++seq, at: new Date().toISOString(), type: 'STAGE_PROGRESS', stageId: s.id, attempt: att, progress: s.progress, runStatus: run.status };
      }
    }
    if (run.status !== 'RUNNING' && run.status !== 'PAUSED') {
      yield { seq: ++seq, at: run.closedAt ?? new Date().toISOString(), type: 'RUN_CLOSED', message: run.status, runStatus: run.status };
      return;
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}
