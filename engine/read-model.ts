import { randomBytes } from 'node:crypto';
import { WorkflowFailedError, WorkflowNotFoundError, type Client, type WorkflowExecutionDescription, type WorkflowHandle } from '@temporalio/client';
import { ApplicationFailure, defaultPayloadConverter } from '@temporalio/common';
import proto, { type temporal } from '@temporalio/proto';
import { progressQuery } from '../workflows/messages.js';
import { slotKeeperId, slotsQuery, type SlotKeeperView } from '../workflows/gang.js';
import type { RunPipelineInput, RunState, RunStatus, StageState, StageWaitState } from '../workflows/types.js';
import { runPipelineWorkflow, startScheduledPipelineWorkflow } from '../workflows/index.js';
import { PipelineNameKey, ResumedFromKey } from '../workflows/search-attributes.js';

/**
 * Why a running stage is not making progress, with live figures: waiting for its slots (the
 * queue's keeper is asked at read time, so capacity and position are current), or replicas
 * waiting at a round barrier for the replicas that have not arrived (from their heartbeats).
 */
export interface StageWaitView {
  reason: 'SLOTS' | 'BARRIER';
  /** When the wait began (slots: the request; barrier: the earliest waiting replica's arrival). */
  since: string;
  /** One line for people, with the figures below. */
  message: string;
  queue?: string;
  slotsNeeded?: number;
  /** Live capacity and free slots of the queue (null when its keeper did not answer). */
  capacity?: number | null;
  free?: number | null;
  /** 1-based place among the requests waiting on the queue (null when not in line, e.g. just granted). */
  position?: number | null;
  /** Requests in line on the queue, this one included. */
  queueLength?: number | null;
  /** Who holds the queue's slots now. */
  heldBy?: { runId: string; label: string | null; slots: number; since: string }[];
  /** Barrier: the round the replicas meet at, who waits and whom they wait for. */
  round?: number;
  waitingReplicas?: number[];
  waitingForReplicas?: number[];
  /** Barrier: replicas waited for whose activity no worker has picked up (scheduled, not started). */
  notStartedReplicas?: number[];
}

const { PendingActivityState } = proto.temporal.api.enums.v1;

/** The memo key of a run's trace id (set at start when the starting request was traced). */
export const TRACE_ID_MEMO = 'traceId';

