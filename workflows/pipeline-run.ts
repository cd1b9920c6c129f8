// A pipeline run's state and every change to it: stages starting and ending, events, status, the
// Web UI's details, the CapstanStage search attribute, slot waits, who stages act as, and the one
// pause path. The workflow (run-pipeline.ts) and its steps (stage-round.ts, stage-execution.ts)
// change the run only through it. Workflow-safe: search attribute upserts are its only commands.
import { condition, isCancellation, patched, setCurrentDetails, upsertSearchAttributes } from '@temporalio/workflow';
import { byText, sameStarter } from './decisions.js';
import { describeFailure, type FailureDetail, failRun } from './failures.js';
import { runMetrics } from './metrics-sink.js';
import { PATCH_STAGE_ATTRIBUTE_LIMIT, PATCH_STAGE_ATTRIBUTE_ON_START } from './patches.js';
import { RunBudget } from './run-budget.js';
import { initialRunState, markReused } from './run-state.js';
import { CurrentStageKey, RunStatusKey } from './search-attributes.js';
import type {
  ArtifactRef,
  Decision,
  ResolvedStage,
  RunEventType,
  RunPipelineInput,
  RunStarter,
  RunState,
  RunStatus,
  StageOutcome,
  StageState,
  StageWaitState,
} from './types.js';

const STAGE_ATTRIBUTE_MAX = 255;

/** A decision on a stage (or an abort of the run). */
export type StageDecision = Exclude<Decision, { action: 'raise-budget' }>;
/** What a pause ends with when the run goes on: the stage's retry or skip, or nothing (woken to look again). */
export type Resumed = Exclude<StageDecision, { action: 'abort' }> | undefined;

/** How a pause reads and when it wakes without a decision. */
export interface PauseReason {
  /** The RUN_PAUSED event's message. */
  message: string;
  /** The pause's code in the metrics: the failure's type, or BUDGET_EXHAUSTED. */
  code: string;
  /** A budget pause: why the budget holds the stage (shown on the stage while it waits). */
  budget?: string;
  /** Looks again without a decision when this turns true (a raise, a released reservation). */
  wake?: () => boolean;
}

const now = () => new Date().toISOString();

export class PipelineRun {
  readonly state: RunState;
  /** The run's budget, for runs whose spec sets one. */
  readonly budget: RunBudget | undefined;
  /** The worker's metrics (a sink: no command, not called on replay). */
  readonly metrics = runMetrics();
  /** Decisions not yet taken up, by stage id ('*' for an abort). */
  readonly decisions = new Map<string, StageDecision>();
  /** Answers from the slot keepers, by request id. */
  readonly slotAnswers = new Map<string, { granted: true } | { granted: false; reason: string }>();
  /** Request id → why the keeper took its slots back (acted on by runs with PATCH_GANG_REQUEUE). */
  readonly revocations = new Map<string, string>();
  /** Set when the run is ending (abort, a pause timed out, a budget that fails the run): no stage starts after it. */
  abortReason: string | undefined;
  private readonly byId: Map<string, StageState>;
  /** The stages running now (the CapstanStage attribute). */
  private readonly running = new Set<string>();
  /**
   * Stage id → who its next round acts as: the principal of the retry decision that reran it, so
   * an operator's retry of an admin's stage runs with the operator's rights. Only the activity's
   * input changes (no new command), and histories without `by` run as before (ADR 0007).
   */
  private readonly actingAs = new Map<string, RunStarter>();
  /**
   * Who stages that start from now on act as: the starter, until a retry changes what the run
   * computes (new params or plugin version). From then on the later stages, built on the decider's
   * choice, act as the decider too, so an operator's new params upstream cannot reach an admin's
   * deploy stage with the admin's rights. An admin's decision does not raise a run that is not an
   * admin's (only the stage the admin reran acts as the admin).
   */
  private laterStagesActAs: RunStarter | undefined;

  constructor(
    readonly input: RunPipelineInput,
    traceId: string | undefined,
  ) {
    this.state = initialRunState(input, now(), traceId);
    this.budget = this.state.budget ? new RunBudget(this.state.budget, input) : undefined;
    this.byId = new Map(this.state.stages.map((s) => [s.id, s]));
    this.laterStagesActAs = input.startedBy;
  }

  stage(id: string): StageState {
    return this.byId.get(id)!;
  }

