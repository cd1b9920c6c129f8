// The Temporal SDK's log entries (its own lines, workflow `log` calls, activity lifecycle lines and,
// forwarded, the native core's) written by our logger: the same format as every other line, with
// the ids the SDK attaches mapped onto ours (a pipeline workflow's id is the run id).
import type { LogEntry } from '@temporalio/worker';
import type { ConsoleLogger, Level } from '../lib/logger.js';

/** The workflow type whose workflow id is a Capstan run id (workflows/run-pipeline.ts; never renamed while runs are in flight). */
const RUN_WORKFLOW_TYPE = 'runPipelineWorkflow';

const LEVELS: Record<string, Level> = { TRACE: 'debug', DEBUG: 'debug', INFO: 'info', WARN: 'warn', ERROR: 'error' };

/** A DefaultLogger log function: `Runtime.install({ logger: new DefaultLogger(level, sdkLogFunction(logger)) })`. */
export function sdkLogFunction(logger: ConsoleLogger): (entry: LogEntry) => void {
  return (entry) => {
    const level = LEVELS[entry.level] ?? 'info';
    logger.log(level, entry.message, sdkMeta(entry.meta ?? {}), new Date(Number(entry.timestampNanos / 1_000_000n)));
  };
}

/**
 * The SDK's attributes with its ids under our names: `run_id` for a pipeline workflow (or its
 * activities), `workflow_id` for any other workflow, Temporal's run id as `workflow_run_id`, and a
 * stage activity's stage (`stage:<id>…` ids). The task token (it can complete the activity) is dropped.
 */
export function sdkMeta(meta: Record<string, unknown>): Record<string, unknown> {
  const { workflowId, runId, workflowRunId, workflowType, activityId, attempt, taskToken: _secret, ...rest } = meta;
  const out: Record<string, unknown> = { ...rest };
  if (typeof workflowId === 'string') out[workflowType === RUN_WORKFLOW_TYPE ? 'run_id' : 'workflow_id'] = workflowId;
  if (workflowType !== undefined) out.workflowType = workflowType;
  const temporalRun = workflowRunId ?? runId;
  if (temporalRun !== undefined) out.workflow_run_id = temporalRun;
  if (typeof activityId === 'string') {
    out.activity_id = activityId;
    const stage = /^stage:([^#:]+)/.exec(activityId);
    if (stage && workflowType === RUN_WORKFLOW_TYPE) out.stage_id = stage[1];
  }
  if (attempt !== undefined) out.attempt = attempt;
  return out;
}
