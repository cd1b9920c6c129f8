import { createHash } from 'node:crypto';
import { ApplicationFailure, CancelledFailure, Context } from '@temporalio/activity';
import type { ArtifactStore } from '../lib/artifacts.js';
import { canonical } from '../lib/canonical.js';
import { StageError } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import { withLogContext, type LogContext } from '../lib/telemetry/log-context.js';
import { DataError } from '../ml/data/data-error.js';
import { ChildJobError } from '../ml/training/child-runner.js';
import type { ArtifactRef, StageContext, StageInputs, StagePlugin, StageResult } from '../plugins/contract.js';
import type { StageRegistry } from '../plugins/registry.js';
import type { StageServices } from '../plugins/services.js';
import { formatPath } from '../lib/format-path.js';
import { withSpan } from '../lib/telemetry/tracing.js';
import { resolvePipelineActivity, type TokenChecker } from './resolve-pipeline.js';
import type { ReduceStageInput, RunStageInput, StageOutcome } from '../workflows/types.js';
import { attemptUsage } from './attempt-usage.js';
import type { DevicePool } from './devices.js';
import { createStageContext, operatorRoundOf } from './stage-context.js';
import { epochFromHeartbeat, epochFromLog, epochsFromMetrics, type StageRecorder } from './stage-records.js';
import { formatMoneyExact, parseMoney } from '../ledger/money.js';
import { priceUsage } from '../ledger/pricing.js';
import type { PriceSheet } from '../ledger/schemas.js';
import type { WorkerMetrics } from '../lib/telemetry/worker-metrics.js';

/** What one attempt of a stage used; handed to the meter (the ledger) after every attempt. */
export interface StageUsage {
  runId: string;
  pipeline: string;
  stageId: string;
  plugin: string;
  attempt: number;
  replica?: number;
  /** Temporal's activity id (`stage:<id>[#<round>][:replica-<i>|:reduce]`): part of the usage key. */
  activityId?: string;
  /** Temporal's run id of the workflow execution (a reset starts a new one): part of the usage key. */
  workflowRunId?: string;
  /** What the plugin declared (its queue); recorded, not priced. */
  resource: 'cpu' | 'gpu';
  wallSeconds: number;
  /**
   * The attempt's share of the worker's CPU time (split between attempts running side by side;
   * see cpu-share.ts) plus its child processes' CPU time measured by pid: priced at the CPU rate.
   */
  cpuSeconds: number;
  deviceSeconds: number;
  /** GPUs assigned to the attempt; when non-empty, deviceSeconds × their count is priced at the GPU rate. */
  gpuDevices?: string[];
  bytesWritten: number;
  /** Bytes the run keeps for this stage after the attempt (outputs, checkpoints, rounds, exports). */
  bytesKept?: number;
  succeeded: boolean;
  /** Usage so far of an attempt still running (written at every tick); the final record replaces it. */
  partial?: boolean;
}

export interface StageMeter {
  recordUsage(u: StageUsage): Promise<void>;
}

/** Looks up earlier outputs for the opt-in stage cache, and records new ones. */
export interface StageCache {
  lookup(key: string): Promise<StageResult | undefined>;
  store(key: string, runId: string, stageId: string, result: StageResult): Promise<void>;
}

export interface ActivityDeps {
  stages: StageRegistry;
  artifacts: ArtifactStore;
  services: StageServices;
  logger: Logger;
  meter?: StageMeter;
  cache?: StageCache;
  /** This worker's devices: each attempt of a gpu stage holds one (CUDA_VISIBLE_DEVICES for its child process). */
  devices?: DevicePool;
  /** Interval of the wrapper's own heartbeats, so short or quiet stages stay alive and hear cancellation. */
  heartbeatEveryMs?: number;
  /** Where attempt start/end and per-epoch metrics go (the console's timeline and curves); none when omitted. */
  records?: StageRecorder;
  /** API tokens: a schedule fires only while its creator's token is active (not checked when omitted). */
  tokens?: TokenChecker;
  /** Where each attempt's duration and outcome are counted (capstan_stage_*); none when omitted. */
  metrics?: Pick<WorkerMetrics, 'stageAttempt'>;
}