  /** The artifacts a stage takes: its dependencies' outputs, by kind. */
  inputsOf(spec: ResolvedStage): Record<string, ArtifactRef> {
    return Object.fromEntries(Object.entries(spec.inputs).map(([kind, from]) => [kind, this.stage(from).outputs[kind]!]));
  }

  /** Who the stage's next round acts as. */
  actsAs(stageId: string): RunStarter | undefined {
    return this.actingAs.get(stageId) ?? this.laterStagesActAs;
  }

  event(type: RunEventType, stageId?: string, message?: string): void {
    this.state.events.push({ seq: this.state.events.length + 1, at: now(), type, ...(stageId ? { stageId } : {}), ...(message ? { message } : {}) });
  }

  setStatus(status: RunStatus): void {
    this.state.status = status;
    upsertSearchAttributes([{ key: RunStatusKey, value: status }]);
    this.refreshDetails();
  }

  /** The run as the Web UI shows it (current details). */
  refreshDetails(): void {
    const lines = this.state.stages.map(
      (s) => `| ${s.id} | \`${s.plugin}\` | ${s.status}${s.waitingFor ? ` (waiting for ${s.waitingFor})` : ''} | ${s.attempts} |`,
    );
    setCurrentDetails(
      [`**${this.state.pipeline}** — ${this.state.status}`, '', '| stage | plugin | status | attempts |', '| --- | --- | --- | --- |', ...lines].join('\n'),
    );
  }

  /**
   * A stage starts waiting for its slots: recorded on the stage (the API adds the keeper's live
   * facts) and as an event. State and events only, no command: older histories replay unchanged.
   */
  startWait(st: StageState, wait: StageWaitState): void {
    st.waitingFor = `${wait.slotsNeeded} slot(s) on ${wait.queue}`;
    st.wait = wait;
    this.event('STAGE_WAITING', st.id, `waits for ${wait.slotsNeeded} slot(s) on ${wait.queue}`);
    this.refreshDetails();
  }

  /** The wait ends (granted, refused, or given up): the event says how and after how long. No-op when not waiting. */
  endWait(st: StageState, outcome: string): void {
    const wait = st.wait;
    delete st.waitingFor;
    if (!wait) return;
    delete st.wait;
    const seconds = (Date.parse(now()) - Date.parse(wait.since)) / 1000;
    this.metrics.slotWaited(wait.queue, seconds);
    this.event('STAGE_WAIT_ENDED', st.id, `${outcome} after ${seconds.toFixed(1)} s`);
    this.refreshDetails();
  }

  /** A resumed run's stage takes the outputs of the run it resumes. */
  reuse(stageId: string, reused: NonNullable<RunPipelineInput['reuse']>[string]): void {
    markReused(this.stage(stageId), reused);
    this.event('STAGE_REUSED', stageId, `outputs reused from ${reused.fromRun}`);
    this.refreshDetails();
  }

  /** A round of the stage starts (round > 0: an operator's retry). */
  stageStarted(stageId: string, round: number): void {
    const st = this.stage(stageId);
    st.status = 'RUNNING';
    st.startedAt = now();
    delete st.closedAt;
    delete st.error;
    delete st.errorType;
    this.running.add(stageId);
    this.markCurrent();
    const as = this.actingAs.get(stageId);
    this.event('STAGE_STARTED', stageId, round > 0 ? `operator retry ${round}${as ? ` as ${as.name} (${as.role})` : ''}` : undefined);
    this.refreshDetails();
  }

  stageSucceeded(stageId: string, outcome: StageOutcome): void {
    const st = this.stage(stageId);
    this.budget?.noteSpend(stageId, outcome.spent);
    this.budget?.release(stageId);
    st.attempts += outcome.attempt;
    st.outputs = outcome.outputs;
    st.metrics = outcome.metrics;
    st.status = 'SUCCEEDED';
    st.closedAt = now();
    if (typeof outcome.metrics.tfBackend === 'string') this.state.tfBackend = outcome.metrics.tfBackend;
    this.event('STAGE_SUCCEEDED', stageId);
  }

  /** The round failed (a cancellation is recorded and thrown on): what failed, its spend noted and its reservation released. */
  stageFailed(spec: ResolvedStage, err: unknown): { message: string; type?: string; detail?: FailureDetail } {
    const st = this.stage(spec.id);
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
    this.event('STAGE_FAILED', spec.id, message);
    this.budget?.noteSpend(spec.id, detail?.spent);
    // Its real spend replaces its reservation, also while it waits on a decision.
    this.budget?.release(spec.id);
    return { message, ...(type ? { type } : {}), ...(detail ? { detail } : {}) };
  }

