import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import {
  ScheduleNotFoundError,
  WorkflowExecutionAlreadyStartedError,
  WorkflowUpdateFailedError,
  WorkflowNotFoundError,
  type Client,
  type ScheduleHandle,
  type WorkflowHandleWithStartDetails,
} from '@temporalio/client';
import type { ArtifactStore } from '../lib/artifacts.js';
import type { Db } from '../lib/db/types.js';
import { parseDurationMs } from '../lib/duration.js';
import type { Logger } from '../lib/logger.js';
import type { PluginInfo, StageRegistry } from '../plugins/registry.js';
import { formatPath } from '../lib/format-path.js';
import { currentTraceId } from '../lib/telemetry/tracing.js';
import { checkParamsSize, LEDGER_PLUGIN, parseSpecText, resolveSpec, SpecValidationError, type ResolvedSpec, type SpecIssue } from './spec.js';
import { estimateSpec } from './estimate.js';
import { checkRoiWatches, listRoiAlerts, markAlertEmitted, saveRoiWatch, type RoiAlert, type RoiCheck } from '../ledger/roi-watch.js';
import { formatMoneyExact, isMoney, parseMoney } from '../ledger/money.js';
import { runSpend, type RunSpend } from '../ledger/spend.js';
import type { PriceSheet, PriceSheetOverride } from '../ledger/schemas.js';
import { mergePriceSheet } from '../ledger/price-sheet.js';
import { loadBookingInput } from '../ledger/repository.js';
import { runPipelineWorkflow, startScheduledPipelineWorkflow } from '../workflows/index.js';
import { initialRunState, markReused } from '../workflows/run-state.js';
import { checkGangCapacity, slotKeeperId, slotsQuery, takesGangSlots } from '../workflows/gang.js';
import { decideUpdate } from '../workflows/messages.js';
import { PipelineNameKey, ResumedFromKey, RunStatusKey, StartedByKey } from '../workflows/search-attributes.js';
import type { Decision, GangSettings, RunEstimateView, RunPipelineInput, RunStarter, RunStatus, ScheduledPipelineInput } from '../workflows/types.js';
import { EngineError, notFound } from './errors.js';
import { applyEventPayload, followRun, type RunStreamEvent } from './events.js';
import { firstInput, isRunId, newRunId, readRun, TRACE_ID_MEMO, type RunView } from './read-model.js';
import { planResume, type ResumePlanStage } from './resume.js';
import { listRuns, type RunFilter, type RunPage } from './run-list.js';
import { SavedPipelineStore, type SavedPipeline } from './saved-pipelines.js';
import { describeSchedule, SCHEDULE_PREFIX, type ScheduleView } from './schedules.js';
import {
  countOpenRuns,
  countSchedules,
  DEFAULT_QUOTAS,
  formatDuration,
  KeyedLock,
  quotaExceeded,
  quotaKey,
  RecentIds,
  shortestGapMs,
  type QuotaSettings,
} from './quotas.js';

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
const TRIGGER_RE = /^[a-z0-9][a-z0-9._-]*$/i;

/**
 * The application layer: how runs start, are read, listed, decided, cancelled and resumed; saved
 * pipelines, schedules and events. The only caller of the Temporal client for runs. Edges (the
 * GraphQL API, scripts) call it and map its results; its expected failures are `EngineError`
 * (with a code) and `SpecValidationError` (with every issue).
 */
export class Engine {
  readonly pipelines: SavedPipelineStore;
  private readonly quotas: QuotaSettings;
  /** Starts and schedule creations of one token run one at a time here, so a burst cannot overshoot its quota. */
  private readonly quotaLock = new KeyedLock();
  private readonly recentRuns = new RecentIds();
  private readonly recentSchedules = new RecentIds();

