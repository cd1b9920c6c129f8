// The worker's own metrics (job="capstan-worker"): stage attempts, from the activity wrapper, and
// what runs report through their metrics sink (pauses, budget pauses, slot waits, finished runs).
// Names are a contract with the dashboards and alerts (docs/observability.md).
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export type AttemptOutcome = 'succeeded' | 'failed' | 'cancelled';

/** What the worker counts. `noWorkerMetrics` when metrics are off: every call is a no-op. */
export interface WorkerMetrics {
  /** One stage attempt ended (`attempt` is Temporal's attempt number: 2 and up are retries). */
  stageAttempt(a: { plugin: string; outcome: AttemptOutcome; seconds: number; attempt: number }): void;
  runPaused(pipeline: string, code: string): void;
  budgetPaused(pipeline: string): void;
  slotWaited(queue: string, seconds: number): void;
  runFinished(pipeline: string, status: string): void;
}

export const noWorkerMetrics: WorkerMetrics = {
  stageAttempt: () => undefined,
  runPaused: () => undefined,
  budgetPaused: () => undefined,
  slotWaited: () => undefined,
  runFinished: () => undefined,
};

/** Stage attempts last from a second to hours. */
const STAGE_BUCKETS = [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400];
/** Gangs wait from nothing to the hours a busy GPU queue may take. */
const WAIT_BUCKETS = [0.1, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200];

/** Registers the worker's metrics on `registry`; `roles` labels capstan_worker_up (e.g. "cpu,workflows"). */
export function createWorkerMetrics(registry: Registry, o: { roles: readonly string[] }): WorkerMetrics {
  const registers = [registry];
  const duration = new Histogram({
    name: 'capstan_stage_duration_seconds',
    help: 'Duration of each stage attempt, by plugin and outcome (succeeded, failed, cancelled).',
    labelNames: ['plugin', 'outcome'] as const,
    buckets: STAGE_BUCKETS,
    registers,
  });
  const attempts = new Counter({
    name: 'capstan_stage_attempts_total',
    help: 'Stage attempts that ended, by plugin and outcome.',
    labelNames: ['plugin', 'outcome'] as const,
    registers,
  });
  const retries = new Counter({
    name: 'capstan_stage_retries_total',
    help: 'Stage attempts after the first (Temporal retries), by plugin.',
    labelNames: ['plugin'] as const,
    registers,
  });
  const pauses = new Counter({
    name: 'capstan_stage_pauses_total',
    help: 'Runs paused on a stage, by pipeline and code (the failure type, or BUDGET_EXHAUSTED).',
    labelNames: ['pipeline', 'code'] as const,
    registers,
  });
  const budgetPauses = new Counter({
    name: 'capstan_budget_pauses_total',
    help: 'Runs paused because their budget had no room for the next attempt, by pipeline.',
    labelNames: ['pipeline'] as const,
    registers,
  });
  const waits = new Histogram({
    name: 'capstan_slot_wait_seconds',
    help: 'How long gangs waited for their slots, by task queue.',
    labelNames: ['queue'] as const,
    buckets: WAIT_BUCKETS,
    registers,
  });
  const finished = new Counter({
    name: 'capstan_runs_finished_total',
    help: 'Runs that closed, by pipeline and status, as the workflow saw it.',
    labelNames: ['pipeline', 'status'] as const,
    registers,
  });
  const up = new Gauge({
    name: 'capstan_worker_up',
    help: 'Always 1 while this worker serves metrics; roles: what it serves.',
    labelNames: ['roles'] as const,
    registers,
  });
  up.set({ roles: [...o.roles].sort().join(',') }, 1);
  return {
    stageAttempt({ plugin, outcome, seconds, attempt }) {
      duration.observe({ plugin, outcome }, seconds);
      attempts.inc({ plugin, outcome });
      if (attempt > 1) retries.inc({ plugin });
    },
    runPaused: (pipeline, code) => pauses.inc({ pipeline, code }),
    budgetPaused: (pipeline) => budgetPauses.inc({ pipeline }),
    slotWaited: (queue, seconds) => waits.observe({ queue }, Math.max(0, seconds)),
    runFinished: (pipeline, status) => finished.inc({ pipeline, status }),
  };
}
