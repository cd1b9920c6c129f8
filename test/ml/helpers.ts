import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { createActivities } from '../../activities/index.js';
import { createStageContext, type ReportedUsage } from '../../activities/stage-context.js';
import { ArtifactStore } from '../../lib/artifacts.js';
import { silentLogger } from '../../lib/logger.js';
import type { ArtifactRef, ReplicaInfo, RunStarter, StageContext, StagePlugin } from '../../plugins/contract.js';
import { StageRegistry } from '../../plugins/registry.js';
import type { StageServices } from '../../plugins/services.js';
import type { ResolvedStage, StageOutcome } from '../../workflows/types.js';

export async function tmpStore(): Promise<{ store: ArtifactStore; root: string; cleanup: () => Promise<void> }> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'capstan-ml-'));
  return { store: new ArtifactStore(root), root, cleanup: () => rm(root, { recursive: true, force: true }) };
}

/**
 * Services for stages that use none: any use fails loudly. The dispatch picks up `ledger` when it
 * builds its activities, so each service is a stand-in whose methods throw when called.
 */
export const noServices = new Proxy({} as StageServices, {
  get(_t, name) {
    return new Proxy(
      {},
      {
        get(_s, method) {
          if (method === 'then') return undefined; // not a promise
          return () => {
            throw new Error(`this test wired no stage services (called ${String(name)}.${String(method)})`);
          };
        },
      },
    );
  },
});

export interface TestContext extends StageContext {
  beats: unknown[];
  /** What the stage reported through ctx.meter. */
  reported(): ReportedUsage;
}

/** A StageContext as the dispatch builds it (the artifact store on a tmp dir), heartbeats recorded. */
export function makeContext(opts: {
  store: ArtifactStore;
  runId?: string;
  pipeline?: string;
  stageId: string;
  attempt?: number;
  lastCheckpoint?: unknown;
  replica?: ReplicaInfo;
  signal?: AbortSignal;
  services?: StageServices;
  /** Who started the run (a deploy stage needs a starter with a token id to claim a model name). */
  startedBy?: RunStarter;
}): TestContext {
  const beats: unknown[] = [];
  const { ctx, reported } = createStageContext({
    artifacts: opts.store,
    services: opts.services ?? noServices,
    logger: silentLogger,
    runId: opts.runId ?? 'run-1',
    pipeline: opts.pipeline ?? 'test',
    stageId: opts.stageId,
    attempt: opts.attempt ?? 1,
    ...(opts.replica ? { replica: opts.replica } : {}),
    ...(opts.startedBy ? { startedBy: opts.startedBy } : {}),
    lastCheckpoint: opts.lastCheckpoint,
    signal: opts.signal ?? new AbortController().signal,
    heartbeat: (d?: unknown) => void beats.push(d),
  });
  return Object.assign(ctx, { beats, reported });
}

/**
 * Runs one stage through the real dispatch activity (`runStage`) in Temporal's mock activity
 * environment: input checks, params parsing and the mapping of errors onto ApplicationFailure
 * (type, nonRetryable) are the ones a worker applies.
 */
export async function dispatch(opts: {
  plugin: StagePlugin<any, string>;
  store: ArtifactStore;
  stageId: string;
  params?: unknown;
  inputs?: Record<string, ArtifactRef>;
  services?: StageServices;
  attempt?: number;
  pipeline?: string;
  startedBy?: RunStarter;
}): Promise<StageOutcome> {
  const stages = new StageRegistry().register(opts.plugin).freeze();
  const acts = createActivities({ stages, artifacts: opts.store, services: opts.services ?? noServices, logger: silentLogger });
  const stage: ResolvedStage = {
    id: opts.stageId,
    plugin: opts.plugin.name,
    pluginVersion: opts.plugin.version,
    params: opts.params ?? {},
    needs: [],
    inputs: {},
    produces: opts.plugin.produces,
    taskQueue: 'test',
    retry: { maximumAttempts: 1, initialIntervalMs: 100, backoffCoefficient: 1, maximumIntervalMs: 100, nonRetryableErrorTypes: [] },
    startToCloseMs: 600_000,
    heartbeatMs: 60_000,
    replicas: 1,
    cache: false,
  };
  const env = new MockActivityEnvironment({ attempt: opts.attempt ?? 1 });
  return env.run(acts.runStage, {
    runId: 'run-1',
    pipeline: opts.pipeline ?? 'test',
    stage,
    inputs: opts.inputs ?? {},
    ...(opts.startedBy ? { startedBy: opts.startedBy } : {}),
  });
}
