// Types shared by the workflow, the activities and the API. Pure data: no imports with I/O.

/** A reference to an artifact in the artifact store. Only this travels through Temporal. */
export interface ArtifactRef {
  kind: string;
  /** `artifact:<relative path>` inside the artifact store. */
  uri: string;
  /** SHA-256 over the artifact's files (names and contents). */
  sha256: string;
  bytes: number;
  /** Small, JSON-friendly facts (shapes, counts, …). */
  meta?: Record<string, unknown>;
}

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
}

export interface RunPipelineInput {
  pipeline: string;
  /** The spec as the user sent it (for resume and display). */
  spec: unknown;
  stages: ResolvedStage[];
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
}

export interface RunState {
  pipeline: string;
  status: RunStatus;
  startedAt: string;
  closedAt?: string;
  stages: StageState[];
  /** The TensorFlow.js backend the ML stages used, once one has run. */
  tfBackend?: string;
}

/** What an activity reports for one stage attempt. */
export interface StageOutcome {
  outputs: Record<string, ArtifactRef>;
  metrics: Record<string, number | string | boolean>;
  /** Which attempt of the activity produced it (from Temporal's activity info). */
  attempt: number;
}

export interface RunStageInput {
  runId: string;
  pipeline: string;
  stage: ResolvedStage;
  inputs: Record<string, ArtifactRef>;
  replica?: { index: number; count: number };
}

export interface ReduceStageInput extends RunStageInput {
  replicaResults: StageOutcome[];
}
