import type { WorkflowHandle } from '@temporalio/client';
import proto from '@temporalio/proto';

const { temporal } = proto;
import { resolveSpec } from './spec.js';
import type { ArtifactStore } from '../lib/artifacts.js';
import { canonical } from '../lib/canonical.js';
import type { StageRegistry } from '../plugins/registry.js';
import type { ReusedStage, RunPipelineInput, StageOutcome } from '../workflows/types.js';
import { EngineError } from './errors.js';
import { decodePayloads, firstInput } from './read-model.js';

export interface ResumePlanStage {
  id: string;
  action: 'REUSE' | 'RERUN';
  reason: string;
}

export interface ResumePlan {
  from: string;
  startAt?: string;
  stages: ResumePlanStage[];
  reuse: Record<string, ReusedStage>;
  spec: unknown;
}

const EventType = temporal.api.enums.v1.EventType;

/**
 * Completed stage outcomes read from the run's history (no worker needed): the result of each
 * stage's last completed activity, plus stages that run itself reused.
 */
export async function completedStages(handle: WorkflowHandle, input: RunPipelineInput): Promise<Map<string, ReusedStage>> {
  const history = await handle.fetchHistory();
  const scheduled = new Map<string, string>();
  const done = new Map<string, ReusedStage>();
  for (const [id, r] of Object.entries(input.reuse ?? {})) done.set(id, r);
  for (const e of history.events ?? []) {
    if (e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) {
      scheduled.set(String(e.eventId), e.activityTaskScheduledEventAttributes?.activityId ?? '');
    } else if (e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED) {
      const a = e.activityTaskCompletedEventAttributes!;
      const activityId = scheduled.get(String(a.scheduledEventId)) ?? '';
      // stage:<id>, stage:<id>#<n> (operator retry), stage:<id>[#n]:try-<k> (a gang's later try),
      // stage:<id>[#n]:reduce — not the replicas.
      const m = /^stage:([^#:]+)(?:#\d+)?(?::try-\d+)?(:reduce)?$/.exec(activityId);
      if (!m) continue;
      const outcome = decodePayloads(a.result?.payloads)[0] as StageOutcome | undefined;
      if (outcome) done.set(m[1]!, { outputs: outcome.outputs, metrics: outcome.metrics, fromRun: handle.workflowId });
    }
  }
  return done;
}

/**
 * Plans a resume: reuse each completed stage before the start point whose plugin version and
 * params are unchanged and whose artifacts are present and pass their hash check; rerun the rest
 * (and everything that depends on a rerun stage).
 */
export async function planResume(opts: {
  handle: WorkflowHandle;
  registry: StageRegistry;
  artifacts: ArtifactStore;
  taskQueues: { cpu: string; gpu: string };
  fromStage?: string;
}): Promise<ResumePlan> {
  const old = await firstInput(opts.handle);
  if (!old) throw new EngineError('RESUME_IMPOSSIBLE', `run ${opts.handle.workflowId} has no readable input`);
  const fresh = resolveSpec(old.spec, opts.registry, { taskQueues: opts.taskQueues });
  if (opts.fromStage !== undefined && !fresh.stages.some((s) => s.id === opts.fromStage)) {
    throw new EngineError(
      'RESUME_IMPOSSIBLE',
      `stage "${opts.fromStage}" is not in pipeline ${fresh.pipeline}; stages: ${fresh.stages.map((s) => s.id).join(', ')}`,
    );
  }
  const completed = await completedStages(opts.handle, old);
  const oldById = new Map(old.stages.map((s) => [s.id, s]));
  const rerun = new Set<string>();
  const stages: ResumePlanStage[] = [];
  const reuse: Record<string, ReusedStage> = {};
  let startAt: string | undefined;
  let reachedStart = false;
  for (const s of fresh.stages) {
    if (opts.fromStage === s.id) reachedStart = true;
    const prev = oldById.get(s.id);
    const done = completed.get(s.id);
    let reason: string | undefined;
    if (reachedStart) reason = opts.fromStage === s.id ? 'resume starts here' : `comes after ${opts.fromStage}`;
    else if (!done) reason = 'did not complete in the earlier run';
    else if (s.needs.some((n) => rerun.has(n))) reason = `depends on ${s.needs.filter((n) => rerun.has(n)).join(', ')}, which reruns`;
    else if (!prev || prev.pluginVersion !== s.pluginVersion) reason = `plugin ${s.plugin} changed from ${prev?.pluginVersion ?? '?'} to ${s.pluginVersion}`;
    else if (JSON.stringify(canonical(prev.params)) !== JSON.stringify(canonical(s.params))) reason = 'params changed';
    else {
      for (const ref of Object.values(done.outputs)) {
        const v = await opts.artifacts.verify(ref);
        if (!v.ok) {
          reason = v.reason;
          break;
        }
      }
    }
    if (reason) {
      rerun.add(s.id);
      startAt ??= s.id;
      stages.push({ id: s.id, action: 'RERUN', reason });
    } else {
      reuse[s.id] = { ...done!, fromRun: done!.fromRun };
      stages.push({ id: s.id, action: 'REUSE', reason: `completed in ${done!.fromRun}; plugin, params and artifacts unchanged` });
    }
  }
  return { from: opts.handle.workflowId, ...(startAt ? { startAt } : {}), stages, reuse, spec: old.spec };
}
