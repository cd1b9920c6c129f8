import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  condition,
  isCancellation,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  allHandlersFinished,
  getExternalWorkflowHandle,
  patched,
  TimeoutFailure,
  workflowInfo,
} from '@temporalio/workflow';
import type { ActivityOptions } from '@temporalio/common';
import { trace, TraceFlags } from '@opentelemetry/api';
import type { Activities } from '../activities/index.js';
import { formatMoneyExact, parseMoney } from '../ledger/money.js';
import {
  acquireSlotsSignal,
  releaseSlotsSignal,
  slotKeeperId,
  slotsDeniedSignal,
  slotsGrantedSignal,
  slotsPingSignal,
  slotsRevokedSignal,
  takesGangSlots,
} from './gang.js';
import { decideUpdate, progressQuery } from './messages.js';
import { BUDGET_PAUSE_CODE, runMetrics } from './metrics-sink.js';
import { initialRunState, markReused } from './run-state.js';
import { CurrentStageKey, RunStatusKey } from './search-attributes.js';
import type {
  ArtifactRef,
  BudgetState,
  Decision,
  GangSettings,
  ResolvedStage,
  RunEventType,
  RunStageInput,
  RunPipelineInput,
  RunStarter,
  RunState,
  RunStatus,
  StageOutcome,
  StageState,
  StageWaitState,
} from './types.js';

/** Runs started from here on cap the CapstanStage search attribute (older histories replay without it). */
const PATCH_STAGE_ATTRIBUTE_LIMIT = 'capstan-stage-attribute-limit';
const STAGE_ATTRIBUTE_MAX = 255;
/**
 * Runs started from here on reserve their slots as a gang from the queue's slot keeper before a
 * data-parallel (or gpu) stage, cancel a failed replica's siblings, and release the slots after
 * (docs/adr/0008-gang-scheduling.md). Older histories replay the plain fan-out.
 */
const PATCH_GANG_SLOTS = 'capstan-gang-slots';
/**
 * Runs started from here on give a gang's slots back and ask again when the keeper revokes them or
 * a replica cannot start (scheduleToStartTimeout on replicas; tries named `:try-<k>`), and pause
 * with GANG_STALLED after a bounded number of tries (docs/adr/0008-gang-scheduling.md).
 */
const PATCH_GANG_REQUEUE = 'capstan-gang-requeue';
/**
 * Runs started from here on set the CapstanStage search attribute when a stage starts (and clear
 * it when the run closes), not also when a stage ends: one upsert per stage instead of two, which
 * shortens the stage gap. Between a stage's end and the next start it may still name the stage
 * that just ended.
 */
const PATCH_STAGE_ATTRIBUTE_ON_START = 'capstan-stage-attribute-on-start';
/**
 * Runs started from here on reserve a stage's estimate out of the run's budget while it runs, so
 * stages running side by side cannot pass the budget together: a stage starts only if its
 * estimate fits in what is left after what was spent and what the running stages reserved, and a
 * stage paused only for reservations looks again when one is released. Older histories replay
 * without reservations.
 */
const PATCH_BUDGET_RESERVE = 'capstan-budget-reserve';
/** Names, in a budget pause's reason, the running stages whose reservations hold the budget. */
const RESERVED_BY = 'reserved by running stage';

/**
 * The trace id of this workflow's span (Temporal's OpenTelemetry workflow interceptor makes it the
 * active span around the workflow function when the worker traces); nothing otherwise. Read into
 * state only: no command, and ids made in the sandbox are the same on every replay.
 */
function workflowTraceId(): string | undefined {
  const sc = trace.getActiveSpan()?.spanContext();
  return sc && trace.isSpanContextValid(sc) && (sc.traceFlags & TraceFlags.SAMPLED) !== 0 ? sc.traceId : undefined;
}

/**
 * Runs a pipeline: stages in dependency order (independent stages at the same time), each as
 * an activity on its plugin's task queue. A stage that has used up its retries pauses the run
 * for an operator decision (retry with optional new params, skip, abort) unless the spec says
 * `onFailure: fail`. Only references and small metrics pass through here.
 */