/**
 * The stage activities. One typed dispatch (`runStage`) instead of one activity per plugin:
 * the plugin lookup happens here, outside the workflow sandbox.
 */
export function createActivities(deps: ActivityDeps) {
  return {
    resolvePipeline: resolvePipelineActivity(deps.stages, deps.services.ledger, deps.tokens),
    async runStage(input: RunStageInput): Promise<StageOutcome> {
      return withLogContext(attemptLogContext(input), () =>
        measured(deps, input, () => attempt(deps, input, (plugin, ctx, params, inputs) => plugin.run(ctx, params, inputs))),
      );
    },
    async reduceStage(input: ReduceStageInput): Promise<StageOutcome> {
      const { replica: _ignored, ...rest } = input;
      return withLogContext(attemptLogContext(rest), () =>
        measured(deps, input, () =>
          attempt(deps, rest, (plugin, ctx, params, inputs) => {
            if (!plugin.dataParallel) throw new StageError(`${plugin.name} is not data-parallel`, { type: 'PLUGIN_CONTRACT' });
            return plugin.dataParallel.reduce(ctx, params, inputs, input.replicaResults);
          }),
        ),
      );
    },
  };
}

export type Activities = ReturnType<typeof createActivities>;

/** What every line logged during one attempt carries (its training child's lines too): the run, stage, attempt and plugin. */
function attemptLogContext(input: RunStageInput): LogContext {
  const info = Context.current().info;
  return {
    runId: input.runId,
    stageId: input.stage.id,
    attempt: info.attempt,
    plugin: `${input.stage.plugin}@${input.stage.pluginVersion}`,
    activityId: info.activityId,
    ...(input.replica ? { replica: input.replica.index } : {}),
  };
}

/**
 * Where every attempt ends, whatever ended it (success, a failure before the plugin ran, a cache
 * hit, a cancellation): its wall time and outcome go to the worker's metrics. A clock read and
 * three metric updates per attempt.
 */
async function measured(deps: ActivityDeps, input: RunStageInput, run: () => Promise<StageOutcome>): Promise<StageOutcome> {
  if (!deps.metrics) return run();
  const t0 = performance.now();
  const attemptNo = Context.current().info.attempt;
  const done = (outcome: 'succeeded' | 'failed' | 'cancelled') =>
    deps.metrics!.stageAttempt({ plugin: input.stage.plugin, outcome, seconds: (performance.now() - t0) / 1000, attempt: attemptNo });
  try {
    const out = await run();
    done('succeeded');
    return out;
  } catch (e) {
    done(e instanceof CancelledFailure || Context.current().cancellationSignal.aborted ? 'cancelled' : 'failed');
    throw e;
  }
}

/**
 * One attempt of a stage in its span (`capstan.stage.attempt`, a child of the activity's span that
 * Temporal's interceptor opens): run id, stage, plugin, attempt and replica as attributes, so a
 * trace backend finds a run's attempts by `capstan.run_id`. No span when tracing is off.
 */
function attempt(
  deps: ActivityDeps,
  input: RunStageInput,
  body: (plugin: StagePlugin<unknown>, ctx: StageContext, params: unknown, inputs: StageInputs) => Promise<StageResult>,
): Promise<StageOutcome> {
  const info = Context.current().info;
  const attrs = {
    'capstan.run_id': input.runId,
    'capstan.pipeline': input.pipeline,
    'capstan.stage.id': input.stage.id,
    'capstan.stage.plugin': `${input.stage.plugin}@${input.stage.pluginVersion}`,
    'capstan.stage.attempt': info.attempt,
    ...(input.replica ? { 'capstan.stage.replica': input.replica.index } : {}),
    ...('replicaResults' in input ? { 'capstan.stage.reduce': true } : {}),
  };
  return withSpan(`capstan.stage.attempt ${input.stage.id}`, attrs, () => runAttempt(deps, input, body));
}

