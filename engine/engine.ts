import { readFile } from 'node:fs/promises';
import path from 'node:path';
import {
  WorkflowExecutionAlreadyStartedError,
  WorkflowUpdateFailedError,
  WorkflowNotFoundError,
  type Client,
  type WorkflowHandleWithStartDetails,
} from '@temporalio/client';
import type { ArtifactStore } from '../lib/artifacts.js';
import type { Db } from '../lib/db/types.js';
import type { Logger } from '../lib/logger.js';
import type { PluginInfo, StageRegistry } from '../plugins/registry.js';
import { formatPath } from '../lib/format-path.js';
import { currentTraceId } from '../lib/telemetry/tracing.js';
import { checkParamsSize, parseSpecText, resolveSpec, SpecValidationError, specSummary, type ResolvedSpec, type SpecIssue } from './spec.js';
import { estimateSpec } from './estimate.js';
import { saveRoiWatch } from '../ledger/roi-watch.js';
import type { PriceSheet } from '../ledger/schemas.js';
import { runPipelineWorkflow } from '../workflows/index.js';
import { initialRunState, markReused } from '../workflows/run-state.js';
import { checkGangCapacity, slotKeeperId, slotsQuery, takesGangSlots } from '../workflows/gang.js';
import { decideUpdate } from '../workflows/messages.js';
import { PipelineNameKey, ResumedFromKey, RunStatusKey, StartedByKey } from '../workflows/search-attributes.js';
import type { Decision, GangSettings, RunEstimateView, RunPipelineInput, RunStarter, RunStatus } from '../workflows/types.js';
import { EngineError, notFound } from './errors.js';
import { followRun, type RunStreamEvent } from './events.js';
import { firstInput, isRunId, newRunId, readRun, TRACE_ID_MEMO, type RunView } from './read-model.js';
import { planResume, type ResumePlanStage } from './resume.js';
import { listRuns, type RunFilter, type RunPage } from './run-list.js';
import { Money } from './money.js';
import { Triggers } from './triggers.js';
import { countOpenRuns, DEFAULT_QUOTAS, KeyedLock, quotaExceeded, quotaKey, RecentIds, type QuotaSettings } from './quotas.js';

export interface EngineDeps {
  client: Client;
  namespace: string;
  taskQueues: { workflows: string; cpu: string; gpu: string };
  /** The stage plugins specs are validated against. */
  stages: StageRegistry;
  artifacts: ArtifactStore;
  /** Saved pipelines live here (migrated by the composition root). */
  db: Db;
  logger: Logger;
  /** Base URL of the Temporal Web UI, for links to runs. */
  temporalUiUrl?: string;
  /** Address of a trace in a trace UI, with `{traceId}` (CAPSTAN_TRACE_UI_URL), for links to runs' traces. */
  traceUiUrl?: string;
  /** How often a followed run is polled (ms). */
  followPollMs?: number;
  /** The configured price sheet: estimates and budgets are priced with it (budgets are refused without one). */
  priceSheet?: PriceSheet;
  /** Per-principal quotas (DEFAULT_QUOTAS when omitted). */
  quotas?: QuotaSettings;
  /** API tokens: a saved pipeline's triggers fire only while the token that saved it is active (not checked when omitted). */
  tokens?: { isActive(tokenId: string): Promise<boolean> };
  /** How a gang that cannot run gives its slots back (CAPSTAN_GANG_START_TIMEOUT, CAPSTAN_GANG_REQUEUES); the workflow's defaults when omitted. */
  gang?: GangSettings;
}

export interface ResumeResult {
  plan: { from: string; startAt: string | null; stages: ResumePlanStage[] };
  /** The new run; undefined for a dry run. */
  run?: RunView;
}

/** How a run starts besides its spec. */
type StartExtra = { resumedFrom?: string; reuse?: RunPipelineInput['reuse']; startedBy?: RunStarter; workflowId?: string };

const OPEN: RunStatus[] = ['RUNNING', 'PAUSED'];
/** Largest page of runs. */
export const MAX_PAGE = 100;

/**
 * The application layer: how runs start, are read, listed, decided, cancelled and resumed; its
 * `triggers` (saved pipelines, events, schedules) and its `money` (estimates, budgets, spend, the
 * ROI watch) are modules of their own. The only caller of the Temporal client for runs. Edges (the
 * GraphQL API, scripts) call it and map its results; its expected failures are `EngineError`
 * (with a code) and `SpecValidationError` (with every issue).
 */
