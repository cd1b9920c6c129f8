import { randomBytes } from 'node:crypto';
import { WorkflowFailedError, WorkflowNotFoundError, type Client, type WorkflowHandle } from '@temporalio/client';
import { ApplicationFailure, defaultPayloadConverter } from '@temporalio/common';
import type { temporal } from '@temporalio/proto';
import { progressQuery } from '../workflows/messages.js';
import type { RunPipelineInput, RunState, RunStatus, StageState } from '../workflows/types.js';
import { runPipelineWorkflow, startScheduledPipelineWorkflow } from '../workflows/index.js';
import { PipelineNameKey, ResumedFromKey } from '../workflows/search-attributes.js';

/** A run as the API shows it: the workflow's own state merged with what Temporal knows. */
export interface RunView extends Omit<RunState, 'stages'> {
  id: string;
  runId: string;
  stages: (StageState & { progress?: unknown; currentAttempt?: number })[];
}

/** Workflow types that are Capstan runs: the pipeline, and a schedule's firing before it resolves its spec. */
export const RUN_WORKFLOW_TYPES: string[] = [runPipelineWorkflow.name, startScheduledPipelineWorkflow.name];

/** Whether an id has the shape of a Capstan run id (`pipeline/…`, printable, bounded). */
export function isRunId(id: string): boolean {
  return id.startsWith('pipeline/') && id.length <= 200 && /^[\x21-\x7e]+$/.test(id);
}

/** `pipeline/<name>/<5 chars>`: readable in the Temporal UI, unique enough per pipeline. */
export function newRunId(pipeline: string): string {
  const alphabet = '0123456789abcdefghijklmnopqrstuvwxyz';
  const id = [...randomBytes(5)].map((b) => alphabet[b % 36]).join('');
  return `pipeline/${pipeline}/${id}`;
}

const CLOSED: Record<string, RunStatus> = {
  COMPLETED: 'COMPLETED',
  FAILED: 'FAILED',
  CANCELLED: 'CANCELLED',
  TERMINATED: 'TERMINATED',
  TIMED_OUT: 'TIMED_OUT',
  CONTINUED_AS_NEW: 'COMPLETED',
};

/**
 * The read model of one run: describe, then the workflow's state from a query (running), its
 * result (completed), its failure details (failed) or its first history event (no worker yet).
 * Undefined if Temporal does not know the id.
 */
export async function readRun(client: Client, id: string): Promise<RunView | undefined> {
  // Only Capstan's own runs: other workflows in the namespace are not ours to show or change.
  if (!isRunId(id)) return undefined;
  const handle = client.workflow.getHandle(id);
  let desc;
  try {
    desc = await handle.describe();
  } catch (e) {
    if (e instanceof WorkflowNotFoundError) return undefined;
    throw e;
  }
  if (!RUN_WORKFLOW_TYPES.includes(desc.type)) return undefined;
  const temporalStatus = desc.status.name;
  let state: RunState | undefined;
  if (temporalStatus === 'RUNNING') state = await queryState(handle);
  else state = (await closedState(handle, temporalStatus)) ?? (await queryState(handle).catch(() => undefined));
  const input = state ? undefined : await firstInput(handle);
  const pipeline = (desc.typedSearchAttributes.get(PipelineNameKey) as string | undefined) ?? input?.pipeline ?? '?';
  const base: RunState = state ?? {
    pipeline,
    status: 'RUNNING',
    startedAt: desc.startTime.toISOString(),
    stages: (input?.stages ?? []).map((s) => ({ id: s.id, plugin: s.plugin, status: 'PENDING', attempts: 0, outputs: {}, metrics: {} })),
    pausedStages: [],
    events: [],
  };
  const status: RunStatus = temporalStatus === 'RUNNING' ? base.status : CLOSED[temporalStatus] ?? base.status;
  const view: RunView = {
    ...base,
    id,
    runId: desc.runId,
    status,
    startedAt: desc.startTime.toISOString(),
    ...(desc.closeTime ? { closedAt: desc.closeTime.toISOString() } : {}),
    ...(desc.typedSearchAttributes.get(ResumedFromKey) ? { resumedFrom: desc.typedSearchAttributes.get(ResumedFromKey) as string } : {}),
    stages: base.stages.map((s) => ({ ...s })),
  };
  if (status !== 'RUNNING' && status !== 'PAUSED') {
    for (const s of view.stages) if (s.status === 'RUNNING') s.status = 'CANCELLED';
  }
  // Live facts of running stages: attempt number and the last heartbeat (e.g. epoch metrics).
  for (const pa of desc.raw.pendingActivities ?? []) {
    const m = /^stage:([^#:]+)/.exec(pa.activityId ?? '');
    const st = m ? view.stages.find((s) => s.id === m[1]) : undefined;
    if (!st) continue;
    st.currentAttempt = pa.attempt ?? 1;
    const details = decodePayloads(pa.heartbeatDetails?.payloads);
    if (details.length && details[0] !== undefined && details[0] !== null) st.progress = details[0];
    if (pa.lastFailure?.message && !st.error) st.error = pa.lastFailure.message;
  }
  return view;
}

async function queryState(handle: WorkflowHandle): Promise<RunState | undefined> {
  try {
    return await handle.query(progressQuery);
  } catch {
    return undefined;
  }
}

async function closedState(handle: WorkflowHandle, status: string): Promise<RunState | undefined> {
  if (status === 'COMPLETED') return (await handle.result()) as RunState;
  if (status === 'FAILED') {
    try {
      await handle.result();
    } catch (e) {
      if (e instanceof WorkflowFailedError && e.cause instanceof ApplicationFailure) {
        const d = e.cause.details?.[0] as RunState | undefined;
        if (d && Array.isArray(d.stages)) return d;
      }
    }
  }
  return undefined;
}

/** The workflow's input, read from the first history event (works without a worker). */
export async function firstInput(handle: WorkflowHandle): Promise<RunPipelineInput | undefined> {
  const history = await handle.fetchHistory();
  const started = history.events?.[0]?.workflowExecutionStartedEventAttributes;
  const args = decodePayloads(started?.input?.payloads);
  return args[0] as RunPipelineInput | undefined;
}

export function decodePayloads(payloads: temporal.api.common.v1.IPayload[] | null | undefined): unknown[] {
  return (payloads ?? []).map((p) => defaultPayloadConverter.fromPayload(p as never));
}