async function runAttempt(
  deps: ActivityDeps,
  input: RunStageInput,
  body: (plugin: StagePlugin<unknown>, ctx: StageContext, params: unknown, inputs: StageInputs) => Promise<StageResult>,
): Promise<StageOutcome> {
  const actx = Context.current();
  const info = actx.info;
  const { stage } = input;
  const { plugin, params } = resolveAttempt(deps, input, info);
  const records = attemptRecords(deps, { runId: input.runId, activityId: info.activityId, attempt: info.attempt, stageId: stage.id });
  const budget = input.budget ? await attemptBudget(deps, input) : undefined;
  // A gpu stage's attempt holds one of this worker's devices until it ends: taken here, returned by
  // the one finally below whatever ends the attempt (a cache hit, a throw before the plugin runs —
  // the stage context, the cache lookup —, the plugin's outcome, a cancellation).
  const device = plugin.resource === 'gpu' && deps.devices ? await deps.devices.take(actx.cancellationSignal) : undefined;
  const withDevice = async (): Promise<StageOutcome> => {
    // The steps around the plugin, each in its own helper: the budget guard (stops the stage at a
    // checkpoint once it would overspend), heartbeats (also epoch records and budget checks), the
    // stage context, the cache, the usage meter, and the failure the workflow sees.
    const guard = budgetGuard(budget, actx.cancellationSignal);
    const usage = attemptUsage({
      meter: deps.meter,
      artifacts: deps.artifacts,
      logger: deps.logger,
      input,
      plugin,
      info,
      device,
      reported: () => made.reported(),
    });
    const heart = attemptHeartbeat(actx, records, (checkpoint) => guard.check(usage.soFar, checkpoint));
    const made = createStageContext({
      artifacts: deps.artifacts,
      services: deps.services,
      logger: records.watchLogger(deps.logger),
      runId: input.runId,
      pipeline: input.pipeline,
      stageId: stage.id,
      attempt: info.attempt,
      ...(input.replica ? { replica: input.replica } : {}),
      ...(input.startedBy ? { startedBy: input.startedBy } : {}),
      heartbeat: heart.beat,
      // A round after a budget stop has no heartbeat of its own: the workflow hands the checkpoint on.
      lastCheckpoint: info.heartbeatDetails ?? input.checkpoint,
      signal: guard.signal,
      ...(device ? { device } : {}),
      operatorRound: operatorRoundOf(info.activityId),
    });
    const ctx: StageContext = { ...made.ctx, meter: usage.meter(made.ctx.meter) };
    records.started();
    const cacheKey = stage.cache && deps.cache && !input.replica ? cacheKeyFor(input) : undefined;
    if (cacheKey) {
      const hit = await cachedOutcome(deps, cacheKey, info.attempt).catch(async (err: unknown) => {
        // The attempt ends here: its record is closed and the error mapped as a plugin's would be.
        const failure = toFailure(err, stage.id, info.attempt, actx.cancellationSignal);
        await records.closed(failure instanceof CancelledFailure ? 'cancelled' : 'failed', failure.message);
        await made.close().catch(() => undefined);
        throw failure;
      });
      if (hit) {
        await records.closed('succeeded');
        return hit;
      }
    }
    usage.start();
    const timer = setInterval(
      () => {
        heart.beat();
        usage.writePartial();
        budget?.refresh();
      },
      Math.max(250, deps.heartbeatEveryMs ?? Math.min(10_000, stage.heartbeatMs / 3)),
    );
    let result: StageResult | undefined;
    let failure: Error | undefined;
    let spent: StageOutcome['spent'];
    try {
      const inputs = await checkInputs(deps.artifacts, plugin, input.inputs);
      result = await usage.run(() => body(plugin, ctx, params, inputs));
      usage.succeeded(result);
      if (cacheKey) await deps.cache!.store(cacheKey, input.runId, stage.id, result);
      for (const [epoch, metrics] of epochsFromMetrics(result.metrics)) records.epoch({ epoch, metrics });
      await records.closed('succeeded');
    } catch (err) {
      failure = guard.stopReason
        ? ApplicationFailure.create({
            message: `stage ${stage.id}: stopped at a checkpoint: ${guard.stopReason}`,
            type: 'BUDGET_EXCEEDED',
            nonRetryable: true,
            details: [{ attempt: info.attempt, checkpoint: heart.lastDetails() }],
          })
        : toFailure(err, stage.id, info.attempt, actx.cancellationSignal);
      await records.closed(failure instanceof CancelledFailure ? 'cancelled' : 'failed', failure.message);
    } finally {
      clearInterval(timer);
      // Shared folders mirrored through an object store stop with the attempt, whatever it did.
      await made.close().catch(() => undefined);
      // Throws (USAGE_NOT_RECORDED) when a successful attempt's usage could not be written.
      await usage.finish();
      if (budget)
        spent = await budget
          .spentNow()
          .catch((e: unknown) => void deps.logger.warn("could not read the run's spend", { stage: stage.id, error: (e as Error).message }));
    }
    if (failure) throw withDetail(failure, spent ? { spent } : {});
    if (!input.replica && input.stageStartedAt) await recordProfile(deps, input, params, result!);
    return { outputs: result!.outputs, metrics: result!.metrics, attempt: info.attempt, ...(spent ? { spent } : {}) };
  };
  try {
    return await withDevice();
  } finally {
    if (device) deps.devices!.give(device);
  }
}

