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
  /** The spec's budget, resolved at start (absent: no budget; the run behaves as before budgets existed). */
  budget?: BudgetInput;
  /** The estimate made at start (a stage's expected cost is what a budget checks before it starts). */
  estimate?: RunEstimateView;
  /** How a gang that cannot run gives its slots back (from the engine's configuration; defaults when absent). */
  gang?: GangSettings;
}

/** How long a granted gang's replicas may take to start, and how often a gang re-queues before the run pauses. */
export interface GangSettings {
  /** A replica not started this long after it was scheduled fails the gang's try (CAPSTAN_GANG_START_TIMEOUT, default 2 min). */
  replicaStartTimeoutMs: number;
  /** How many times a gang gives its slots back and asks again (revoked, or a replica did not start) before the run pauses (CAPSTAN_GANG_REQUEUES, default 2). */
  requeues: number;
}

/** What happens when a budget would be or is exceeded. */
export type BudgetAction = 'pause' | 'fail';

/** A spec's budget as the workflow runs it: money as exact decimal strings in the price sheet's currency. */
export interface BudgetInput {
  currency: string;
  /** The whole run's limit; absent when only stages have limits. */
  max?: string;
  onExceed: BudgetAction;
  /** Per-stage limits. */
  stages: Record<string, { max: string; onExceed: BudgetAction }>;
  /** The price sheet spend is priced with (the configured one merged with the ledger stage's override). */
  priceSheet: PriceSheetData;
}

/** The price sheet (ledger/schemas PriceSheet), repeated here as plain data so the workflow imports nothing with I/O. */
export interface PriceSheetData {
  currency: string;
  compute: { cpuHour: string; gpuHour: string };
  storage: { gbMonth: string; retentionMonths: number };
}

/** A low–expected–high range. */
export interface NumRange {
  expected: number;
  low: number;
  high: number;
}

/** Money as exact decimal strings. */
export interface MoneyRangeText {
  expected: string;
  low: string;
  high: string;
}

/** One stage's estimate (ledger/estimate.ts explains the bases). */
export interface StageEstimateView {
  stageId: string;
  plugin: string;
  pluginVersion: string;
  basis: 'history' | 'plugin' | 'unknown';
  detail: string;
  samples: number;
  sampleRuns: string[];
  durationSeconds?: NumRange;
  /** Bytes the stage is expected to keep (priced as storage). */
  bytesKept?: NumRange;
  cost?: { cpu: MoneyRangeText; gpu: MoneyRangeText; storage: MoneyRangeText; total: MoneyRangeText };
}

/** What a spec is expected to cost, take and return, before it runs (estimateRun; kept with a run started from it). */
export interface RunEstimateView {
  currency: string;
  madeAt: string;
  complete: boolean;
  unknownStages: string[];
  durationSeconds: NumRange;
  meteredCost: MoneyRangeText;
  declaredCost: string;
  declaredCosts: { category: string; description: string; amount: string }[];
  totalCost: MoneyRangeText;
  expectedRevenue: string | null;
  roi: { expected: string; low: string; high: string } | null;
  roiExplanation: string | null;
  stages: StageEstimateView[];
}

/** The budget as the run tracks it (exact decimals). */
export interface BudgetState {
  currency: string;
  max?: string;
  onExceed: BudgetAction;
  /** Metered spend of the run so far (as of the last stage attempt that ended). */
  spent: string;
  /** Estimates held out of the run's budget by the stages running now (stage id → amount); absent when none. */
  reserved?: Record<string, string>;
  stages: Record<string, { max: string; onExceed: BudgetAction; spent: string }>;
  /** Raises by operators, in order. */
  raises: { at: string; stageId?: string; from: string; to: string; by?: string }[];
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
  /**
   * Set while the stage waits for its slots: what it asked the queue's keeper for, and since when
   * (workflow time). The API adds the live facts (capacity, position) from the keeper at read time.
   */
  wait?: StageWaitState;
  /** Set while the run is paused on this stage because of its budget: why (estimate or spend, and the figures). */
  budgetPause?: string;
}

/** What a waiting stage asked for (kept in the run state; no command depends on it). */
export interface StageWaitState {
  reason: 'slots';
  /** The task queue whose keeper hands out the slots. */
  queue: string;
  slotsNeeded: number;
  /** When the request was sent (workflow time, ISO-8601). */
  since: string;
  /** The keeper's id of the request: finds its place among the keeper's waiting requests. */
  requestId: string;
}

export type RunEventType =
  | 'RUN_STARTED'
  | 'STAGE_STARTED'
  | 'STAGE_WAITING'
  | 'STAGE_WAIT_ENDED'
  | 'STAGE_SUCCEEDED'
  | 'STAGE_FAILED'
  | 'STAGE_REUSED'
  | 'STAGE_SKIPPED'
  | 'RUN_PAUSED'
  | 'RUN_RESUMED'
  | 'RUN_COMPLETED'
  | 'RUN_FAILED'
  | 'RUN_CANCELLED'
  | 'BUDGET_RAISED'
  | 'STAGE_REQUEUED';

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
  /** The run's budget and spend so far (runs with a budget only). */
  budget?: BudgetState;
  /** What the run was estimated at when it started. */
  estimate?: RunEstimateView;
  /**
   * The OpenTelemetry trace of the run's workflow span, when the worker traces (Temporal's
   * interceptors): the trace of a schedule's firing, which no API request started (a run the API
   * started has it in its memo too).
   */
  traceId?: string;
}

/** An operator decision on a paused run, delivered as a Temporal Update. */
export type Decision =
  /** `by`: who decided; the rerun stage acts with their rights (absent in histories from before it was recorded: the starter's). */
  | { action: 'retry'; stageId: string; params?: unknown; pluginVersion?: string; by?: RunStarter }
  | { action: 'skip'; stageId: string; by?: RunStarter }
  | { action: 'abort'; reason: string; by?: RunStarter }
  /** Raises the run's budget (or a stage's, with stageId) to `max`, an exact decimal above the current limit. */
  | { action: 'raise-budget'; max: string; stageId?: string; by?: string };

/** What an activity reports for one stage attempt. */
export interface StageOutcome extends StageProducts {
  /** Which attempt of the activity produced it (from Temporal's activity info). */
  attempt: number;
  /** For runs with a budget: the run's and this stage's metered spend after the attempt (exact decimals). */
  spent?: { run: string; stage: string };
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
  /** The API token's public id (absent on runs started before it was recorded, and with auth off). */
  tokenId?: string;
}

export interface RunStageInput {
  runId: string;
  pipeline: string;
  stage: ResolvedStage;
  inputs: Record<string, ArtifactRef>;
  replica?: { index: number; count: number };
  startedBy?: RunStarter;
  /** When the workflow started this round of the stage (what its profile's duration is measured from). */
  stageStartedAt?: string;
  /** For runs with a budget: the limits the attempt must stay within, priced with this sheet. */
  budget?: { currency: string; priceSheet: PriceSheetData; runMax?: string; stageMax?: string };
  /** A checkpoint to resume from when the activity has no heartbeat of its own (a round after a budget stop). */
  checkpoint?: unknown;
}

export interface ReduceStageInput extends RunStageInput {
  replicaResults: StageOutcome[];
}
