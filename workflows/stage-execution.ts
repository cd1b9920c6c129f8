// One round of a stage as activities: a single `runStage`, or replicas fanned out and reduced, and
// for gang stages (runs with PATCH_GANG_SLOTS) the same inside a grant of slots from the queue's
// slot keeper. One fan-out (`replicas`) and one reduce (`reduce`) serve both. Workflow-safe.
import type { ActivityOptions } from '@temporalio/common';
import {
  ApplicationFailure,
  CancellationScope,
  condition,
  getExternalWorkflowHandle,
  isCancellation,
  patched,
  proxyActivities,
  workflowInfo,
} from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { startTimedOut } from './failures.js';
import { acquireSlotsSignal, releaseSlotsSignal, slotKeeperId, takesGangSlots } from './gang.js';
import { PATCH_GANG_REQUEUE, PATCH_GANG_SLOTS } from './patches.js';
import type { PipelineRun } from './pipeline-run.js';
import type { ArtifactRef, GangSettings, ResolvedStage, RunStageInput, StageOutcome } from './types.js';

type Options = Omit<ActivityOptions, 'activityId' | 'summary'>;
type Common = Omit<RunStageInput, 'replica'>;

/** Runs one round of the stage (round > 0: an operator's retry, under activity ids of its own). */
export async function executeStage(
  run: PipelineRun,
  spec: ResolvedStage,
  inputs: Record<string, ArtifactRef>,
  round: number,
  checkpoint?: unknown,
): Promise<StageOutcome> {
  const base: Options = {
    taskQueue: spec.taskQueue,
    startToCloseTimeout: spec.startToCloseMs,
    heartbeatTimeout: spec.heartbeatMs,
    retry: {
      maximumAttempts: spec.retry.maximumAttempts,
      initialInterval: spec.retry.initialIntervalMs,
      backoffCoefficient: spec.retry.backoffCoefficient,
      maximumInterval: spec.retry.maximumIntervalMs,
      nonRetryableErrorTypes: spec.retry.nonRetryableErrorTypes,
    },
    cancellationType: 'WAIT_CANCELLATION_COMPLETED' as const,
  };
  const suffix = round > 0 ? `#${round}` : '';
  const startedBy = run.actsAs(spec.id);
  const startedAt = run.stage(spec.id).startedAt;
  const common: Common = {
    runId: workflowInfo().workflowId,
    pipeline: run.input.pipeline,
    stage: spec,
    inputs,
    ...(startedBy ? { startedBy } : {}),
    // Only the activities' input grows (no new command): older histories replay unchanged (ADR 0007).
    ...(startedAt ? { stageStartedAt: startedAt } : {}),
    ...(run.budget ? { budget: run.budget.forAttempt(spec.id) } : {}),
    ...(checkpoint !== undefined ? { checkpoint } : {}),
  };
  if (takesGangSlots(spec) && patched(PATCH_GANG_SLOTS)) return executeAsGang(run, spec, common, base, suffix);
  const id = `stage:${spec.id}${suffix}`;
  if (spec.replicas <= 1) return single(spec, base, id).runStage(common);
  return reduce(spec, common, base, suffix, await Promise.all(replicas(spec, common, base, id)));
}

/** The stage's activities when it runs as one: `runStage` under `activityId`. */
function single(spec: ResolvedStage, base: Options, activityId: string) {
  return proxyActivities<Activities>({ ...base, activityId, summary: `${spec.id}: ${spec.plugin}@${spec.pluginVersion}` });
}

/** The fan-out: replica i of the stage's n as activity `<id>:replica-<i>`, all started at once. */
function replicas(spec: ResolvedStage, common: Common, options: Options, id: string): Promise<StageOutcome>[] {
  return Array.from({ length: spec.replicas }, (_, i) =>
    proxyActivities<Activities>({
      ...options,
      activityId: `${id}:replica-${i}`,
      summary: `${spec.id}: ${spec.plugin} replica ${i + 1}/${spec.replicas}`,
    }).runStage({ ...common, replica: { index: i, count: spec.replicas } }),
  );
}