/** The installed plugin and the stage's params parsed by its schema; failures the workflow must not retry. */
function resolveAttempt(deps: ActivityDeps, input: RunStageInput, info: Context['info']): { plugin: StagePlugin<unknown>; params: unknown } {
  const { stage } = input;
  const plugin = deps.stages.get(stage.plugin, stage.pluginVersion);
  if (!plugin) {
    const installed = deps.stages
      .list()
      .filter((p) => p.name === stage.plugin)
      .map((p) => p.version);
    throw ApplicationFailure.nonRetryable(
      `stage ${stage.id}: plugin ${stage.plugin}@${stage.pluginVersion} is not installed on the workers of ${info.taskQueue} (installed: ${installed.join(', ') || 'none'}); retryStage(pluginVersion: …) moves the stage to an installed version`,
      'UNKNOWN_PLUGIN',
      { attempt: info.attempt },
    );
  }
  const parsed = plugin.paramsSchema.safeParse(stage.params);
  if (!parsed.success) {
    const msg = parsed.error.issues.map((i) => `params${formatPath(i.path, true)}: ${i.message}`).join('; ');
    throw ApplicationFailure.nonRetryable(`stage ${stage.id}: ${msg}`, 'PLUGIN_PARAMS_INVALID', { attempt: info.attempt });
  }
  return { plugin, params: parsed.data };
}

/**
 * Stops an attempt that would overspend: crossing the budget stops the stage at its next checkpoint
 * (new heartbeat details carrying a `checkpoint`, as the built-in trainers send), so a raise resumes
 * from it; a stage that sends none within BUDGET_STOP_GRACE_MS of crossing is stopped anyway. The
 * stop aborts the stage's signal like a cancellation.
 */
