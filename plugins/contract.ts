import type { z } from 'zod';
import type { ArtifactRef } from '../workflows/types.js';
import type { ArtifactStore } from '../lib/artifacts.js';
import type { Logger } from '../lib/logger.js';
import type { StageServices } from './services.js';

export type { ArtifactRef } from '../workflows/types.js';

/** Version of the plugin contract below. A plugin states which one it was written for. */
export const PLUGIN_API_VERSION = 1;

/** Resource class of a stage: picks the task queue (and so the kind of host) it runs on. */
export type ResourceClass = 'cpu' | 'gpu';

export interface StageRetryPolicy {
  maximumAttempts?: number;
  initialIntervalMs?: number;
  backoffCoefficient?: number;
  maximumIntervalMs?: number;
  nonRetryableErrorTypes?: string[];
}

export interface StageTimeouts {
  /** Upper bound for one attempt. */
  startToCloseMs: number;
  /** A stage that does not heartbeat within this interval is considered dead and retried. */
  heartbeatMs?: number;
}

/** Small numbers and labels that describe what a stage did. They travel through Temporal. */
export type StageMetrics = Record<string, number | string | boolean>;

export interface StageResult {
  /** Produced artifacts, keyed by artifact kind. References only: the data stays in the store. */
  outputs: Record<string, ArtifactRef>;
  metrics: StageMetrics;
}

/** Which replica of a data-parallel stage this attempt runs. */
export interface ReplicaInfo {
  index: number;
  count: number;
}

export interface StageContext {
  runId: string;
  pipeline: string;
  stageId: string;
  /** 1 on the first attempt. */
  attempt: number;
  /** Set for the replicas of a data-parallel stage. */
  replica?: ReplicaInfo;
  artifacts: ArtifactStore;
  /** Record progress; the details come back as `lastCheckpoint` on the next attempt. Keep it small (paths, not weights). */
  heartbeat(details?: unknown): void;
  /** The details of the last heartbeat of the previous attempt, if any. */
  lastCheckpoint: unknown;
  logger: Logger;
  /** Aborted when Temporal cancels the stage (run cancelled, timeout, worker shutdown). */
  signal: AbortSignal;
  services: StageServices;
}

/**
 * A data-parallel plugin runs `run` once per replica, each as its own activity, then `reduce`
 * once with their results.
 */
export interface DataParallel<P> {
  /** How many replicas to run for these params. */
  replicas(params: P): number;
  reduce(ctx: StageContext, params: P, inputs: Record<string, ArtifactRef>, replicaResults: StageResult[]): Promise<StageResult>;
}

export interface StagePlugin<P = unknown> {
  /** `<scope>:<kebab-name>`, e.g. `core:data-prep`. */
  name: string;
  /** semver of the plugin itself; a change invalidates cached/reused outputs. */
  version: string;
  /** The plugin API version it was written for (PLUGIN_API_VERSION). */
  apiVersion: number;
  description: string;
  paramsSchema: z.ZodType<P>;
  /** Artifact kinds read, e.g. ['dataset']. */
  consumes: string[];
  /** Artifact kinds written, e.g. ['model']. */
  produces: string[];
  resource: ResourceClass;
  retry?: StageRetryPolicy;
  timeouts?: Partial<StageTimeouts>;
  dataParallel?: DataParallel<P>;
  run(ctx: StageContext, params: P, inputs: Record<string, ArtifactRef>): Promise<StageResult>;
}

/** Helper that keeps the params type when declaring a plugin. */
export function defineStage<P>(plugin: StagePlugin<P>): StagePlugin<P> {
  return plugin;
}
