// The stage plugin contract: what a plugin and the host agree on. It is also the public surface of
// `capstan/plugin` (plugins/sdk.ts), compiled into the package with its type declarations: import
// only leaf types here (no ledger, database, Temporal or TensorFlow types), so a plugin project
// type-checks with zod and Node's types alone.
import type { z } from 'zod';
import type { DeclaredEstimate, EstimateScale } from '../ledger/declared-estimate.js';
import type { ArtifactRef } from '../lib/artifact-ref.js';
import type { Logger } from '../lib/logger.js';

export type { DeclaredEstimate, EstimateScale } from '../ledger/declared-estimate.js';

export type { ArtifactRef } from '../lib/artifact-ref.js';

/**
 * Version of the plugin contract below. A plugin states which one it was written for; the registry
 * refuses any other at load. A change that can break a plugin written for the previous version is
 * a new version, listed in plugins/contract-versions.ts and docs/plugin-contract.md.
 */
export const PLUGIN_API_VERSION = 2;

/** Resource class of a stage: picks the task queue (and so the kind of host) it runs on. */
export type ResourceClass = 'cpu' | 'gpu';

export interface StageRetryPolicy {
  maximumAttempts?: number;
  initialIntervalMs?: number;
  backoffCoefficient?: number;
  maximumIntervalMs?: number;
  /**
   * Error types that must not be retried although they were thrown retryable (e.g. by a library).
   * A `StageError` thrown with `retryable: false` (and `badInput`) needs no entry here.
   */
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

/** A device held by one stage attempt. */
export interface StageDevice {
  kind: 'gpu' | 'cpu';
  id: string;
  /** `gpu:0`, `cpu:1`. */
  label: string;
  host: string;
  env: Record<string, string>;
}

/** The inputs of a stage: one artifact per consumed kind, all present (the dispatch checks). */
export type StageInputs<C extends string = string> = { readonly [K in C]: ArtifactRef };

/** Usage the dispatch cannot see for itself, e.g. the CPU time of a child process. */
export interface UsageReport {
  /** CPU seconds used outside this process (child processes). Added to the worker's own CPU time. */
  cpuSeconds?: number;
  /** Device (GPU or CPU-core) seconds. When no stage reports any, the attempt's wall time is used. */
  deviceSeconds?: number;
  /**
   * The attempt's work ran in processes measured by pid, and `cpuSeconds` is all of it: the
   * worker's own CPU time during the attempt (which it shares with whatever else it runs) is then
   * not added. Command stages set it.
   */
  wholeAttempt?: boolean;
}

export interface StageUsageMeter {
  /** Usage of work that has finished (e.g. a child process that exited): added to the attempt's. */
  add(usage: UsageReport): void;
  /**
   * Usage so far of work still running (e.g. a training child's CPU time), so a budget can see a
   * long stage's spend while it runs. Each call replaces the previous one; `add` the final figure
   * when the work ends (the running figure is then dropped).
   */
  running?(usage: UsageReport): void;
}

/** What `ctx.output`'s writer returns: small, JSON-friendly facts stored as the reference's `meta`. */
export type OutputMeta = Record<string, unknown>;

export interface OutputOptions {
  /**
   * Store the artifact content-addressed under this namespace (e.g. `registry/<model>`) instead of
   * the run's folder: identical content is stored once and never rewritten once published.
   */
  contentAddressed?: string;
}

/**
 * Long-lived services the worker hands to every stage. The contract names what any plugin may use;
 * the host adds its own (the ledger and model registry of the core stages) in plugins/services.ts,
 * so their types stay out of the SDK.
 */
export interface StageServices {
  /**
   * The Python interpreter command stages run as `{python}` (CAPSTAN_PYTHON, else the venv of
   * `npm run setup:python`, else `python3`). Absent: `python3`.
   */
  python?: string;
}

/** Who started the run: the API token's name and role (viewer, predictor, operator, admin). */
export interface RunStarter {
  name: string;
  role: string;
  /** The token's public id, when the run was started with one (an optional addition: contract v2 still holds). */
  tokenId?: string;
}

export interface StageContext {
  readonly runId: string;
  readonly pipeline: string;
  readonly stageId: string;
  /** 1 on the first attempt. */
  readonly attempt: number;
  /** Set for the replicas of a data-parallel stage. */
  readonly replica?: ReplicaInfo;
  /**
   * The device this attempt holds, from the worker's pool (gpu stages only): hand `env` to the
   * child process that trains (`CUDA_VISIBLE_DEVICES` for a GPU; empty for a CPU device).
   */
  readonly device?: StageDevice;
  /**
   * Who started the run; absent for runs started without a token (older runs, some schedules).
   * A stage that needs a role checks it here and treats an absent starter as unprivileged.
   */
  readonly startedBy?: RunStarter;
  /** Record progress; the details come back as `lastCheckpoint` on the next attempt. Keep it small (URIs, not weights). */
  heartbeat(details?: unknown): void;
  /** The details of the last heartbeat of the previous attempt, if any. */
  readonly lastCheckpoint: unknown;
  readonly logger: Logger;
  /** Aborted when Temporal cancels the stage (run cancelled, timeout, worker shutdown). */
  readonly signal: AbortSignal;
  readonly services: StageServices;
  /** Reports usage the dispatch cannot measure itself (child-process CPU, device time). */
  readonly meter: StageUsageMeter;
  /**
   * Writes one output artifact: a fresh, empty folder for this (run, stage, kind[, replica]) is
   * handed to `write`; when it resolves the folder is sealed (hashed) and its reference returned.
   * A retry starts from an empty folder again.
   */
  // biome-ignore lint/suspicious/noConfusingVoidType: public plugin contract: a write callback that resolves nothing (Promise<void>, e.g. `async (dir) => writeFile(…)`) must stay accepted
  output(kind: string, write: (dir: string) => Promise<OutputMeta | void>, opts?: OutputOptions): Promise<ArtifactRef>;
  /** A local folder holding an input artifact (or a checkpoint URI from `checkpointUri`). Read it, never write it. */
  localPath(ref: ArtifactRef | string): Promise<string>;
  /**
   * The local scratch folder for this stage's checkpoints and job files, kept across attempts.
   * A replica gets its own unless `shared` (one folder for all replicas and the reduce);
   * `fresh` empties it first.
   */
  checkpointDir(opts?: { shared?: boolean; fresh?: boolean }): Promise<string>;
  /** A small, host-independent URI for a path inside a checkpoint folder, for heartbeat details. */
  checkpointUri(localPath: string): string;
}

/**
 * A data-parallel plugin runs `run` once per replica, each as its own activity, then `reduce`
 * once with their results.
 */
export interface DataParallel<P, C extends string = string> {
  /** How many replicas to run for these params. */
  replicas(params: P): number;
  reduce(ctx: StageContext, params: P, inputs: StageInputs<C>, replicaResults: StageResult[]): Promise<StageResult>;
}

export interface StagePlugin<P = unknown, C extends string = string> {
  /** `<scope>:<kebab-name>`, e.g. `core:data-prep`. */
  name: string;
  /** semver of the plugin itself; a change invalidates cached/reused outputs. */
  version: string;
  /** The plugin API version it was written for (PLUGIN_API_VERSION). */
  apiVersion: number;
  description: string;
  paramsSchema: z.ZodType<P>;
  /** Artifact kinds read, e.g. ['dataset']; each arrives in `inputs` under its kind. */
  consumes: readonly C[];
  /** Artifact kinds written, e.g. ['model']. */
  produces: string[];
  resource: ResourceClass;
  retry?: StageRetryPolicy;
  timeouts?: Partial<StageTimeouts>;
  dataParallel?: DataParallel<P, C>;
  /**
   * How estimates scale this stage's past runs to new params (ledger/estimate.ts): numeric params
   * its work grows in proportion to (`work`, e.g. epochs) and its data grows with (`data`, e.g. a
   * sample limit). Runs whose other params differ are not compared at all.
   */
  estimateScale?: EstimateScale;
  /**
   * The plugin's own estimate for these params and input size, used when no comparable past run
   * exists. Leave it out rather than guess: the stage is then estimated as unknown.
   */
  estimate?(params: P, inputs: { bytes: number | undefined }): DeclaredEstimate | undefined;
  run(ctx: StageContext, params: P, inputs: StageInputs<C>): Promise<StageResult>;
}

/**
 * Declares a plugin, keeping its types: params from `paramsSchema`, inputs from `consumes`
 * (`consumes: ['model']` gives `inputs.model: ArtifactRef`).
 */
export function defineStage<P, const C extends string = never>(plugin: StagePlugin<P, C>): StagePlugin<P, C> {
  return plugin;
}