/** A run as the API shows it: the workflow's own state merged with what Temporal knows. */
export interface RunView extends Omit<RunState, 'stages'> {
  id: string;
  runId: string;
  /** The OpenTelemetry trace the run belongs to (from its memo); absent when it was started untraced. */
  traceId?: string;
  stages: (Omit<StageState, 'wait'> & { progress?: unknown; currentAttempt?: number; wait?: StageWaitView })[];
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
  let desc: WorkflowExecutionDescription;
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
  const status: RunStatus = temporalStatus === 'RUNNING' ? base.status : (CLOSED[temporalStatus] ?? base.status);
  const view: RunView = {
    ...base,
    id,
    runId: desc.runId,
    status,
    startedAt: desc.startTime.toISOString(),
    ...(desc.closeTime ? { closedAt: desc.closeTime.toISOString() } : {}),
    ...(desc.typedSearchAttributes.get(ResumedFromKey) ? { resumedFrom: desc.typedSearchAttributes.get(ResumedFromKey) as string } : {}),
    ...(typeof desc.memo?.[TRACE_ID_MEMO] === 'string' ? { traceId: desc.memo[TRACE_ID_MEMO] } : {}),
    stages: base.stages.map(({ wait: _recorded, ...s }) => ({ ...s })),
  };
  if (status !== 'RUNNING' && status !== 'PAUSED') {
    for (const s of view.stages) if (s.status === 'RUNNING') s.status = 'CANCELLED';
  }
  // Live facts of running stages: attempt number and the last heartbeat (e.g. epoch metrics).
  const barriers = new Map<string, BarrierBeat[]>();
  /** Stage id → replicas whose activity no worker has picked up (scheduled, not started). */
  const unstarted = new Map<string, number[]>();
  for (const pa of desc.raw.pendingActivities ?? []) {
    const m = /^stage:([^#:]+)/.exec(pa.activityId ?? '');
    const st = m ? view.stages.find((s) => s.id === m[1]) : undefined;
    if (!st) continue;
    st.currentAttempt = pa.attempt ?? 1;
    const details = decodePayloads(pa.heartbeatDetails?.payloads);
    if (details.length && details[0] !== undefined && details[0] !== null) st.progress = details[0];
    if (pa.lastFailure?.message && !st.error) st.error = pa.lastFailure.message;
    const beat = barrierBeat(pa.activityId ?? '', details[0]);
    if (beat) barriers.set(st.id, [...(barriers.get(st.id) ?? []), beat]);
    const replica = /:replica-(\d+)$/.exec(pa.activityId ?? '');
    if (replica && pa.state === PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED)
      unstarted.set(st.id, [...(unstarted.get(st.id) ?? []), Number(replica[1])]);
  }
  // Only an open run waits; a closed one's last state may still carry a wait it never ended.
  if (status === 'RUNNING' || status === 'PAUSED') {
    await addSlotWaits(client, view, base.stages);
    for (const st of view.stages) {
      const beats = barriers.get(st.id);
      const barrier = !st.wait && st.status === 'RUNNING' && beats ? barrierWait(beats, unstarted.get(st.id) ?? []) : undefined;
      if (barrier) st.wait = barrier;
    }
  }
  return view;
}

/**
 * Stages waiting for slots get the keeper's live view of their queue: capacity, free slots, their
 * place in line and who holds the slots. One query per queue; a keeper that does not answer leaves
 * the figures null (the wait itself is still shown).
 */
async function addSlotWaits(client: Client, view: RunView, recorded: StageState[]): Promise<void> {
  const views = new Map<string, Promise<SlotKeeperView | undefined>>();
  for (const rec of recorded) {
    const w = rec.wait;
    const st = view.stages.find((s) => s.id === rec.id);
    if (w?.reason !== 'slots' || !st) continue;
    if (!views.has(w.queue))
      views.set(
        w.queue,
        client.workflow
          .getHandle(slotKeeperId(w.queue))
          .query(slotsQuery)
          .catch(() => undefined),
      );
    st.wait = slotWait(w, await views.get(w.queue)!);
  }
}

/** The wait of one slot request, with the keeper's view of its queue (undefined: the keeper did not answer). */
export function slotWait(w: StageWaitState, keeper: SlotKeeperView | undefined): StageWaitView {
  const base = { reason: 'SLOTS' as const, since: w.since, queue: w.queue, slotsNeeded: w.slotsNeeded };
  const asked = `waits for ${w.slotsNeeded} slot(s) on ${w.queue}`;
  if (!keeper)
    return { ...base, capacity: null, free: null, position: null, queueLength: null, heldBy: [], message: `${asked}; the queue's slot keeper did not answer` };
  const i = keeper.waiting.findIndex((r) => r.requestId === w.requestId);
  const heldBy = keeper.holders.map((h) => ({ runId: h.workflowId, label: h.label ?? null, slots: h.count, since: h.since }));
  const held = heldBy.length ? `; held by ${heldBy.map((h) => `${h.label ?? h.runId} (${h.slots})`).join(', ')}` : '';
  const granted = i < 0 && keeper.holders.some((h) => h.requestId === w.requestId);
  const place = i >= 0 ? `, position ${i + 1} of ${keeper.waiting.length} in line` : ', not in line yet';
  return {
    ...base,
    capacity: keeper.capacity,
    free: keeper.free,
    position: i >= 0 ? i + 1 : null,
    queueLength: keeper.waiting.length,
    heldBy,
    // Granted between the keeper's answer and the run noticing it: the stage starts at once.
    message: granted ? `${w.slotsNeeded} slot(s) on ${w.queue} granted; starting` : `${asked}: ${keeper.free} of ${keeper.capacity} free${place}${held}`,
  };
}

/**
 * What a replica reports while it waits at a round barrier: heartbeat details carrying
 * `barrier: { round, waitingFor: [replica indexes], since }` (multi-device fit sends them).
 */
interface BarrierBeat {
  replica: number;
  round: number;
  waitingFor: number[];
  since: string;
}

function barrierBeat(activityId: string, details: unknown): BarrierBeat | undefined {
  const m = /:replica-(\d+)$/.exec(activityId);
  const b = details && typeof details === 'object' ? (details as { barrier?: unknown }).barrier : undefined;
  if (!m || !b || typeof b !== 'object') return undefined;
  const { round, waitingFor, since } = b as Record<string, unknown>;
  if (typeof round !== 'number' || !Array.isArray(waitingFor) || !waitingFor.every((x) => Number.isInteger(x))) return undefined;
  return { replica: Number(m[1]), round, waitingFor: waitingFor as number[], since: typeof since === 'string' ? since : new Date().toISOString() };
}

/** Replicas at the latest barrier round: who waits, for whom, since the first arrived (undefined: nobody is missing, a stale beat). */
export function barrierWait(beats: BarrierBeat[], unstarted: number[] = []): StageWaitView | undefined {
  const round = Math.max(...beats.map((b) => b.round));
  const at = beats.filter((b) => b.round === round);
  const waiting = [...new Set(at.map((b) => b.replica))].sort((a, b) => a - b);
  const missing = [...new Set(at.flatMap((b) => b.waitingFor))].filter((r) => !waiting.includes(r)).sort((a, b) => a - b);
  if (!missing.length) return undefined;
  const notStarted = missing.filter((r) => unstarted.includes(r));
  const since = at.map((b) => b.since).sort()[0]!;
  const list = (xs: number[]) => xs.join(', ');
  return {
    reason: 'BARRIER',
    since,
    round,
    waitingReplicas: waiting,
    waitingForReplicas: missing,
    notStartedReplicas: notStarted,
    message: `replica${waiting.length > 1 ? 's' : ''} ${list(waiting)} wait${waiting.length > 1 ? '' : 's'} at round ${round} for replica${missing.length > 1 ? 's' : ''} ${list(missing)}${notStarted.length ? ` (not started: no worker has picked up replica ${list(notStarted)})` : ''}`,
  };
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