export async function runPipelineWorkflow(input: RunPipelineInput): Promise<RunState> {
  const now = () => new Date().toISOString();
  const state: RunState = initialRunState(input, now(), workflowTraceId());
  const budget = state.budget;
  /** The worker's metrics (a sink: no command, not called on replay). */
  const metrics = runMetrics();
  /** Bumped by every budget raise: stages paused on their budget look again. */
  let budgetVersion = 0;
  /** Estimates reserved out of the run's budget by the stages running now (stage id → micros). */
  const reserved = new Map<string, bigint>();
  /** Bumped when a reservation is released: stages paused for reservations look again. */
  let reservedVersion = 0;
  const byId = new Map(state.stages.map((s) => [s.id, s]));
  const decisions = new Map<string, Exclude<Decision, { action: 'raise-budget' }>>();
  /**
   * Stage id → who its next round acts as: the principal of the retry decision that reran it, so
   * an operator's retry of an admin's stage runs with the operator's rights. Only the activity's
   * input changes (no new command), and histories without `by` run as before (ADR 0007).
   */
  const actingAs = new Map<string, RunStarter>();
  /**
   * Who stages that start from now on act as: the starter, until a retry changes what the run
   * computes (new params or plugin version). From then on the later stages, built on the decider's
   * choice, act as the decider too, so an operator's new params upstream cannot reach an admin's
   * deploy stage with the admin's rights. An admin's decision does not raise a run that is not an
   * admin's (only the stage the admin reran acts as the admin).
   */
  let laterStagesActAs: RunStarter | undefined = input.startedBy;
  let abortReason: string | undefined;

  const event = (type: RunEventType, stageId?: string, message?: string) => {
    state.events.push({ seq: state.events.length + 1, at: now(), type, ...(stageId ? { stageId } : {}), ...(message ? { message } : {}) });
  };
  /**
   * A stage starts waiting for its slots: recorded on the stage (the API adds the keeper's live
   * facts) and as an event. State and events only, no command: older histories replay unchanged.
   */
  const startWait = (st: StageState, wait: StageWaitState) => {
    st.waitingFor = `${wait.slotsNeeded} slot(s) on ${wait.queue}`;
    st.wait = wait;
    event('STAGE_WAITING', st.id, `waits for ${wait.slotsNeeded} slot(s) on ${wait.queue}`);
    refreshDetails();
  };
  /** The wait ends (granted, refused, or given up): the event says how and after how long. No-op when not waiting. */
  const endWait = (st: StageState, outcome: string) => {
    const wait = st.wait;
    delete st.waitingFor;
    if (!wait) return;
    delete st.wait;
    const seconds = (Date.parse(now()) - Date.parse(wait.since)) / 1000;
    metrics.slotWaited(wait.queue, seconds);
    event('STAGE_WAIT_ENDED', st.id, `${outcome} after ${seconds.toFixed(1)} s`);
    refreshDetails();
  };
  const setStatus = (status: RunStatus) => {
    state.status = status;
    upsertSearchAttributes([{ key: RunStatusKey, value: status }]);
    refreshDetails();
  };
  const refreshDetails = () => {
    const lines = state.stages.map((s) => `| ${s.id} | \`${s.plugin}\` | ${s.status}${s.waitingFor ? ` (waiting for ${s.waitingFor})` : ''} | ${s.attempts} |`);
    setCurrentDetails(
      [`**${state.pipeline}** — ${state.status}`, '', '| stage | plugin | status | attempts |', '| --- | --- | --- | --- |', ...lines].join('\n'),
    );
  };

  setHandler(progressQuery, () => state);
  setHandler(
    decideUpdate,
    (d) => {
      if (d.action === 'raise-budget') {
        raiseBudget(state.budget!, d, now());
        budgetVersion++;
        event(
          'BUDGET_RAISED',
          d.stageId,
          `${d.stageId ? `stage ${d.stageId}` : 'run'} budget raised to ${d.max} ${state.budget!.currency}${d.by ? ` by ${d.by}` : ''}`,
        );
        return state;
      }
      decisions.set(d.action === 'abort' ? '*' : d.stageId, d);
      return state;
    },
    { validator: (d) => validateDecision(d, state, input.stages) },
  );

  // Answers from the slot keepers (signals add no commands, so older histories replay unchanged).
  const slotAnswers = new Map<string, { granted: true } | { granted: false; reason: string }>();
  setHandler(slotsGrantedSignal, ({ requestId }) => void slotAnswers.set(requestId, { granted: true }));
  setHandler(slotsDeniedSignal, ({ requestId, reason }) => void slotAnswers.set(requestId, { granted: false, reason }));
  setHandler(slotsPingSignal, () => undefined);
  /** Request id → why the keeper took its slots back (acted on by runs with PATCH_GANG_REQUEUE). */
  const revocations = new Map<string, string>();
  setHandler(slotsRevokedSignal, ({ requestId, reason }) => void revocations.set(requestId, reason));

  event('RUN_STARTED', undefined, input.resumedFrom ? `resumed from ${input.resumedFrom}` : undefined);
  refreshDetails();

  const running = new Set<string>();
  const markCurrent = () => {
    let cur = [...running].join(',');
    // Keyword values are bounded by Temporal (and indexed by SQL visibility): keep it short.
    if (patched(PATCH_STAGE_ATTRIBUTE_LIMIT) && cur.length > STAGE_ATTRIBUTE_MAX) cur = `${cur.slice(0, STAGE_ATTRIBUTE_MAX - 1)}…`;
    upsertSearchAttributes([{ key: CurrentStageKey, value: cur || null }]);
  };

  /** A closed run names no current stage (runs that set it only at stage starts; older runs cleared it as stages ended). */
  const clearCurrent = () => {
    if (patched(PATCH_STAGE_ATTRIBUTE_ON_START)) upsertSearchAttributes([{ key: CurrentStageKey, value: null }]);
  };

  /** Runs one stage until it succeeds, is skipped, or the run is aborted. */
  const runStage = async (spec: ResolvedStage): Promise<void> => {
    const st = byId.get(spec.id)!;
    const reused = input.reuse?.[spec.id];
    if (reused) {
      markReused(st, reused);
      event('STAGE_REUSED', spec.id, `outputs reused from ${reused.fromRun}`);
      refreshDetails();
      return;
    }
    let params = spec.params;
    let pluginVersion = spec.pluginVersion;
    let checkpoint: unknown;
    for (let round = 0; ; round++) {
      if (abortReason !== undefined) return;
      // A budgeted run looks before the stage starts: a stage whose estimate would break what is
      // left (or a budget already spent) pauses the run until an operator raises it or aborts.
      for (let why = budget && budgetBlock(spec.id); why; why = budget && budgetBlock(spec.id)) {
        if ((await budgetPause(spec, why)) === 'skipped') return;
        if (abortReason !== undefined) return;
      }
      if (budget) reserve(spec.id);
      const stageInputs = Object.fromEntries(Object.entries(spec.inputs).map(([kind, from]) => [kind, byId.get(from)!.outputs[kind]!]));
      st.status = 'RUNNING';
      st.startedAt = now();
      delete st.closedAt;
      delete st.error;
      delete st.errorType;
      running.add(spec.id);
      markCurrent();
      event(
        'STAGE_STARTED',
        spec.id,
        round > 0 ? `operator retry ${round}${actingAs.has(spec.id) ? ` as ${actingAs.get(spec.id)!.name} (${actingAs.get(spec.id)!.role})` : ''}` : undefined,
      );
      refreshDetails();
      try {
        const outcome = await execute({ ...spec, params, pluginVersion }, stageInputs, round, checkpoint);
        noteSpend(spec.id, outcome.spent);
        release(spec.id);
        st.attempts += outcome.attempt;
        st.outputs = outcome.outputs;
        st.metrics = outcome.metrics;
        st.status = 'SUCCEEDED';
        st.closedAt = now();
        if (typeof outcome.metrics.tfBackend === 'string') state.tfBackend = outcome.metrics.tfBackend;
        event('STAGE_SUCCEEDED', spec.id);
        return;
      } catch (err) {
        st.closedAt = now();
        if (isCancellation(err)) {
          st.status = 'CANCELLED';
          throw err;
        }
        const { message, type, attempts, detail } = describeFailure(err, spec);
        st.attempts += attempts;
        st.status = 'FAILED';
        st.error = message;
        if (type) st.errorType = type;
        event('STAGE_FAILED', spec.id, message);
        if (budget) noteSpend(spec.id, detail?.spent);
        // Its real spend replaces its reservation, also while it waits on a decision.
        release(spec.id);
        if (budget && type === 'BUDGET_EXCEEDED') {
          // Stopped at a checkpoint for its budget: the next round resumes from that checkpoint (a
          // replicated stage's replicas each have their own, so its next round starts afresh).
          checkpoint = spec.replicas > 1 ? undefined : detail?.checkpoint;
          if ((await budgetPause(spec, message)) === 'skipped') return;
          if (abortReason !== undefined) return;
          continue;
        }
        if (input.onFailure.action === 'fail') throw failRun(`stage ${spec.id} failed: ${message}`);
        // Pause for an operator decision.
        state.pausedStages.push(spec.id);
        setStatus('PAUSED');
        event('RUN_PAUSED', spec.id, `waiting for a decision on stage ${spec.id}`);
        metrics.paused(input.pipeline, type ?? 'UNKNOWN');
        const decided = await condition(() => decisions.has(spec.id) || decisions.has('*'), input.onFailure.timeoutMs);
        state.pausedStages = state.pausedStages.filter((s) => s !== spec.id);
        if (!decided) {
          abortReason = `no decision within ${Math.round(input.onFailure.timeoutMs / 1000)}s on stage ${spec.id}`;
          throw failRun(`run paused on stage ${spec.id} and timed out waiting for a decision`);
        }
        const d = decisions.get(spec.id) ?? decisions.get('*')!;
        decisions.delete(spec.id);
        if (d.action === 'abort') {
          abortReason = d.reason;
          throw failRun(`aborted by ${d.by ? d.by.name : 'operator'}: ${d.reason}`);
        }
        if (state.pausedStages.length === 0) setStatus('RUNNING');
        let later = '';
        if (d.action === 'retry' && d.by) {
          actingAs.set(spec.id, d.by);
          const changes = d.params !== undefined || d.pluginVersion !== undefined;
          if (changes && !sameStarter(d.by, laterStagesActAs) && !(d.by.role === 'admin' && laterStagesActAs?.role !== 'admin')) {
            laterStagesActAs = d.by;
            later = `; stages that start from here on act as ${d.by.name} (${d.by.role})`;
          }
        }
        event('RUN_RESUMED', spec.id, `${d.action === 'skip' ? `stage ${spec.id} skipped` : `stage ${spec.id} retried`}${byText(d.by)}${later}`);
        if (d.action === 'skip') {
          st.status = 'SKIPPED';
          event('STAGE_SKIPPED', spec.id);
          return;
        }
        if (d.params !== undefined) {
          params = d.params;
          st.paramsOverride = d.params;
        }
        // Only the activity's input changes (no new command), so no patch is needed (ADR 0007).
        if (d.pluginVersion !== undefined) {
          pluginVersion = d.pluginVersion;
          st.pluginVersionOverride = d.pluginVersion;
        }
      } finally {
        release(spec.id); // cancelled or aborted
        running.delete(spec.id);
        if (!patched(PATCH_STAGE_ATTRIBUTE_ON_START)) markCurrent();
        refreshDetails();
      }
    }
  };

  const execute = async (spec: ResolvedStage, inputs: Record<string, ArtifactRef>, round: number, checkpoint?: unknown): Promise<StageOutcome> => {
    const base = {
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
    const runId = workflowInfo().workflowId;
    const startedBy = actingAs.get(spec.id) ?? laterStagesActAs;
    const common = {
      runId,
      pipeline: input.pipeline,
      stage: spec,
      inputs,
      ...(startedBy ? { startedBy } : {}),
      // Only the activities' input grows (no new command): older histories replay unchanged (ADR 0007).
      ...(byId.get(spec.id)?.startedAt ? { stageStartedAt: byId.get(spec.id)!.startedAt } : {}),
      ...(budget ? { budget: attemptBudget(spec.id) } : {}),
      ...(checkpoint !== undefined ? { checkpoint } : {}),
    };
    if (takesGangSlots(spec) && patched(PATCH_GANG_SLOTS)) return executeAsGang(spec, common, base, suffix);
    if (spec.replicas <= 1) {
      const acts = proxyActivities<Activities>({
        ...base,
        activityId: `stage:${spec.id}${suffix}`,
        summary: `${spec.id}: ${spec.plugin}@${spec.pluginVersion}`,
      });
      return acts.runStage(common);
    }
    const replicaResults = await Promise.all(
      Array.from({ length: spec.replicas }, (_, i) =>
        proxyActivities<Activities>({
          ...base,
          activityId: `stage:${spec.id}${suffix}:replica-${i}`,
          summary: `${spec.id}: ${spec.plugin} replica ${i + 1}/${spec.replicas}`,
        }).runStage({ ...common, replica: { index: i, count: spec.replicas } }),
      ),
    );
    const reduce = proxyActivities<Activities>({ ...base, activityId: `stage:${spec.id}${suffix}:reduce`, summary: `${spec.id}: ${spec.plugin} reduce` });
    const out = await reduce.reduceStage({ ...common, replicaResults });
    return { ...out, attempt: Math.max(out.attempt, ...replicaResults.map((r) => r.attempt)) };
  };

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
  const executeAsGang = async (
    spec: ResolvedStage,
    common: Omit<RunStageInput, 'replica'>,
    base: Omit<ActivityOptions, 'activityId' | 'summary'>,
    suffix: string,
  ): Promise<StageOutcome> => {
    const requeueing = patched(PATCH_GANG_REQUEUE);
    const settings: GangSettings = { replicaStartTimeoutMs: 120_000, requeues: 2, ...input.gang };
    let lastGiveBack: string | undefined;
    for (let tryNo = 0; ; tryNo++) {
      const ran = await gangTry(spec, common, base, suffix, requeueing ? { tryNo, settings, ...(lastGiveBack ? { after: lastGiveBack } : {}) } : undefined);
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
      event('STAGE_REQUEUED', spec.id, `${ran.giveBack}; slots given back, asking again (${tryNo + 1} of ${settings.requeues})`);
    }
  };

  /**
   * One try of a gang stage: ask, wait for the grant, run, release. `requeue` (runs with
   * PATCH_GANG_REQUEUE) makes a revocation or a replica that cannot start end the try with the
   * reason instead of holding on; without it the try is the plain gang of PATCH_GANG_SLOTS.
   */
  const gangTry = async (
    spec: ResolvedStage,
    common: Omit<RunStageInput, 'replica'>,
    base: Omit<ActivityOptions, 'activityId' | 'summary'>,
    suffix: string,
    requeue: { tryNo: number; settings: GangSettings; after?: string } | undefined,
  ): Promise<{ outcome: StageOutcome } | { giveBack: string }> => {
    const st = byId.get(spec.id)!;
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
          label: `${input.pipeline}/${spec.id}`,
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
        startWait(st, { reason: 'slots', queue: spec.taskQueue, slotsNeeded: spec.replicas, since: now(), requestId });
        await condition(() => slotAnswers.has(requestId));
        const answer = slotAnswers.get(requestId)!;
        endWait(st, answer.granted ? `got ${spec.replicas} slot(s) on ${spec.taskQueue}` : `refused: ${answer.reason}`);
        slotAnswers.delete(requestId);
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
        condition(() => over || revocations.has(requestId))
          .then(() => {
            if (over || failed || giveBack) return;
            giveBack = `its slots were revoked: ${revocations.get(requestId)}`;
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
      if (spec.replicas <= 1) {
        const acts = proxyActivities<Activities>({
          ...base,
          activityId: `stage:${spec.id}${suffix}${tag}`,
          summary: `${spec.id}: ${spec.plugin}@${spec.pluginVersion}`,
        });
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
      const settled = await scope.run(() =>
        Promise.allSettled(
          Array.from({ length: spec.replicas }, (_, i) =>
            proxyActivities<Activities>({
              ...base,
              ...(requeue ? { scheduleToStartTimeout: requeue.settings.replicaStartTimeoutMs } : {}),
              activityId: `stage:${spec.id}${suffix}${tag}:replica-${i}`,
              summary: `${spec.id}: ${spec.plugin} replica ${i + 1}/${spec.replicas}`,
            })
              .runStage({ ...common, replica: { index: i, count: spec.replicas } })
              .catch(onReplicaError(i)),
          ),
        ),
      );
      over = true;
      if (failed) throw failed.err;
      if (giveBack) return { giveBack };
      const rejected = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (rejected) throw rejected.reason;
      const replicaResults = settled.map((r) => (r as PromiseFulfilledResult<StageOutcome>).value);
      const reduce = proxyActivities<Activities>({ ...base, activityId: `stage:${spec.id}${suffix}:reduce`, summary: `${spec.id}: ${spec.plugin} reduce` });
      const out = await reduce.reduceStage({ ...common, replicaResults });
      return { outcome: { ...out, attempt: Math.max(out.attempt, ...replicaResults.map((r) => r.attempt)) } };
    } finally {
      over = true;
      endWait(st, 'stopped waiting (cancelled)');
      if (asked) await CancellationScope.nonCancellable(() => keeper.signal(releaseSlotsSignal, { requestId }).catch(() => undefined));
    }
  };

  /** The stage's expected cost in the run's estimate, if it has one. */
  const estimateOf = (stageId: string): string | undefined => input.estimate?.stages.find((s) => s.stageId === stageId)?.cost?.total.expected;

  /** What the stages running now (other than `stageId`) reserved out of the run's budget, and who they are. */
  const reservedByOthers = (stageId: string): { amount: bigint; by: string[] } => {
    const others = [...reserved].filter(([id]) => id !== stageId);
    return { amount: others.reduce((n, [, v]) => n + v, 0n), by: others.map(([id]) => id) };
  };

  /** Why the stage may not start under the budget, or undefined when it may. */
  const budgetBlock = (stageId: string): string | undefined => {
    const b = budget!;
    const est = estimateOf(stageId);
    const cur = b.currency;
    // Reservations count against the run's budget only (a stage's own budget is its alone).
    const held = b.max !== undefined && patched(PATCH_BUDGET_RESERVE) ? reservedByOthers(stageId) : { amount: 0n, by: [] };
    const checks: [label: string, max: string | undefined, spent: string, held: bigint][] = [
      ['the run', b.max, b.spent, held.amount],
      [`stage ${stageId}`, b.stages[stageId]?.max, b.stages[stageId]?.spent ?? '0', 0n],
    ];
    for (const [label, max, spent, others] of checks) {
      if (max === undefined) continue;
      const unheld = parseMoney(max) - parseMoney(spent);
      if (unheld <= 0n) return `budget: ${label} has spent ${spent} ${cur} of its ${max} ${cur}`;
      if (est !== undefined && parseMoney(est) > unheld) {
        return `budget: stage ${stageId} is estimated at ${est} ${cur}, more than the ${formatMoneyExact(unheld)} ${cur} left of ${label}'s ${max} ${cur}`;
      }
      // Only the running stages' reservations are in the way: it looks again when one ends.
      const left = unheld - others;
      const heldBy = `(${formatMoneyExact(others)} ${cur} of it ${RESERVED_BY}${held.by.length > 1 ? 's' : ''} ${held.by.join(', ')})`;
      if (left <= 0n) return `budget: nothing is left of ${label}'s ${max} ${cur} beside the ${spent} ${cur} spent ${heldBy}`;
      if (est !== undefined && parseMoney(est) > left) {
        return `budget: stage ${stageId} is estimated at ${est} ${cur}, more than the ${formatMoneyExact(left)} ${cur} left of ${label}'s ${max} ${cur} ${heldBy}`;
      }
    }
    return undefined;
  };

  /** Holds the stage's estimate out of the run's budget while it runs (runs with a run-wide budget). */
  const reserve = (stageId: string) => {
    const est = estimateOf(stageId);
    if (budget?.max === undefined || est === undefined || !patched(PATCH_BUDGET_RESERVE)) return;
    reserved.set(stageId, parseMoney(est));
    showReserved();
  };

  /** The stage ended: its real spend (noted from its outcome) replaces its reservation. */
  const release = (stageId: string) => {
    if (!reserved.delete(stageId)) return;
    reservedVersion++;
    showReserved();
  };

  /** The reservations as the run's state shows them (queries, the API's `RunBudget.reserved`). */
  const showReserved = () => {
    if (reserved.size === 0) delete budget!.reserved;
    else budget!.reserved = Object.fromEntries([...reserved].map(([id, v]) => [id, formatMoneyExact(v)]));
  };

  /** The limits one attempt must stay within (the activity checks its own spend against them while it runs). */
  const attemptBudget = (stageId: string) => ({
    currency: budget!.currency,
    priceSheet: input.budget!.priceSheet,
    ...(budget!.max !== undefined ? { runMax: budget!.max } : {}),
    ...(budget!.stages[stageId] ? { stageMax: budget!.stages[stageId]!.max } : {}),
  });

  /** Spend only grows: take the larger of what is known and what an attempt reported. */
  const noteSpend = (stageId: string, spent: { run: string; stage: string } | undefined) => {
    if (!budget || !spent) return;
    if (parseMoney(spent.run) > parseMoney(budget.spent)) budget.spent = spent.run;
    const sb = budget.stages[stageId];
    if (sb && parseMoney(spent.stage) > parseMoney(sb.spent)) sb.spent = spent.stage;
  };

  /**
   * Pauses the run on a stage for its budget (or fails it, with onExceed: fail) until a raise, a
   * retry (which looks again), a skip or an abort. The spend at the pause is in the run's budget.
   */
  const budgetPause = async (spec: ResolvedStage, why: string): Promise<'again' | 'skipped'> => {
    const st = byId.get(spec.id)!;
    const action = budget!.stages[spec.id]?.onExceed ?? budget!.onExceed;
    // Paused only by what running stages reserved: it looks again when one of them ends (and
    // waits so even under onExceed: fail, since nothing was spent over the budget).
    const byReservations = why.includes(RESERVED_BY);
    if (action === 'fail' && !byReservations) {
      abortReason = why;
      throw failRun(`stage ${spec.id}: ${why}`);
    }
    st.budgetPause = why;
    state.pausedStages.push(spec.id);
    setStatus('PAUSED');
    event('RUN_PAUSED', spec.id, `${why}; spent so far ${budget!.spent} ${budget!.currency}; raiseBudget or abortRun`);
    metrics.paused(input.pipeline, BUDGET_PAUSE_CODE);
    metrics.budgetPaused(input.pipeline);
    const seen = budgetVersion;
    const seenReserved = reservedVersion;
    const decided = await condition(
      () => decisions.has(spec.id) || decisions.has('*') || budgetVersion !== seen || (byReservations && reservedVersion !== seenReserved),
      input.onFailure.timeoutMs,
    );
    state.pausedStages = state.pausedStages.filter((s) => s !== spec.id);
    delete st.budgetPause;
    if (!decided) {
      abortReason = `no decision within ${Math.round(input.onFailure.timeoutMs / 1000)}s on stage ${spec.id}`;
      throw failRun(`run paused on stage ${spec.id} for its budget and timed out waiting for a decision`);
    }
    const d = decisions.get(spec.id) ?? decisions.get('*');
    if (d) decisions.delete(spec.id);
    if (d?.action === 'abort') {
      abortReason = d.reason;
      throw failRun(`aborted by ${d.by ? d.by.name : 'operator'}: ${d.reason}`);
    }
    if (state.pausedStages.length === 0) setStatus('RUNNING');
    if (d?.action === 'skip') {
      event('RUN_RESUMED', spec.id, `stage ${spec.id} skipped${byText(d.by)}`);
      st.status = 'SKIPPED';
      event('STAGE_SKIPPED', spec.id);
      return 'skipped';
    }
    if (d?.action === 'retry' && d.by) actingAs.set(spec.id, d.by);
    const again = budgetVersion !== seen ? 'budget raised' : 'a running stage released its reservation';
    event('RUN_RESUMED', spec.id, d ? `stage ${spec.id} retried${byText(d.by)}` : `${again}; stage ${spec.id} looks again`);
    return 'again';
  };

  // Schedule every stage once its dependencies are done; independent stages run concurrently.
  const done = new Map<string, Promise<void>>();
  for (const spec of input.stages) {
    done.set(
      spec.id,
      (async () => {
        await Promise.all(spec.needs.map((n) => done.get(n)!));
        if (abortReason !== undefined) return;
        await runStage(spec);
      })(),
    );
  }
  try {
    await Promise.all(done.values());
  } catch (err) {
    if (isCancellation(err)) {
      // Record the cancellation; the run still closes as cancelled.
      await CancellationScope.nonCancellable(async () => {
        for (const s of state.stages) if (s.status === 'RUNNING' || s.status === 'PENDING') s.status = s.status === 'RUNNING' ? 'CANCELLED' : 'PENDING';
        state.closedAt = now();
        event('RUN_CANCELLED');
        clearCurrent();
        setStatus('CANCELLED');
        metrics.finished(input.pipeline, 'CANCELLED');
      });
      throw err;
    }
    // Let stages already running elsewhere in the DAG settle before closing.
    await Promise.allSettled(done.values());
    state.closedAt = now();
    event('RUN_FAILED', undefined, err instanceof Error ? err.message : String(err));
    clearCurrent();
    setStatus('FAILED');
    metrics.finished(input.pipeline, 'FAILED');
    await condition(allHandlersFinished);
    throw ApplicationFailure.create({
      message: err instanceof Error ? err.message : String(err),
      type: 'PIPELINE_FAILED',
      nonRetryable: true,
      details: [state],
    });
  }
  state.closedAt = now();
  event('RUN_COMPLETED');
  clearCurrent();
  setStatus('COMPLETED');
  metrics.finished(input.pipeline, 'COMPLETED');
  await condition(allHandlersFinished);
  return state;
}

/** The same principal: the same token id when both have one, else the same name and role. */
function sameStarter(a: RunStarter, b: RunStarter | undefined): boolean {
  if (!b) return false;
  if (a.tokenId && b.tokenId) return a.tokenId === b.tokenId;
  return a.name === b.name && a.role === b.role;
}

/** " by <name> (<role>)" for a decision that says who made it; "" for one from before it was recorded. */
function byText(by: RunStarter | undefined): string {
  return by ? ` by ${by.name} (${by.role})` : '';
}

/** A replica activity that was never picked up by a worker within its scheduleToStartTimeout. */
function startTimedOut(err: unknown): boolean {
  const cause = err instanceof ActivityFailure ? err.cause : err;
  return cause instanceof TimeoutFailure && cause.timeoutType === 'SCHEDULE_TO_START';
}

/** Ends the run: caught below, recorded in the state, and turned into the workflow's failure. */
function failRun(message: string): Error {
  return new Error(message);
}

interface FailureDetail {
  attempt?: number;
  /** The run's and the stage's spend after the attempt (runs with a budget). */
  spent?: { run: string; stage: string };
  /** BUDGET_EXCEEDED: the stage's last checkpoint, for the next round to resume from. */
  checkpoint?: unknown;
}

function describeFailure(err: unknown, spec: ResolvedStage): { message: string; type?: string; attempts: number; detail?: FailureDetail } {
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

/** Throws (so the Update is rejected, nothing recorded) when a decision does not fit the run's state. */
export function validateDecision(d: Decision, state: RunState, stages: ResolvedStage[]): void {
  if (!d || typeof d !== 'object' || !('action' in d)) throw new Error('decision must have an action: retry, skip, abort or raise-budget');
  if (d.action === 'raise-budget') {
    validateRaise(d, state);
    return;
  }
  if (state.status !== 'PAUSED') throw new Error(`run is ${state.status}, not PAUSED; decisions apply to paused runs only`);
  if (d.action === 'abort') {
    if (typeof d.reason !== 'string' || d.reason.trim() === '') throw new Error('abort needs a reason');
    return;
  }
  if (d.action !== 'retry' && d.action !== 'skip') throw new Error(`unknown action ${JSON.stringify((d as { action: unknown }).action)}`);
  if (!state.pausedStages.includes(d.stageId)) {
    throw new Error(`stage ${JSON.stringify(d.stageId)} is not waiting for a decision; paused: ${state.pausedStages.join(', ') || 'none'}`);
  }
  if (d.action === 'skip') {
    const dependents = stages.filter((s) => Object.values(s.inputs).includes(d.stageId)).map((s) => s.id);
    if (dependents.length) throw new Error(`cannot skip ${d.stageId}: stage(s) ${dependents.join(', ')} need its outputs`);
  }
}

/** A raise applies to a run with a budget, open, in its currency, and only upward. */
function validateRaise(d: Extract<Decision, { action: 'raise-budget' }>, state: RunState): void {
  const b = state.budget;
  if (!b) throw new Error('this run has no budget to raise (its spec sets none)');
  if (state.status !== 'RUNNING' && state.status !== 'PAUSED') throw new Error(`run is ${state.status}; a budget can be raised on an open run only`);
  let max: bigint;
  try {
    max = parseMoney(d.max);
  } catch {
    throw new Error(`max must be a decimal amount such as "12.50"; got ${JSON.stringify(d.max)}`);
  }
  const current = d.stageId === undefined ? b.max : b.stages[d.stageId]?.max;
  if (current === undefined) {
    throw new Error(
      d.stageId === undefined
        ? 'this run has no run-wide budget (only stage budgets: give stageId)'
        : `stage ${JSON.stringify(d.stageId)} has no budget of its own`,
    );
  }
  if (max <= parseMoney(current)) {
    throw new Error(`a raise must go up: ${formatMoneyExact(max)} ${b.currency} is not above the current ${current} ${b.currency}`);
  }
}

function raiseBudget(b: BudgetState, d: Extract<Decision, { action: 'raise-budget' }>, at: string): void {
  const to = formatMoneyExact(parseMoney(d.max));
  const from = d.stageId === undefined ? b.max! : b.stages[d.stageId]!.max;
  if (d.stageId === undefined) b.max = to;
  else b.stages[d.stageId]!.max = to;
  b.raises.push({ at, ...(d.stageId !== undefined ? { stageId: d.stageId } : {}), from, to, ...(d.by ? { by: d.by } : {}) });
}