function budgetGuard(budget: Awaited<ReturnType<typeof attemptBudget>> | undefined, cancellation: AbortSignal) {
  const stop = new AbortController();
  let overSince: number | undefined;
  let reason: string | undefined;
  return {
    signal: AbortSignal.any([cancellation, stop.signal]),
    /** Why the attempt was stopped, once it was. */
    get stopReason(): string | undefined {
      return reason;
    },
    /** `used`: what the attempt has used so far (read only when there is a budget to check). */
    check(used: () => { cpuSeconds: number; gpuSeconds: number }, checkpoint: boolean): void {
      if (!budget || stop.signal.aborted) return;
      const over = budget.over(used());
      if (!over) return;
      overSince ??= Date.now();
      if (checkpoint || Date.now() - overSince >= BUDGET_STOP_GRACE_MS) {
        reason = over;
        stop.abort(new Error(over));
      }
    },
  };
}

/**
 * The attempt's heartbeat: the stage's details (kept, and sent again on every tick), epoch records
 * from them, and a budget check on each (`onBeat` learns whether new details carry a checkpoint).
 */
function attemptHeartbeat(actx: Context, records: ReturnType<typeof attemptRecords>, onBeat: (checkpoint: boolean) => void) {
  let lastDetails: unknown;
  return {
    beat(d?: unknown): void {
      let checkpoint = false;
      if (d !== undefined) {
        checkpoint = JSON.stringify(d) !== JSON.stringify(lastDetails) && hasCheckpoint(d);
        lastDetails = d;
        records.epoch(epochFromHeartbeat(d));
      }
      onBeat(checkpoint);
      actx.heartbeat(lastDetails);
    },
    lastDetails: () => lastDetails,
  };
}

/** A cached result whose outputs are all still there, as this attempt's outcome; undefined on a miss. */
async function cachedOutcome(deps: ActivityDeps, key: string, attempt: number): Promise<StageOutcome | undefined> {
  const hit = await deps.cache!.lookup(key);
  if (!hit || !(await allPresent(deps.artifacts, hit))) return undefined;
  return { outputs: hit.outputs, metrics: { ...hit.metrics, cacheHit: true }, attempt };
}

/** How often a budgeted attempt reads the run's spend again while it runs. */
const BUDGET_REFRESH_MS = 1000;

/** How long an attempt over its budget may run on waiting for a checkpoint before it is stopped without one. */
const BUDGET_STOP_GRACE_MS = 60_000;

/** Heartbeat details that mark a checkpoint: they name one (`checkpoint`), as the built-in stages' do. */
function hasCheckpoint(d: unknown): boolean {
  return !!d && typeof d === 'object' && typeof (d as { checkpoint?: unknown }).checkpoint === 'string';
}

/**
 * The budget one attempt runs under: what the run and the stage had spent when it started (from
 * the ledger, so earlier attempts and stages count), and its limits. `over` says why the attempt
 * must stop once the run's or the stage's spend (with this attempt's usage so far) passes a limit.
 */
async function attemptBudget(deps: ActivityDeps, input: RunStageInput) {
  const b = input.budget!;
  const sheet = b.priceSheet as PriceSheet;
  const spend0 = await deps.services.ledger.spend(input.runId, sheet);
  const stage0 = spend0.byStage[input.stage.id] ?? 0n;
  // The run's spend is read again while the attempt runs: stages running side by side write their
  // usage as it accrues, so what they spend counts against the run's budget here too.
  let latest = spend0;
  let refreshing = false;
  let refreshedAt = Date.now();
  const cost = (u: { cpuSeconds: number; gpuSeconds: number }): bigint =>
    priceUsage(
      [
        {
          stageId: input.stage.id,
          cpuMs: BigInt(Math.round(u.cpuSeconds * 1000)),
          gpuMs: BigInt(Math.round(u.gpuSeconds * 1000)),
          wallMs: 0n,
          bytesKept: 0n,
          attempts: 1,
        },
      ],
      sheet,
    ).reduce((n, l) => n + l.amount, 0n);
  return {
    /** Reads the run's spend again (at most once a second, one read at a time; a failed read keeps the last). */
    refresh(): void {
      if (refreshing || Date.now() - refreshedAt < BUDGET_REFRESH_MS) return;
      refreshing = true;
      deps.services.ledger
        .spend(input.runId, sheet)
        .then(
          (s) => void (latest = s),
          () => undefined,
        )
        .finally(() => {
          refreshing = false;
          refreshedAt = Date.now();
        });
    },
    over(u: { cpuSeconds: number; gpuSeconds: number }): string | undefined {
      const c = cost(u);
      // Other stages' spend as last read, this stage's as it was when the attempt started, and the attempt's own.
      const others = latest.total - (latest.byStage[input.stage.id] ?? 0n);
      const run = others + stage0 + c;
      const stage = stage0 + c;
      if (b.runMax !== undefined && run > parseMoney(b.runMax))
        return `the run has spent ${formatMoneyExact(run)} ${b.currency}, over its budget of ${b.runMax} ${b.currency}`;
      if (b.stageMax !== undefined && stage > parseMoney(b.stageMax))
        return `stage ${input.stage.id} has spent ${formatMoneyExact(stage)} ${b.currency}, over its budget of ${b.stageMax} ${b.currency}`;
      return undefined;
    },
    async spentNow(): Promise<{ run: string; stage: string }> {
      const s = await deps.services.ledger.spend(input.runId, sheet);
      return { run: formatMoneyExact(s.total), stage: formatMoneyExact(s.byStage[input.stage.id] ?? 0n) };
    },
  };
}