/** The reduce: the replicas' results into the stage's outcome (attempts: the most any replica used). */
async function reduce(spec: ResolvedStage, common: Common, base: Options, suffix: string, results: StageOutcome[]): Promise<StageOutcome> {
  const acts = proxyActivities<Activities>({ ...base, activityId: `stage:${spec.id}${suffix}:reduce`, summary: `${spec.id}: ${spec.plugin} reduce` });
  const out = await acts.reduceStage({ ...common, replicaResults: results });
  return { ...out, attempt: Math.max(out.attempt, ...results.map((r) => r.attempt)) };
}

/**
 * A stage that takes its slots from the queue's keeper: ask for all of them at once (FIFO),
 * wait for the grant without holding anything, run, and give them back — also when the stage
 * fails or the run is cancelled. Replicas run in one cancellation scope: when one fails for good
 * its siblings are cancelled (their processes stop) before the failure is reported.
 *
 * Runs with PATCH_GANG_REQUEUE also give their slots back and ask again when the keeper revokes
 * them (live capacity fell below what is held) or when a replica does not start within
 * `gang.replicaStartTimeoutMs` (its siblings would wait for it at the barrier forever); after
 * `gang.requeues` such tries the stage fails with GANG_STALLED and the run pauses saying why.
 */
async function executeAsGang(run: PipelineRun, spec: ResolvedStage, common: Common, base: Options, suffix: string): Promise<StageOutcome> {
  const requeueing = patched(PATCH_GANG_REQUEUE);
  const settings: GangSettings = { replicaStartTimeoutMs: 120_000, requeues: 2, ...run.input.gang };
  let lastGiveBack: string | undefined;
  for (let tryNo = 0; ; tryNo++) {
    const ran = await gangTry(run, spec, common, base, suffix, requeueing ? { tryNo, settings, ...(lastGiveBack ? { after: lastGiveBack } : {}) } : undefined);
    if ('outcome' in ran) return ran.outcome;
    lastGiveBack = ran.giveBack;
    if (tryNo >= settings.requeues) {
      throw ApplicationFailure.create({
        message: `stage ${spec.id}: ${ran.giveBack}; gave its slots back ${tryNo + 1} time(s) and stops here (CAPSTAN_GANG_REQUEUES=${settings.requeues})`,
        type: 'GANG_STALLED',
        nonRetryable: true,
        details: [{ attempt: 0 }],
      });
    }
    run.event('STAGE_REQUEUED', spec.id, `${ran.giveBack}; slots given back, asking again (${tryNo + 1} of ${settings.requeues})`);
  }
}

/**
 * One try of a gang stage: ask, wait for the grant, run, release. `requeue` (runs with
 * PATCH_GANG_REQUEUE) makes a revocation or a replica that cannot start end the try with the
 * reason instead of holding on; without it the try is the plain gang of PATCH_GANG_SLOTS.
 */