export class Engine {
  /** What starts runs besides a person: saved pipelines and their event triggers, schedules. */
  readonly triggers: Triggers;
  /** Estimates, budget raises, spend and the realised-ROI watch. */
  readonly money: Money;
  private readonly quotas: QuotaSettings;
  /** Starts and schedule creations of one token run one at a time here, so a burst cannot overshoot its quota. */
  private readonly quotaLock = new KeyedLock();
  private readonly recentRuns = new RecentIds();

  constructor(private readonly deps: EngineDeps) {
    this.quotas = deps.quotas ?? DEFAULT_QUOTAS;
    const resolve = (spec: unknown) => this.resolve(spec);
    this.triggers = new Triggers({
      client: deps.client,
      db: deps.db,
      logger: deps.logger,
      taskQueues: deps.taskQueues,
      ...(deps.tokens ? { tokens: deps.tokens } : {}),
      quotas: this.quotas,
      quotaLock: this.quotaLock,
      resolve,
      start: (spec, extra) => this.start(spec, extra),
    });
    this.money = new Money({
      db: deps.db,
      logger: deps.logger,
      stages: deps.stages,
      ...(deps.priceSheet ? { priceSheet: deps.priceSheet } : {}),
      resolve,
      decide: (id, d) => this.decide(id, d),
      input: (id) => this.input(id),
      emitEvent: (type, payload, o) => this.triggers.emitEvent(type, payload, o),
    });
  }

  /** The stage plugins specs may use. Where an external plugin was loaded from stays in the host's logs, not here. */
  plugins(): PluginInfo[] {
    return this.deps.stages.list().map((p) => ({ ...p, source: p.source === 'built-in' ? 'built-in' : `external: ${path.basename(p.source)}` }));
  }

  /** Checks a spec against the plugin registry without starting anything. */
  validate(spec: unknown): SpecIssue[] {
    try {
      this.resolve(spec);
      return [];
    } catch (e) {
      if (e instanceof SpecValidationError) return e.issues;
      throw e;
    }
  }

  /**
   * Validates, resolves and starts a run. Nothing starts when the spec is invalid, or when its
   * starter's token already has its quota of open runs (QUOTA_EXCEEDED).
   */
  async start(spec: unknown, extra: StartExtra = {}): Promise<RunView> {
    const key = quotaKey(extra.startedBy);
    if (!key) return this.startRun(spec, extra);
    return this.quotaLock.run(`runs:${key}`, async () => {
      // An idempotent start (an event id) that already started its run returns it, quota or not.
      if (extra.workflowId) {
        const existing = await this.read(extra.workflowId);
        if (existing) return existing;
      }
      const open = await countOpenRuns(this.deps.client, key, this.recentRuns, this.quotas.maxConcurrentRuns);
      if (open >= this.quotas.maxConcurrentRuns) {
        throw quotaExceeded(
          `${extra.startedBy!.name} already has ${open} open runs (running or paused); at most ${this.quotas.maxConcurrentRuns} at once (CAPSTAN_MAX_CONCURRENT_RUNS) — wait for one to close or cancel one`,
        );
      }
      const run = await this.startRun(spec, extra);
      this.recentRuns.add(key, run.id);
      return run;
    });
  }