/** The same failure with more facts in its details (what the workflow reads). */
function withDetail(failure: Error, extra: Record<string, unknown>): Error {
  if (!(failure instanceof ApplicationFailure) || Object.keys(extra).length === 0) return failure;
  const first = failure.details?.[0];
  return ApplicationFailure.create({
    message: failure.message,
    ...(failure.type ? { type: failure.type } : {}),
    nonRetryable: failure.nonRetryable ?? false,
    details: [{ ...(first && typeof first === 'object' ? first : {}), ...extra }],
    ...(failure.cause ? { cause: failure.cause } : {}),
  });
}

/** What estimates learn from: the stage's params, sizes and duration (its usage is in the ledger). Never fails the stage. */
async function recordProfile(deps: ActivityDeps, input: RunStageInput, params: unknown, result: StageResult): Promise<void> {
  try {
    await deps.services.ledger.recordStageProfile({
      runId: input.runId,
      stageId: input.stage.id,
      pipeline: input.pipeline,
      plugin: input.stage.plugin,
      pluginVersion: input.stage.pluginVersion,
      params,
      inputBytes: Object.values(input.inputs).reduce((n, r) => n + r.bytes, 0),
      outputBytes: Object.values(result.outputs).reduce((n, r) => n + r.bytes, 0),
      durationMs: Math.max(0, Date.now() - Date.parse(input.stageStartedAt!)),
    });
  } catch (e) {
    deps.logger.warn('could not record the stage profile (estimates will not learn from it)', { stage: input.stage.id, error: (e as Error).message });
  }
}

/**
 * One attempt's records: its start and end, and per-epoch metrics from heartbeats, log lines and
 * final metrics (merged per epoch). Writes are queued and never fail the stage; `closed` waits
 * for them, so an attempt's rows are stored before its outcome reaches the workflow.
 */