  /** The round is over (succeeded, failed and decided on, cancelled or aborted). */
  stageLeft(stageId: string): void {
    this.budget?.release(stageId);
    this.running.delete(stageId);
    if (!patched(PATCH_STAGE_ATTRIBUTE_ON_START)) this.markCurrent();
    this.refreshDetails();
  }

  /**
   * The one pause path: the run waits on a stage for an operator's decision on it (or an abort of
   * the run), or until `reason.wake` says to look again. No decision within onFailure.timeoutMs, or
   * an abort, ends the run (thrown). The run is RUNNING again once no stage is paused.
   */
  async pause(stageId: string, reason: PauseReason): Promise<Resumed> {
    const st = this.stage(stageId);
    if (reason.budget) st.budgetPause = reason.budget;
    this.state.pausedStages.push(stageId);
    this.setStatus('PAUSED');
    this.event('RUN_PAUSED', stageId, reason.message);
    this.metrics.paused(this.input.pipeline, reason.code);
    if (reason.budget) this.metrics.budgetPaused(this.input.pipeline);
    const wake = reason.wake ?? (() => false);
    const decided = await condition(() => this.decisions.has(stageId) || this.decisions.has('*') || wake(), this.input.onFailure.timeoutMs);
    this.state.pausedStages = this.state.pausedStages.filter((s) => s !== stageId);
    delete st.budgetPause;
    if (!decided) {
      this.abortReason = `no decision within ${Math.round(this.input.onFailure.timeoutMs / 1000)}s on stage ${stageId}`;
      throw failRun(`run paused on stage ${stageId}${reason.budget ? ' for its budget' : ''} and timed out waiting for a decision`);
    }
    const d = this.decisions.get(stageId) ?? this.decisions.get('*');
    if (d) this.decisions.delete(stageId);
    if (d?.action === 'abort') {
      this.abortReason = d.reason;
      throw failRun(`aborted by ${d.by ? d.by.name : 'operator'}: ${d.reason}`);
    }
    if (this.state.pausedStages.length === 0) this.setStatus('RUNNING');
    return d;
  }

  /** An operator skipped the paused stage. */
  skipped(stageId: string, by: RunStarter | undefined): void {
    this.event('RUN_RESUMED', stageId, `stage ${stageId} skipped${byText(by)}`);
    this.stage(stageId).status = 'SKIPPED';
    this.event('STAGE_SKIPPED', stageId);
  }

  /**
   * An operator retried the paused stage: its next round acts as them, and so do the stages that
   * start later when the retry changes what the run computes (`changes`: new params or version).
   */
  retried(stageId: string, d: Extract<StageDecision, { action: 'retry' }>, changes: boolean): void {
    let later = '';
    if (d.by) {
      this.actingAs.set(stageId, d.by);
      if (changes && !sameStarter(d.by, this.laterStagesActAs) && !(d.by.role === 'admin' && this.laterStagesActAs?.role !== 'admin')) {
        this.laterStagesActAs = d.by;
        later = `; stages that start from here on act as ${d.by.name} (${d.by.role})`;
      }
    }
    this.event('RUN_RESUMED', stageId, `stage ${stageId} retried${byText(d.by)}${later}`);
  }

  /** The run closes: stages still running are cancelled, the attribute cleared, the status final. */
  close(status: 'COMPLETED' | 'FAILED' | 'CANCELLED', message?: string): void {
    if (status === 'CANCELLED') for (const s of this.state.stages) if (s.status === 'RUNNING') s.status = 'CANCELLED';
    this.state.closedAt = now();
    this.event(`RUN_${status}`, undefined, message);
    // A closed run names no current stage (runs that set it only at stage starts; older runs cleared it as stages ended).
    if (patched(PATCH_STAGE_ATTRIBUTE_ON_START)) upsertSearchAttributes([{ key: CurrentStageKey, value: null }]);
    this.setStatus(status);
    this.metrics.finished(this.input.pipeline, status);
  }

  private markCurrent(): void {
    let cur = [...this.running].join(',');
    // Keyword values are bounded by Temporal (and indexed by SQL visibility): keep it short.
    if (patched(PATCH_STAGE_ATTRIBUTE_LIMIT) && cur.length > STAGE_ATTRIBUTE_MAX) cur = `${cur.slice(0, STAGE_ATTRIBUTE_MAX - 1)}…`;
    upsertSearchAttributes([{ key: CurrentStageKey, value: cur || null }]);
  }
}
