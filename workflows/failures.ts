// How a stage's failure reads to the run (its message, type, attempts used, and the details an
// activity attached), and how the run ends on one. Pure: workflow-safe.
import { ActivityFailure, ApplicationFailure, TimeoutFailure } from '@temporalio/workflow';
import type { ResolvedStage } from './types.js';

/** A replica activity that was never picked up by a worker within its scheduleToStartTimeout. */
export function startTimedOut(err: unknown): boolean {
  const cause = err instanceof ActivityFailure ? err.cause : err;
  return cause instanceof TimeoutFailure && cause.timeoutType === 'SCHEDULE_TO_START';
}

/** Ends the run: caught by the workflow body (workflows/run-pipeline.ts), recorded in the state, and turned into the workflow's failure. */
export function failRun(message: string): Error {
  return new Error(message);
}

export interface FailureDetail {
  attempt?: number;
  /** The run's and the stage's spend after the attempt (runs with a budget). */
  spent?: { run: string; stage: string };
  /** BUDGET_EXCEEDED: the stage's last checkpoint, for the next round to resume from. */
  checkpoint?: unknown;
}

export function describeFailure(err: unknown, spec: ResolvedStage): { message: string; type?: string; attempts: number; detail?: FailureDetail } {
  let cause: unknown = err;
  if (err instanceof ActivityFailure) cause = err.cause ?? err;
  if (cause instanceof ApplicationFailure) {
    const detail = cause.details?.[0] as FailureDetail | undefined;
    return {
      message: cause.message,
      ...(cause.type ? { type: cause.type } : {}),
      attempts: typeof detail?.attempt === 'number' ? detail.attempt : cause.nonRetryable ? 1 : spec.retry.maximumAttempts,
      ...(detail && typeof detail === 'object' ? { detail } : {}),
    };
  }
  const message = cause instanceof Error ? cause.message : String(cause);
  // Timeouts and other server-side failures: every attempt was used.
  return { message, type: (cause as { name?: string })?.name ?? 'UNKNOWN', attempts: spec.retry.maximumAttempts };
}