function attemptRecords(deps: ActivityDeps, key: { runId: string; activityId: string; attempt: number; stageId: string }) {
  const rec = deps.records;
  let queue: Promise<void> = Promise.resolve();
  const write = (fn: (r: StageRecorder) => Promise<void>) => {
    if (!rec) return;
    queue = queue
      .then(() => fn(rec))
      .catch((e: unknown) => deps.logger.warn('could not record stage attempt', { stage: key.stageId, error: (e as Error).message }));
  };
  const epochs = new Map<number, Record<string, number>>();
  const epoch = (e: { epoch: number; metrics: Record<string, number> } | undefined) => {
    if (!e) return;
    const merged = { ...(epochs.get(e.epoch) ?? {}), ...e.metrics };
    if (JSON.stringify(merged) === JSON.stringify(epochs.get(e.epoch))) return;
    epochs.set(e.epoch, merged);
    write((r) => r.epoch({ ...key, epoch: e.epoch, metrics: merged }));
  };
  return {
    started: () => write((r) => r.attemptStarted({ ...key, startedAt: new Date().toISOString() })),
    epoch,
    async closed(outcome: 'succeeded' | 'failed' | 'cancelled', error?: string) {
      write((r) => r.attemptClosed({ ...key, closedAt: new Date().toISOString(), outcome, ...(error ? { error } : {}) }));
      await queue;
    },
    /** The stage's logger, watched for per-epoch lines (`epoch 3/10` with measurements). */
    watchLogger(logger: Logger): Logger {
      if (!rec) return logger;
      return {
        ...logger,
        debug: (m, meta) => logger.debug(m, meta),
        warn: (m, meta) => logger.warn(m, meta),
        error: (m, meta) => logger.error(m, meta),
        info: (m, meta) => {
          epoch(epochFromLog(m, meta));
          logger.info(m, meta);
        },
      };
    },
  };
}

/**
 * Every consumed kind must be present and unchanged since it was sealed; checked once here, so
 * plugins get `inputs.<kind>` typed as present and need no checks of their own.
 */
async function checkInputs(store: ArtifactStore, plugin: StagePlugin<unknown>, given: Record<string, ArtifactRef>): Promise<StageInputs> {
  const inputs: Record<string, ArtifactRef> = {};
  for (const kind of plugin.consumes) {
    const ref = given[kind];
    if (!ref) throw new StageError(`${plugin.name} needs a "${kind}" input`, { type: 'INPUT_MISSING', details: { kind } });
    const v = await store.verify(ref);
    if (!v.ok) throw new StageError(`input "${kind}": ${v.reason}`, { type: 'ARTIFACT_CORRUPT', details: { kind, uri: ref.uri } });
    inputs[kind] = ref;
  }
  return inputs;
}

/**
 * Maps what a plugin threw onto a Temporal failure with the right retry intent, in one place:
 * StageError keeps its type and retry intent; DataError (bad data) is never retried; a child
 * job's error keeps its code and retry intent; anything else is retried under its name.
 */
function toFailure(err: unknown, stageId: string, attempt: number, signal: AbortSignal): Error {
  if (err instanceof CancelledFailure || err instanceof ApplicationFailure) return err;
  if (signal.aborted) return new CancelledFailure(`stage ${stageId} cancelled`);
  const s = asStageError(err);
  if (s) {
    return ApplicationFailure.create({
      message: `stage ${stageId}: ${s.message}`,
      type: s.type,
      nonRetryable: !s.retryable,
      details: [{ attempt, ...(s.details ?? {}) }],
    });
  }
  const e = err instanceof Error ? err : new Error(String(err));
  return ApplicationFailure.create({ message: `stage ${stageId}: ${e.message}`, type: e.name || 'Error', nonRetryable: false, details: [{ attempt }] });
}

function asStageError(e: unknown): StageError | undefined {
  if (e instanceof StageError) return e;
  if (e instanceof DataError) return new StageError(e.message, { type: e.code, retryable: false, ...(e.file ? { details: { file: e.file } } : {}) });
  if (e instanceof ChildJobError) return new StageError(e.message, { type: e.code, retryable: e.retryable, ...(e.file ? { details: { file: e.file } } : {}) });
  return undefined;
}

function cacheKeyFor(input: RunStageInput): string {
  const inputs = Object.entries(input.inputs)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([k, r]) => [k, r.sha256]);
  return createHash('sha256')
    .update(JSON.stringify([input.stage.plugin, input.stage.pluginVersion, canonical(input.stage.params), inputs]))
    .digest('hex');
}

async function allPresent(store: ArtifactStore, r: StageResult): Promise<boolean> {
  for (const ref of Object.values(r.outputs)) if (!(await store.verify(ref)).ok) return false;
  return true;
}