  private async startRun(spec: unknown, extra: StartExtra): Promise<RunView> {
    const { workflowId, ...rest } = extra;
    const { parsedParams, watch, ...resolved } = this.resolve(spec);
    // The estimate travels with the run (a budget checks each stage's before it starts); an
    // estimate that cannot be made never stops a run.
    let estimate: RunEstimateView | undefined;
    if (this.deps.priceSheet) {
      try {
        estimate = await estimateSpec({ ...resolved, parsedParams }, { registry: this.deps.stages, db: this.deps.db, priceSheet: this.deps.priceSheet });
      } catch (e) {
        this.deps.logger.warn('could not estimate the run; it starts without an estimate', { pipeline: resolved.pipeline, error: (e as Error).message });
      }
    }
    const input: RunPipelineInput = { ...resolved, ...rest, ...(estimate ? { estimate } : {}), ...(this.deps.gang ? { gang: this.deps.gang } : {}) };
    await this.checkCapacity(input);
    let id = workflowId ?? newRunId(input.pipeline);
    // The trace of the request starting the run (tracing on): kept in the memo, which adds no workflow command.
    const traceId = currentTraceId();
    let handle: WorkflowHandleWithStartDetails<typeof runPipelineWorkflow>;
    for (let tries = 0; ; tries++) {
      try {
        handle = await this.deps.client.workflow.start(runPipelineWorkflow, {
          taskQueue: this.deps.taskQueues.workflows,
          workflowId: id,
          // A given id starts at most one run, ever (idempotent starts such as events).
          ...(workflowId ? { workflowIdReusePolicy: 'REJECT_DUPLICATE' as const } : {}),
          args: [input],
          typedSearchAttributes: [
            { key: PipelineNameKey, value: input.pipeline },
            { key: RunStatusKey, value: 'RUNNING' },
            ...(extra.resumedFrom ? [{ key: ResumedFromKey, value: extra.resumedFrom }] : []),
            ...(quotaKey(extra.startedBy) ? [{ key: StartedByKey, value: quotaKey(extra.startedBy)! }] : []),
          ],
          ...(traceId ? { memo: { [TRACE_ID_MEMO]: traceId } } : {}),
          staticSummary: specSummary(input),
          staticDetails: [
            `Pipeline **${input.pipeline}**${extra.resumedFrom ? ` (resumes ${extra.resumedFrom})` : ''}`,
            '',
            '| stage | plugin | queue | replicas |',
            '| --- | --- | --- | --- |',
            ...input.stages.map((s) => `| ${s.id} | \`${s.plugin}@${s.pluginVersion}\` | ${s.taskQueue} | ${s.replicas} |`),
          ].join('\n'),
        });
        break;
      } catch (e) {
        if (workflowId && e instanceof WorkflowExecutionAlreadyStartedError) return this.require(workflowId);
        // A generated id (5 random characters per pipeline) can collide with an earlier run's: draw another.
        if (!workflowId && e instanceof WorkflowExecutionAlreadyStartedError && tries < 5) {
          id = newRunId(input.pipeline);
          continue;
        }
        throw e;
      }
    }
    // The deployed model's realised ROI is watched from now on (checkRoiWatches).
    if (watch) await saveRoiWatch(this.deps.db, { runId: id, pipeline: input.pipeline, ...watch });
    // What the workflow starts from (one definition: workflows/run-state.ts), with the stages it
    // reuses shown as it records them when it reaches them, in its first task.
    const state = initialRunState(input, new Date().toISOString(), traceId);
    for (const st of state.stages) {
      const reused = input.reuse?.[st.id];
      if (reused) markReused(st, reused);
    }
    // (A stage waits for nothing yet: the view's stages carry no wait.)
    return { id, runId: handle.firstExecutionRunId, ...state, stages: state.stages.map(({ wait: _none, ...st }) => st) };
  }

  /** Same as start, with the spec as JSON or YAML text. */
  startFromText(text: string, startedBy?: RunStarter): Promise<RunView> {
    return this.start(parseSpecText(text), startedBy ? { startedBy } : {});
  }

  /** One run: its workflow state merged with what Temporal knows. Undefined when unknown. */
  read(id: string): Promise<RunView | undefined> {
    return readRun(this.deps.client, id);
  }

