// What a run tells the worker's metrics (pauses, budget pauses, slot waits, finished runs), through a
// Temporal sink: a sink call leaves the sandbox without a command, so histories replay unchanged,
// and it is not made again while a history replays (callDuringReplay: false), so nothing is
// counted twice when a worker rebuilds a run from its history. Workflow-safe (no I/O).
import { proxySinks, type Sinks } from '@temporalio/workflow';

/** The sink's name: every worker that runs workflows registers it (app/workers.ts), metrics on or off. */
export const METRICS_SINK = 'capstanMetrics';

export interface RunMetricsSink extends Sinks {
  [METRICS_SINK]: {
    /** A run paused on a stage: `code` is the failure's type (e.g. PLUGIN_FAILED, GANG_STALLED) or BUDGET_EXHAUSTED. */
    paused(pipeline: string, code: string): void;
    /** A run paused because its budget (or a stage's) has no room for the next attempt. */
    budgetPaused(pipeline: string): void;
    /** A stage waited this long for its gang's slots on a queue (granted, refused or given up). */
    slotWaited(queue: string, seconds: number): void;
    /** A run closed with this status (COMPLETED, FAILED, CANCELLED). */
    finished(pipeline: string, status: string): void;
  };
}

/** The pause code of a budget pause (capstan_stage_pauses_total{code}). */
export const BUDGET_PAUSE_CODE = 'BUDGET_EXHAUSTED';

/** The sink as workflow code calls it. */
export function runMetrics(): RunMetricsSink[typeof METRICS_SINK] {
  return proxySinks<RunMetricsSink>()[METRICS_SINK];
}
