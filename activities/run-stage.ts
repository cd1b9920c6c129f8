import { createHash } from 'node:crypto';
import { ApplicationFailure, CancelledFailure, Context } from '@temporalio/activity';
import type { ArtifactStore } from '../lib/artifacts.js';
import { canonical } from '../lib/canonical.js';
import { StageError } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import type { StageContext, StagePlugin, StageResult } from '../plugins/contract.js';
import type { StageRegistry } from '../plugins/registry.js';
import type { StageServices } from '../plugins/services.js';
import { formatPath } from '../plugins/spec.js';
import type { ReduceStageInput, RunStageInput, StageOutcome } from '../workflows/types.js';

/** What one attempt of a stage used; handed to the meter (the ledger) after every attempt. */
export interface StageUsage {
  runId: string;
  pipeline: string;
  stageId: string;
  plugin: string;
  attempt: number;
  replica?: number;
  resource: 'cpu' | 'gpu';
  wallSeconds: number;
  cpuSeconds: number;
  deviceSeconds: number;
  bytesWritten: number;
  succeeded: boolean;
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
  registry: StageRegistry;
  artifacts: ArtifactStore;
  services: StageServices;
  logger: Logger;
  meter?: StageMeter;
  cache?: StageCache;
  /** Interval of the wrapper's own heartbeats, so short or quiet stages stay alive and hear cancellation. */
  heartbeatEveryMs?: number;
}

/**
 * The stage activities. One typed dispatch (`runStage`) instead of one activity per plugin:
 * the plugin lookup happens here, outside the workflow sandbox.
 */
export function createActivities(deps: ActivityDeps) {
  return {
    async runStage(input: RunStageInput): Promise<StageOutcome> {
      return attempt(deps, input, (plugin, ctx, params) => plugin.run(ctx, params, input.inputs));
    },
    async reduceStage(input: ReduceStageInput): Promise<StageOutcome> {
      const { replica: _ignored, ...rest } = input;
      return attempt(deps, rest, (plugin, ctx, params) => {
        if (!plugin.dataParallel) throw new StageError(`${plugin.name} is not data-parallel`, { type: 'PLUGIN_CONTRACT' });
        return plugin.dataParallel.reduce(ctx, params, input.inputs, input.replicaResults);
      });
    },
  };
}

export type Activities = ReturnType<typeof createActivities>;

async function attempt(
  deps: ActivityDeps,
  input: RunStageInput,
  body: (plugin: StagePlugin<unknown>, ctx: StageContext, params: unknown) => Promise<StageResult>,
): Promise<StageOutcome> {
  const actx = Context.current();
  const info = actx.info;
  const { stage } = input;
  const plugin = deps.registry.get(stage.plugin, stage.pluginVersion);
  if (!plugin) {
    throw ApplicationFailure.nonRetryable(
      `stage ${stage.id}: plugin ${stage.plugin}@${stage.pluginVersion} is not installed on worker ${info.taskQueue}`,
      'UNKNOWN_PLUGIN',
      { attempt: info.attempt },
    );
  }
  const parsed = plugin.paramsSchema.safeParse(stage.params);
  if (!parsed.success) {
    const msg = parsed.error.issues.map((i) => `params${formatPath(i.path, true)}: ${i.message}`).join('; ');
    throw ApplicationFailure.nonRetryable(`stage ${stage.id}: ${msg}`, 'PLUGIN_PARAMS_INVALID', { attempt: info.attempt });
  }
  let lastDetails: unknown = undefined;
  const beat = (d?: unknown) => {
    if (d !== undefined) lastDetails = d;
    actx.heartbeat(lastDetails);
  };
  const ctx: StageContext = {
    runId: input.runId,
    pipeline: input.pipeline,
    stageId: stage.id,
    attempt: info.attempt,
    ...(input.replica ? { replica: input.replica } : {}),
    artifacts: deps.artifacts,
    heartbeat: beat,
    lastCheckpoint: info.heartbeatDetails,
    logger: deps.logger,
    signal: actx.cancellationSignal,
    services: deps.services,
  };
  const cacheKey = stage.cache && deps.cache && !input.replica ? cacheKeyFor(input) : undefined;
  if (cacheKey) {
    const hit = await deps.cache!.lookup(cacheKey);
    if (hit && (await allPresent(deps.artifacts, hit))) {
      return { outputs: hit.outputs, metrics: { ...hit.metrics, cacheHit: true }, attempt: info.attempt };
    }
  }
  const timer = setInterval(() => beat(), Math.max(250, deps.heartbeatEveryMs ?? Math.min(10_000, stage.heartbeatMs / 3)));
  const wall0 = performance.now();
  const cpu0 = process.cpuUsage();
  let result: StageResult | undefined;
  try {
    result = await body(plugin, ctx, parsed.data);
    if (cacheKey) await deps.cache!.store(cacheKey, input.runId, stage.id, result);
    return { outputs: result.outputs, metrics: result.metrics, attempt: info.attempt };
  } catch (err) {
    throw toFailure(err, stage.id, info.attempt, actx.cancellationSignal);
  } finally {
    clearInterval(timer);
    if (deps.meter) {
      const cpu = process.cpuUsage(cpu0);
      const m = result?.metrics ?? {};
      const childCpu = typeof m.cpuSeconds === 'number' ? m.cpuSeconds : 0;
      const wallSeconds = (performance.now() - wall0) / 1000;
      const usage: StageUsage = {
        runId: input.runId,
        pipeline: input.pipeline,
        stageId: stage.id,
        plugin: plugin.name,
        attempt: info.attempt,
        ...(input.replica ? { replica: input.replica.index } : {}),
        resource: plugin.resource,
        wallSeconds,
        cpuSeconds: (cpu.user + cpu.system) / 1e6 + childCpu,
        deviceSeconds: typeof m.deviceSeconds === 'number' ? m.deviceSeconds : wallSeconds,
        bytesWritten: Object.values(result?.outputs ?? {}).reduce((n, r) => n + r.bytes, 0),
        succeeded: result !== undefined,
      };
      try {
        await deps.meter.recordUsage(usage);
      } catch (e) {
        deps.logger.warn('could not record stage usage', { stage: stage.id, error: (e as Error).message });
      }
    }
  }
}

/** Maps what a plugin threw onto a Temporal failure with the right retry intent. */
function toFailure(err: unknown, stageId: string, attempt: number, signal: AbortSignal): Error {
  if (err instanceof CancelledFailure || err instanceof ApplicationFailure) return err;
  if (signal.aborted) return new CancelledFailure(`stage ${stageId} cancelled`);
  if (err instanceof StageError) {
    return ApplicationFailure.create({
      message: `stage ${stageId}: ${err.message}`,
      type: err.type,
      nonRetryable: !err.retryable,
      details: [{ attempt, ...(err.details ?? {}) }],
    });
  }
  const e = err instanceof Error ? err : new Error(String(err));
  return ApplicationFailure.create({ message: `stage ${stageId}: ${e.message}`, type: e.name || 'Error', nonRetryable: false, details: [{ attempt }] });
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