  /** The resolved spec a run started with (stages with params, needs, replicas), from its first history event. Undefined when unknown. */
  async input(id: string): Promise<RunPipelineInput | undefined> {
    if (!isRunId(id)) return undefined;
    try {
      return await firstInput(this.deps.client.workflow.getHandle(id));
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  /**
   * The promotion gates a deploy stage checked, from the deployment record it wrote (its
   * deployment artifact's deployment.json); undefined when the stage wrote none (gates failed, or not a deploy stage).
   */
  async deploymentGates(runId: string, stageId: string): Promise<unknown[] | undefined> {
    const run = await this.read(runId);
    const ref = run?.stages.find((s) => s.id === stageId)?.outputs.deployment;
    if (!ref) return undefined;
    try {
      const text = await readFile(path.join(await this.deps.artifacts.localPath(ref), 'deployment.json'), 'utf8');
      const gates = (JSON.parse(text) as { gates?: unknown }).gates;
      return Array.isArray(gates) ? gates : undefined;
    } catch {
      return undefined;
    }
  }

  async require(id: string): Promise<RunView> {
    const run = await this.read(id);
    if (!run) throw notFound(`run ${id}`);
    return run;
  }

  /** A page of runs, newest first. */
  list(f: RunFilter & { first: number; after?: string }): Promise<RunPage> {
    if (!Number.isInteger(f.first) || f.first < 1 || f.first > MAX_PAGE) throw new EngineError('BAD_ARGUMENT', `first must be between 1 and ${MAX_PAGE}`);
    return listRuns(this.deps.client, this.deps.namespace, f);
  }

  /** Link to the run in the Temporal Web UI, when its address is configured. */
  temporalUrl(id: string, runId?: string): string | undefined {
    const ui = this.deps.temporalUiUrl;
    if (!ui) return undefined;
    const base = `${ui}/namespaces/${encodeURIComponent(this.deps.namespace)}/workflows/${encodeURIComponent(id)}`;
    return runId ? `${base}/${runId}/history` : base;
  }

  /** Link to a run's trace in the trace UI, when its address is configured and the run has a trace. */
  traceUrl(traceId: string | undefined): string | undefined {
    const ui = this.deps.traceUiUrl;
    if (!ui || !traceId) return undefined;
    return ui.replaceAll('{traceId}', encodeURIComponent(traceId));
  }

  /**
   * Retry a paused stage, optionally with corrected params and/or on another installed version of
   * its plugin; params are checked against the schema of the version that will run. The rerun acts
   * with the rights of `by` (who decided), not of whoever started the run, and is recorded with it.
   */
  async retryStage(id: string, stageId: string, params?: unknown, pluginVersion?: string, o: { by?: RunStarter } = {}): Promise<RunView> {
    if (params !== undefined) checkParamsSize(params, 'params');
    const by = o.by ? { by: o.by } : {};
    if (params === undefined && pluginVersion === undefined) return this.decide(id, { action: 'retry', stageId, ...by });
    const run = await this.require(id);
    const stage = run.stages.find((s) => s.id === stageId);
    if (!stage) throw new EngineError('DECISION_REJECTED', `run ${id} has no stage "${stageId}"`);
    const plugin = this.deps.stages.get(stage.plugin, pluginVersion);
    if (!plugin) {
      const installed = this.deps.stages
        .list()
        .filter((p) => p.name === stage.plugin)
        .map((p) => p.version);
      throw new EngineError(
        'UNKNOWN_PLUGIN',
        `plugin ${stage.plugin}${pluginVersion ? `@${pluginVersion}` : ''} is not installed on this API host; installed: ${installed.join(', ') || 'none'}`,
      );
    }
    const checked = params ?? stage.paramsOverride ?? (await this.specParams(id, stageId));
    const parsed = plugin.paramsSchema.safeParse(checked);
    if (!parsed.success) {
      const issues = parsed.error.issues.map((i) => ({ path: `params${formatPath(i.path, true)}`, message: i.message, code: 'PLUGIN_PARAMS_INVALID' }));
      throw new EngineError(
        'PLUGIN_PARAMS_INVALID',
        `params for ${stage.plugin}@${plugin.version} are invalid: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`,
        { issues },
      );
    }
    return this.decide(id, { action: 'retry', stageId, ...(params !== undefined ? { params } : {}), ...(pluginVersion ? { pluginVersion } : {}), ...by }, run);
  }

  /** A stage's params as the run's spec gave them. */
  private async specParams(id: string, stageId: string): Promise<unknown> {
    const input = await firstInput(this.deps.client.workflow.getHandle(id));
    return input?.stages.find((s) => s.id === stageId)?.params ?? {};
  }

  /** Skip a paused stage; the workflow refuses when a later stage needs its outputs. `by` is recorded in the run's events. */
  skipStage(id: string, stageId: string, o: { by?: RunStarter } = {}): Promise<RunView> {
    return this.decide(id, { action: 'skip', stageId, ...(o.by ? { by: o.by } : {}) });
  }

  abort(id: string, reason: string, o: { by?: RunStarter } = {}): Promise<RunView> {
    if (!reason.trim()) throw new EngineError('BAD_ARGUMENT', 'abortRun needs a reason');
    return this.decide(id, { action: 'abort', reason, ...(o.by ? { by: o.by } : {}) });
  }

  /** Sends an operator decision to a paused run (a Temporal Update, validated by the workflow). */
  private async decide(id: string, d: Decision, known?: RunView): Promise<RunView> {
    const run = known ?? (await this.require(id));
    // A budget may be raised while the run still runs (before it pauses on it); other decisions need a pause.
    if (run.status !== 'PAUSED' && !(d.action === 'raise-budget' && run.status === 'RUNNING')) {
      throw new EngineError('DECISION_REJECTED', `decision refused: run is ${run.status}, not PAUSED; decisions apply to paused runs only`, {
        reason: `run is ${run.status}`,
      });
    }
    try {
      await this.deps.client.workflow.getHandle(id).executeUpdate(decideUpdate, { args: [d] });
    } catch (e) {
      if (e instanceof WorkflowUpdateFailedError) {
        const reason = (e.cause as Error | undefined)?.message ?? e.message;
        throw new EngineError('DECISION_REJECTED', `decision refused: ${reason}`, { reason });
      }
      throw e;
    }
    return this.require(id);
  }

  /** Cancels a running or paused run: the running stage stops at its next heartbeat; completed artifacts stay. */
  async cancel(id: string): Promise<RunView> {
    const run = await this.require(id);
    if (!OPEN.includes(run.status)) throw new EngineError('RUN_CLOSED', `run ${id} is ${run.status}; only running or paused runs can be cancelled`);
    await this.deps.client.workflow.getHandle(id).cancel();
    return this.require(id);
  }

  /** Plans (and unless dryRun, starts) a new run of a closed run's spec reusing its completed stages. */
  async resume(id: string, o: { fromStage?: string; dryRun?: boolean; startedBy?: RunStarter } = {}): Promise<ResumeResult> {
    const old = await this.require(id);
    if (!o.dryRun && OPEN.includes(old.status)) {
      throw new EngineError(
        'RUN_NOT_CLOSED',
        `run ${id} is ${old.status}; resume closed runs (FAILED, CANCELLED, TERMINATED, …) — a paused run takes retryStage/skipStage`,
      );
    }
    const plan = await planResume({
      handle: this.deps.client.workflow.getHandle(id),
      registry: this.deps.stages,
      artifacts: this.deps.artifacts,
      taskQueues: this.deps.taskQueues,
      ...(o.fromStage !== undefined ? { fromStage: o.fromStage } : {}),
    });
    const view = { from: plan.from, startAt: plan.startAt ?? null, stages: plan.stages };
    if (o.dryRun) return { plan: view };
    return { plan: view, run: await this.start(plan.spec, { resumedFrom: id, reuse: plan.reuse, ...(o.startedBy ? { startedBy: o.startedBy } : {}) }) };
  }

  /** Follows a run until it closes: its own events plus retries and heartbeat progress. */
  async follow(id: string, signal?: AbortSignal): Promise<AsyncGenerator<RunStreamEvent>> {
    const first = await this.require(id);
    return followRun(first, () => this.read(id), { pollMs: this.deps.followPollMs ?? 300, ...(signal ? { signal } : {}) });
  }

  /**
   * A data-parallel stage needs all its slots at once: refuse a spec whose replicas exceed what the
   * live workers of its queue offer (as their slot keeper counts them). Unknown capacity (no keeper
   * yet) is not refused; the run then waits for workers.
   */
  private async checkCapacity(input: RunPipelineInput): Promise<void> {
    const queues = [...new Set(input.stages.filter((s) => takesGangSlots(s)).map((s) => s.taskQueue))];
    if (!queues.length) return;
    const capacity = new Map<string, number | undefined>();
    for (const q of queues) {
      const view = await this.deps.client.workflow
        .getHandle(slotKeeperId(q))
        .query(slotsQuery)
        .catch(() => undefined);
      capacity.set(q, view?.capacity);
    }
    const problems = checkGangCapacity(input.stages, (q) => capacity.get(q));
    if (problems.length) {
      throw new SpecValidationError(
        problems.map((message) => {
          const i = input.stages.findIndex((s) => message.startsWith(`stage ${s.id}:`));
          return { path: `stages[${i}].params`, message, code: 'GANG_CAPACITY' as const };
        }),
      );
    }
  }

  private resolve(spec: unknown): ResolvedSpec {
    return resolveSpec(spec, this.deps.stages, { taskQueues: this.deps.taskQueues, ...(this.deps.priceSheet ? { priceSheet: this.deps.priceSheet } : {}) });
  }
}

/** Temporal's answer for a workflow it does not have: WorkflowNotFoundError, or gRPC NOT_FOUND (5) on a history read. */
function isNotFound(e: unknown): boolean {
  if (e instanceof WorkflowNotFoundError) return true;
  const code = (x: unknown) => (x && typeof x === 'object' && 'code' in x ? (x as { code: unknown }).code : undefined);
  return code(e) === GRPC_NOT_FOUND || code((e as { cause?: unknown } | undefined)?.cause) === GRPC_NOT_FOUND;
}
const GRPC_NOT_FOUND = 5;