  constructor(private readonly deps: EngineDeps) {
    this.pipelines = new SavedPipelineStore(deps.db);
    this.quotas = deps.quotas ?? DEFAULT_QUOTAS;
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
          staticSummary: summaryOf(input),
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
   * Saves a spec under its name, recording who saved it (its triggers fire while that token is
   * active). Placeholders (`{{event.x}}`) are checked when an event fills them in.
   */
  async savePipeline(spec: unknown, triggers: string[] = [], o: { savedBy?: RunStarter } = {}): Promise<SavedPipeline> {
    try {
      this.resolve(spec);
    } catch (e) {
      if (!(e instanceof SpecValidationError)) throw e;
      const placeholders = JSON.stringify(spec).includes('{{');
      const real = e.issues.filter((i) => !(i.code === 'PLUGIN_PARAMS_INVALID' && placeholders));
      if (real.length) throw new SpecValidationError(real);
    }
    for (const t of triggers) if (!TRIGGER_RE.test(t)) throw new EngineError('BAD_ARGUMENT', `trigger "${t}" must be an event type like dataset.updated`);
    return this.pipelines.save({ name: (spec as { name: string }).name, spec, triggers, ...(o.savedBy ? { savedBy: o.savedBy } : {}) });
  }

  /**
   * Starts every saved pipeline whose triggers include this event type, with the payload filled in.
   * A trigger fires only while the token that saved its pipeline is active (skipped, with the reason
   * logged, once it is revoked or expired); an event the host emits itself (no starter, e.g.
   * roi.below) starts the run as that saver.
   */
  async emitEvent(type: string, payload: unknown = {}, o: { startedBy?: RunStarter; eventId?: string } = {}): Promise<RunView[]> {
    if (o.eventId !== undefined && (o.eventId.trim() === '' || o.eventId.length > 200))
      throw new EngineError('BAD_ARGUMENT', 'eventId must be 1–200 characters');
    // The payload fills params in: it is bounded like params (the filled-in spec is checked again when it starts).
    checkParamsSize(payload, 'payload');
    const runs: RunView[] = [];
    for (const p of await this.pipelines.byTrigger(type)) {
      const saver = quotaKey(p.savedBy);
      if (saver && this.deps.tokens && !(await this.deps.tokens.isActive(saver))) {
        this.deps.logger.warn(
          `trigger skipped: saved pipeline ${p.name} was saved by ${p.savedBy!.name}, whose token is revoked or expired; save it again with an active token to re-arm it`,
          { pipeline: p.name, event: type, tokenId: saver },
        );
        continue;
      }
      const startedBy = o.startedBy ?? p.savedBy;
      const spec = applyEventPayload(p.spec, { type, payload });
      // The same event id always maps to the same run id: a retried call finds the run it started.
      const workflowId = o.eventId !== undefined ? eventRunId(p.name, type, o.eventId) : undefined;
      runs.push(await this.start(spec, { ...(startedBy ? { startedBy } : {}), ...(workflowId ? { workflowId } : {}) }));
    }
    return runs;
  }

  /**
   * Starts a saved pipeline on a cron expression and/or an interval ("30s", "1h"). Firings closer
   * together than the minimum interval are refused, and so is a schedule beyond its creator's quota.
   */
  async schedule(name: string, o: { cron?: string; every?: string; startedBy?: RunStarter }): Promise<ScheduleView> {
    const saved = await this.pipelines.get(name);
    if (!saved) throw notFound(`saved pipeline ${name}`);
    if (!o.cron && !o.every) throw new EngineError('BAD_ARGUMENT', 'schedulePipeline needs cron or every');
    const min = this.quotas.minScheduleIntervalMs;
    const everyMs = o.every ? parseDurationMs(o.every) : undefined;
    if (o.every && (everyMs === undefined || everyMs < min)) {
      throw new EngineError(
        'BAD_ARGUMENT',
        `every must be a duration of at least ${formatDuration(min)} (CAPSTAN_MIN_SCHEDULE_INTERVAL), like "5m" or "1h"; got "${o.every}"`,
      );
    }
    // Checked now, so a schedule never starts with a spec that is already invalid; but what the
    // schedule stores is the spec itself, resolved again at each firing (plugins may be upgraded).
    const input = this.resolve(saved.spec);
    const key = quotaKey(o.startedBy);
    if (!key) return this.createSchedule(saved, o, everyMs, input);
    return this.quotaLock.run(`schedules:${key}`, async () => {
      const have = await countSchedules(this.deps.client, key, this.recentSchedules);
      if (have >= this.quotas.maxSchedules) {
        throw quotaExceeded(
          `${o.startedBy!.name} already has ${have} schedules; at most ${this.quotas.maxSchedules} (CAPSTAN_MAX_SCHEDULES) — delete one first`,
        );
      }
      const view = await this.createSchedule(saved, o, everyMs, input);
      this.recentSchedules.add(key, view.id);
      return view;
    });
  }

  /**
   * Creates the schedule paused, reads the firing times Temporal computed for it (its cron syntax
   * is the server's: seconds fields, ranges, `@every`), and unpauses it only when no two are
   * closer than the minimum interval; otherwise it is deleted before it ever fired.
   */
  private async createSchedule(
    saved: SavedPipeline,
    o: { cron?: string; every?: string; startedBy?: RunStarter },
    everyMs: number | undefined,
    input: ResolvedSpec,
  ): Promise<ScheduleView> {
    const name = saved.name;
    const stored: ScheduledPipelineInput = {
      spec: saved.spec,
      taskQueues: { cpu: this.deps.taskQueues.cpu, gpu: this.deps.taskQueues.gpu },
      ...(o.startedBy ? { startedBy: o.startedBy } : {}),
    };
    const id = `${SCHEDULE_PREFIX}${name}/${randomBytes(3).toString('hex')}`;
    const creator = quotaKey(o.startedBy);
    let handle: ScheduleHandle;
    try {
      handle = await this.deps.client.schedule.create({
        scheduleId: id,
        spec: { ...(o.cron ? { cronExpressions: [o.cron] } : {}), ...(everyMs ? { intervals: [{ every: everyMs }] } : {}) },
        action: {
          type: 'startWorkflow',
          workflowType: startScheduledPipelineWorkflow,
          workflowId: `pipeline/${name}/scheduled`,
          taskQueue: this.deps.taskQueues.workflows,
          args: [stored],
          typedSearchAttributes: [
            { key: PipelineNameKey, value: input.pipeline },
            { key: RunStatusKey, value: 'RUNNING' },
            // Its runs count toward the creator's open runs.
            ...(creator ? [{ key: StartedByKey, value: creator }] : []),
          ],
          staticSummary: `${summaryOf(input).replace(':', ' (scheduled):')}`,
        },
        state: { paused: true, note: 'checking its firing times' },
        memo: { pipeline: name, cron: o.cron ? [o.cron] : [], every: o.every ? [o.every] : [], ...(creator ? { createdBy: creator } : {}) },
      });
    } catch (e) {
      throw new EngineError('SCHEDULE_INVALID', `could not create the schedule: ${(e as Error).message}`);
    }
    const min = this.quotas.minScheduleIntervalMs;
    let checked = false;
    try {
      const gap = shortestGapMs((await handle.describe()).info.nextActionTimes);
      if (gap < min) {
        const what = [o.cron ? `cron "${o.cron}"` : '', o.every ? `every "${o.every}"` : ''].filter(Boolean).join(' with ');
        throw new EngineError(
          'BAD_ARGUMENT',
          `${what} fires ${formatDuration(gap)} apart; schedules fire at least ${formatDuration(min)} apart (CAPSTAN_MIN_SCHEDULE_INTERVAL)`,
        );
      }
      await handle.unpause('firing times checked');
      checked = true;
    } finally {
      // Refused, or the check itself failed: the paused schedule never fired and goes.
      if (!checked) await handle.delete().catch(() => undefined);
    }
    return describeSchedule(this.deps.client, id);
  }

  /** Capstan's schedules, optionally of one saved pipeline. */
  async schedules(pipeline?: string): Promise<ScheduleView[]> {
    const out: ScheduleView[] = [];
    for await (const s of this.deps.client.schedule.list()) {
      if (!s.scheduleId.startsWith(SCHEDULE_PREFIX)) continue;
      if (pipeline && s.memo?.pipeline !== pipeline) continue;
      try {
        out.push(await describeSchedule(this.deps.client, s.scheduleId));
      } catch (e) {
        // Listing lags behind deletes (e.g. a schedule refused for firing too often, just deleted).
        if (!(e instanceof ScheduleNotFoundError)) throw e;
      }
    }
    return out;
  }

  async pauseSchedule(id: string, paused: boolean): Promise<ScheduleView> {
    if (!id.startsWith(SCHEDULE_PREFIX)) throw notFound(`schedule ${id}`);
    const h = this.deps.client.schedule.getHandle(id);
    try {
      if (paused) await h.pause('paused through the Capstan API');
      else await h.unpause('unpaused through the Capstan API');
    } catch (e) {
      if (e instanceof ScheduleNotFoundError) throw notFound(`schedule ${id}`);
      throw e;
    }
    return describeSchedule(this.deps.client, id);
  }

  /** Deletes a schedule; false when there was none. Runs it started are not touched. */
  async deleteSchedule(id: string): Promise<boolean> {
    if (!id.startsWith(SCHEDULE_PREFIX)) return false;
    try {
      await this.deps.client.schedule.getHandle(id).delete();
      return true;
    } catch (e) {
      if (e instanceof ScheduleNotFoundError) return false;
      throw e;
    }
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

  /**
   * What a spec is expected to cost, take and return, from past runs (nothing starts).
   * Throws SpecValidationError for an invalid spec, BAD_ARGUMENT when this host has no price sheet.
   */
  async estimate(spec: unknown): Promise<RunEstimateView> {
    if (!this.deps.priceSheet) throw new EngineError('BAD_ARGUMENT', 'this host has no price sheet, so nothing can be estimated');
    return estimateSpec(this.resolve(spec), { registry: this.deps.stages, db: this.deps.db, priceSheet: this.deps.priceSheet });
  }

  /** Raises a run's budget (or one stage's) to `max`: only upward, on an open run with a budget. */
  async raiseBudget(id: string, max: string, o: { stageId?: string; by?: string } = {}): Promise<RunView> {
    if (!isMoney(max) || parseMoney(max) < 0n)
      throw new EngineError('BAD_ARGUMENT', `max must be a non-negative decimal amount such as "12.50"; got ${JSON.stringify(max)}`);
    return this.decide(id, {
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
      const input = await this.input(runId);
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
        const runs = await this.emitEvent('roi.below', payload, { eventId: a.id });
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

/** `pipeline/<name>/evt-<12 hex>`: the run an event id starts for a saved pipeline. */
function eventRunId(pipeline: string, type: string, eventId: string): string {
  return `pipeline/${pipeline}/evt-${createHash('sha256')
    .update(JSON.stringify([type, eventId]))
    .digest('hex')
    .slice(0, 12)}`;
}

function summaryOf(input: RunPipelineInput): string {
  return `${input.pipeline}: ${input.stages.map((s) => s.id).join(' → ')}`;
}

/** Temporal's answer for a workflow it does not have: WorkflowNotFoundError, or gRPC NOT_FOUND (5) on a history read. */
function isNotFound(e: unknown): boolean {
  if (e instanceof WorkflowNotFoundError) return true;
  const code = (x: unknown) => (x && typeof x === 'object' && 'code' in x ? (x as { code: unknown }).code : undefined);
  return code(e) === GRPC_NOT_FOUND || code((e as { cause?: unknown } | undefined)?.cause) === GRPC_NOT_FOUND;
}
const GRPC_NOT_FOUND = 5;