async function gangTry(
  run: PipelineRun,
  spec: ResolvedStage,
  common: Common,
  base: Options,
  suffix: string,
  requeue: { tryNo: number; settings: GangSettings; after?: string } | undefined,
): Promise<{ outcome: StageOutcome } | { giveBack: string }> {
  const st = run.stage(spec.id);
  // Each try asks under its own id and names its activities apart (stage:<id>[#n]:try-<k>[:replica-<i>]).
  const tag = requeue && requeue.tryNo > 0 ? `:try-${requeue.tryNo}` : '';
  const requestId = `${workflowInfo().runId}/stage:${spec.id}${suffix}${tag}`;
  const keeper = getExternalWorkflowHandle(slotKeeperId(spec.taskQueue));
  let asked = false;
  /** The try's replicas have settled (or it ended otherwise): a revocation no longer applies. */
  let over = false;
  try {
    try {
      await keeper.signal(acquireSlotsSignal, {
        requestId,
        workflowId: workflowInfo().workflowId,
        count: spec.replicas,
        label: `${run.input.pipeline}/${spec.id}`,
      });
      asked = true;
    } catch (err) {
      if (isCancellation(err)) throw err;
      if (spec.replicas > 1) {
        throw ApplicationFailure.create({
          message: `stage ${spec.id}: no worker has reported slots for task queue ${spec.taskQueue}; its ${spec.replicas} replicas need ${spec.replicas} slots at once`,
          type: 'GANG_NO_CAPACITY',
          nonRetryable: true,
          details: [{ attempt: 0 }],
        });
      }
    }
    if (asked) {
      run.startWait(st, { reason: 'slots', queue: spec.taskQueue, slotsNeeded: spec.replicas, since: new Date().toISOString(), requestId });
      await condition(() => run.slotAnswers.has(requestId));
      const answer = run.slotAnswers.get(requestId)!;
      run.endWait(st, answer.granted ? `got ${spec.replicas} slot(s) on ${spec.taskQueue}` : `refused: ${answer.reason}`);
      run.slotAnswers.delete(requestId);
      if (!answer.granted) {
        asked = false;
        const after = requeue?.after ? ` (after ${requeue.after})` : '';
        throw ApplicationFailure.create({
          message: `stage ${spec.id}: ${answer.reason}${after}`,
          type: 'GANG_CAPACITY',
          nonRetryable: true,
          details: [{ attempt: 0 }],
        });
      }
    }
    // Replicas of this try, in one scope: cancelled together when one fails for good, when the
    // keeper revokes the slots, or when one cannot start.
    const scope = new CancellationScope();
    let failed: { err: unknown } | undefined;
    let giveBack: string | undefined;
    if (requeue && asked) {
      condition(() => over || run.revocations.has(requestId))
        .then(() => {
          if (over || failed || giveBack) return;
          giveBack = `its slots were revoked: ${run.revocations.get(requestId)}`;
          scope.cancel();
        })
        .catch(() => undefined);
    }
    const onReplicaError = (i: number) => (err: unknown) => {
      if (!failed && !giveBack && !isCancellation(err)) {
        if (requeue && startTimedOut(err)) {
          giveBack = `replica ${i + 1}/${spec.replicas} did not start within ${Math.round(requeue.settings.replicaStartTimeoutMs / 1000)} s of its gang's grant (no free worker slot on ${spec.taskQueue})`;
        } else failed = { err };
        scope.cancel(); // the siblings can never meet this replica again
      }
      throw err;
    };
    const id = `stage:${spec.id}${suffix}${tag}`;
    if (spec.replicas <= 1) {
      const acts = single(spec, base, id);
      if (!requeue) return { outcome: await acts.runStage(common) };
      try {
        return { outcome: await scope.run(() => acts.runStage(common)) };
      } catch (err) {
        if (giveBack && isCancellation(err)) return { giveBack };
        throw err;
      } finally {
        over = true;
      }
    }
    const options = { ...base, ...(requeue ? { scheduleToStartTimeout: requeue.settings.replicaStartTimeoutMs } : {}) };
    const settled = await scope.run(() => Promise.allSettled(replicas(spec, common, options, id).map((p, i) => p.catch(onReplicaError(i)))));
    over = true;
    if (failed) throw failed.err;
    if (giveBack) return { giveBack };
    const rejected = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (rejected) throw rejected.reason;
    return {
      outcome: await reduce(
        spec,
        common,
        base,
        suffix,
        settled.map((r) => (r as PromiseFulfilledResult<StageOutcome>).value),
      ),
    };
  } finally {
    over = true;
    run.endWait(st, 'stopped waiting (cancelled)');
    if (asked) await CancellationScope.nonCancellable(() => keeper.signal(releaseSlotsSignal, { requestId }).catch(() => undefined));
  }
}
