// The pipeline workflow, top to bottom: a run's state (PipelineRun), the messages it answers, its
// stages scheduled in dependency order (each by runStage: rounds of activities, pauses, decisions),
// and how it closes. Only references and small metrics pass through here. Command order changes
// only behind `patched()` (workflows/patches.ts); recorded histories replay in the tests.
import { trace, TraceFlags } from '@opentelemetry/api';
import { allHandlersFinished, ApplicationFailure, CancellationScope, condition, isCancellation, setHandler } from '@temporalio/workflow';
import { validateDecision } from './decisions.js';
import { slotsDeniedSignal, slotsGrantedSignal, slotsPingSignal, slotsRevokedSignal } from './gang.js';
import { decideUpdate, progressQuery } from './messages.js';
import { PipelineRun } from './pipeline-run.js';
import { runStage } from './stage-round.js';
import type { RunPipelineInput, RunState } from './types.js';

/**
 * Runs a pipeline: stages in dependency order (independent stages at the same time), each as
 * an activity on its plugin's task queue. A stage that has used up its retries pauses the run
 * for an operator decision (retry with optional new params, skip, abort) unless the spec says
 * `onFailure: fail`.
 */
export async function runPipelineWorkflow(input: RunPipelineInput): Promise<RunState> {
  const run = new PipelineRun(input, workflowTraceId());
  const { state } = run;

  // Messages: progress, an operator's decisions (validated first: a refused one records nothing),
  // and the slot keepers' answers. Signals and queries add no commands.
  setHandler(progressQuery, () => state);
  setHandler(
    decideUpdate,
    (d) => {
      if (d.action !== 'raise-budget') run.decisions.set(d.action === 'abort' ? '*' : d.stageId, d);
      else {
        run.budget!.raise(d, new Date().toISOString());
        const budget = `${d.stageId ? `stage ${d.stageId}` : 'run'} budget raised to ${d.max} ${state.budget!.currency}`;
        run.event('BUDGET_RAISED', d.stageId, `${budget}${d.by ? ` by ${d.by}` : ''}`);
      }
      return state;
    },
    { validator: (d) => validateDecision(d, state, input.stages) },
  );
  setHandler(slotsGrantedSignal, ({ requestId }) => void run.slotAnswers.set(requestId, { granted: true }));
  setHandler(slotsDeniedSignal, ({ requestId, reason }) => void run.slotAnswers.set(requestId, { granted: false, reason }));
  setHandler(slotsRevokedSignal, ({ requestId, reason }) => void run.revocations.set(requestId, reason));
  setHandler(slotsPingSignal, () => undefined);

  run.event('RUN_STARTED', undefined, input.resumedFrom ? `resumed from ${input.resumedFrom}` : undefined);
  run.refreshDetails();

  // Every stage starts once its dependencies are done; independent stages run concurrently.
  const done = new Map<string, Promise<void>>();
  for (const spec of input.stages) {
    done.set(
      spec.id,
      (async () => {
        await Promise.all(spec.needs.map((n) => done.get(n)!));
        if (run.abortReason === undefined) await runStage(run, spec);
      })(),
    );
  }
  try {
    await Promise.all(done.values());
  } catch (err) {
    if (isCancellation(err)) {
      // Record the cancellation; the run still closes as cancelled.
      await CancellationScope.nonCancellable(async () => run.close('CANCELLED'));
      throw err;
    }
    // Let stages already running elsewhere in the DAG settle before closing.
    await Promise.allSettled(done.values());
    const message = err instanceof Error ? err.message : String(err);
    run.close('FAILED', message);
    await condition(allHandlersFinished);
    throw ApplicationFailure.create({ message, type: 'PIPELINE_FAILED', nonRetryable: true, details: [state] });
  }
  run.close('COMPLETED');
  await condition(allHandlersFinished);
  return state;
}

/**
 * The trace id of this workflow's span (Temporal's OpenTelemetry workflow interceptor makes it the
 * active span around the workflow function when the worker traces); nothing otherwise. Read into
 * state only: no command, and ids made in the sandbox are the same on every replay.
 */
function workflowTraceId(): string | undefined {
  const sc = trace.getActiveSpan()?.spanContext();
  return sc && trace.isSpanContextValid(sc) && (sc.traceFlags & TraceFlags.SAMPLED) !== 0 ? sc.traceId : undefined;
}
