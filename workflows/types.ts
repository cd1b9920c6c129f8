// Types shared by the workflow, the activities and the API. Pure data: no imports with I/O.

export type { ArtifactRef } from '../lib/artifact-ref.js';
import type { ArtifactRef } from '../lib/artifact-ref.js';

export interface RetrySpec {
  maximumAttempts: number;
  initialIntervalMs: number;
  backoffCoefficient: number;
  maximumIntervalMs: number;
  nonRetryableErrorTypes: string[];
}

/** One stage after validation against the registry: everything the workflow needs, no plugin code. */
export interface ResolvedStage {
  id: string;
  plugin: string;
  pluginVersion: string;
  params: unknown;
  /** Stage ids this stage waits for. */
  needs: string[];
  /** For each consumed artifact kind, the stage id whose output provides it. */
  inputs: Record<string, string>;
  produces: string[];
  taskQueue: string;
  retry: RetrySpec;
  startToCloseMs: number;
  heartbeatMs: number;
  /** >1 for data-parallel stages: that many replica activities, then a reduce. */
  replicas: number;
  /** Opt-in stage cache: reuse outputs of an earlier run with the same plugin version, params and inputs. */
  cache: boolean;
}

export interface FailurePolicy {
  /** `pause` waits for an operator decision when a stage has used up its retries; `fail` fails the run. */
  action: 'pause' | 'fail';
  /** How long a pause waits before the run fails. */
  timeoutMs: number;
}

/** What a stage produced: artifact references by kind, and small metrics. */
export interface StageProducts {
  outputs: Record<string, ArtifactRef>;
  metrics: Record<string, number | string | boolean>;
}

/** A completed stage's outputs carried into a resumed run instead of running the stage again. */
export interface ReusedStage extends StageProducts {
  /** The run the outputs were produced by. */
  fromRun: string;
}

export interface RunPipelineInput {
  pipeline: string;
  /** The spec as the user sent it (for resume and display). */
  spec: unknown;
  stages: ResolvedStage[];
  onFailure: FailurePolicy;
  /** Workflow id of the run this one resumes. */
  resumedFrom?: string;
  /** Stage id → outputs reused from an earlier run (these stages do not run). */
  reuse?: Record<string, ReusedStage>;
  /** Who started the run; absent for runs started before tokens existed and by schedules without one. */
  startedBy?: RunStarter;
}

export type RunStatus = 'RUNNING' | 'COMPLETED' | 'FAILED' | 'CANCELLED' | 'PAUSED' | 'TERMINATED' | 'TIMED_OUT';
export type StageStatus = 'PENDING' | 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'SKIPPED' | 'CANCELLED' | 'REUSED';

export interface StageState {
  id: string;
  plugin: string;
  status: StageStatus;
  attempts: number;
  startedAt?: string;
  closedAt?: string;
  outputs: Record<string, ArtifactRef>;
  metrics: Record<string, number | string | boolean>;
  error?: string;
  /** Error type of the last failure (e.g. PLUGIN_PARAMS_INVALID). */
  errorType?: string;
  /** Set when the outputs come from an earlier run (resume) instead of running here. */
  reusedFrom?: string;
  /** Params used by operator retries, when they replaced the spec's. */
  paramsOverride?: unknown;
  /** Plugin version an operator retry moved the stage to, when it replaced the pinned one. */
  pluginVersionOverride?: string;
  /** Set while the stage waits for its slots (gang scheduling), e.g. `2 slot(s) on capstan-gpu`. */
  waitingFor?: string;
}

export type RunEventType =
  | 'RUN_STARTED'
  | 'STAGE_STARTED'
  | 'STAGE_SUCCEEDED'
  | 'STAGE_FAILED'
  | 'STAGE_REUSED'
  | 'STAGE_SKIPPED'
  | 'RUN_PAUSED'
  | 'RUN_RESUMED'
  | 'RUN_COMPLETED'
  | 'RUN_FAILED'
  | 'RUN_CANCELLED';

/** What happened in a run, in order. Kept in the run state so the API can stream it. */
export interface RunEvent {
  seq: number;
  at: string;
  type: RunEventType;
  stageId?: string;
  message?: string;
}

export interface RunState {
  pipeline: string;
  status: RunStatus;
  startedAt: string;
  closedAt?: string;
  stages: StageState[];
  /** The TensorFlow.js backend the ML stages used, once one has run. */
  tfBackend?: string;
  resumedFrom?: string;
  /** Stage ids waiting for an operator decision. */
  pausedStages: string[];
  events: RunEvent[];
}

/** An operator decision on a paused run, delivered as a Temporal Update. */
export type Decision =
  | { action: 'retry'; stageId: string; params?: unknown; pluginVersion?: string }
  | { action: 'skip'; stageId: string }
  | { action: 'abort'; reason: string };

/** What an activity reports for one stage attempt. */
export interface StageOutcome extends StageProducts {
  /** Which attempt of the activity produced it (from Temporal's activity info). */
  attempt: number;
}

/** What a schedule stores and starts with: the spec, resolved at each firing. */
export interface ScheduledPipelineInput {
  spec: unknown;
  taskQueues: { cpu: string; gpu: string };
  startedBy?: RunStarter;
}

/** Who started a run (the API token's name and role); stages that need a role check it. */
export interface RunStarter {
  name: string;
  role: string;
}

export interface RunStageInput {
  runId: string;
  pipeline: string;
  stage: ResolvedStage;
  inputs: Record<string, ArtifactRef>;
  replica?: { index: number; count: number };
  startedBy?: RunStarter;
}

export interface ReduceStageInput extends RunStageInput {
  replicaResults: StageOutcome[];
}
