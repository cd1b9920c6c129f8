// One stage of a run, round after round: the budget's gate, the stage's activities
// (stage-execution.ts), and on a failure the one pause path (PipelineRun.pause) until an operator
// retries (the next round), skips, or aborts. Workflow-safe.
import { failRun } from './failures.js';
import { BUDGET_PAUSE_CODE } from './metrics-sink.js';
import type { PipelineRun } from './pipeline-run.js';
import { RunBudget } from './run-budget.js';
import { executeStage } from './stage-execution.js';
import type { ResolvedStage } from './types.js';

/** Runs one stage until it succeeds, is skipped, or the run is aborted. */
export async function runStage(run: PipelineRun, spec: ResolvedStage): Promise<void> {
  const reused = run.input.reuse?.[spec.id];
  if (reused) return run.reuse(spec.id, reused);
  let params = spec.params;
  let pluginVersion = spec.pluginVersion;
  let checkpoint: unknown;
  for (let round = 0; ; round++) {
    if (run.abortReason !== undefined) return;
    // A budgeted run looks before the stage starts: a stage whose estimate would break what is
    // left (or a budget already spent) pauses the run until an operator raises it or aborts. The
    // look and the reservation happen without yielding, so stages starting together see each
    // other's reservations.
    for (let why = run.budget?.block(spec.id); why; why = run.budget?.block(spec.id)) {
      if ((await budgetPause(run, spec, why)) === 'skipped') return;
      if (run.abortReason !== undefined) return;
    }
    run.budget?.reserve(spec.id);
    const inputs = run.inputsOf(spec);
    run.stageStarted(spec.id, round);
    try {
      run.stageSucceeded(spec.id, await executeStage(run, { ...spec, params, pluginVersion }, inputs, round, checkpoint));
      return;
    } catch (err) {
      const failure = run.stageFailed(spec, err);
      if (run.budget && failure.type === 'BUDGET_EXCEEDED') {
        // Stopped at a checkpoint for its budget: the next round resumes from that checkpoint (a
        // replicated stage's replicas each have their own, so its next round starts afresh).
        checkpoint = spec.replicas > 1 ? undefined : failure.detail?.checkpoint;
        if ((await budgetPause(run, spec, failure.message)) === 'skipped') return;
        if (run.abortReason !== undefined) return;
        continue;
      }
      if (run.input.onFailure.action === 'fail') throw failRun(`stage ${spec.id} failed: ${failure.message}`);
      const d = await run.pause(spec.id, { message: `waiting for a decision on stage ${spec.id}`, code: failure.type ?? 'UNKNOWN' });
      if (d?.action === 'skip') return run.skipped(spec.id, d.by);
      if (d?.action !== 'retry') continue; // not reached: a failure pause wakes on a decision only
      run.retried(spec.id, d, d.params !== undefined || d.pluginVersion !== undefined);
      if (d.params !== undefined) {
        params = d.params;
        run.stage(spec.id).paramsOverride = d.params;
      }
      // Only the activity's input changes (no new command), so no patch is needed (ADR 0007).
      if (d.pluginVersion !== undefined) {
        pluginVersion = d.pluginVersion;
        run.stage(spec.id).pluginVersionOverride = d.pluginVersion;
      }
    } finally {
      run.stageLeft(spec.id);
    }
  }
}

/**
 * Pauses the run on a stage for its budget (or fails it, with onExceed: fail) until a raise, a
 * retry (which looks again), a skip or an abort. The spend at the pause is in the run's budget.
 */
async function budgetPause(run: PipelineRun, spec: ResolvedStage, why: string): Promise<'again' | 'skipped'> {
  const budget = run.budget!;
  // Paused only by what running stages reserved: it looks again when one of them ends (and
  // waits so even under onExceed: fail, since nothing was spent over the budget).
  const byReservations = RunBudget.onlyReserved(why);
  if (budget.onExceed(spec.id) === 'fail' && !byReservations) {
    run.abortReason = why;
    throw failRun(`stage ${spec.id}: ${why}`);
  }
  const seen = { raises: budget.version, releases: budget.releases };
  const d = await run.pause(spec.id, {
    message: `${why}; spent so far ${budget.state.spent} ${budget.state.currency}; raiseBudget or abortRun`,
    code: BUDGET_PAUSE_CODE,
    budget: why,
    wake: () => budget.version !== seen.raises || (byReservations && budget.releases !== seen.releases),
  });
  if (d?.action === 'skip') {
    run.skipped(spec.id, d.by);
    return 'skipped';
  }
  if (d) run.retried(spec.id, d, false);
  else
    run.event(
      'RUN_RESUMED',
      spec.id,
      `${budget.version !== seen.raises ? 'budget raised' : 'a running stage released its reservation'}; stage ${spec.id} looks again`,
    );
  return 'again';
}
