// A run's state at its start, and a reused stage's, defined once: the workflow begins from these
// (workflows/run-pipeline.ts) and startPipeline answers with them (engine/engine.ts), so the two
// never drift apart. Pure functions of the run's input: workflow-safe.
import type { BudgetState, ReusedStage, RunPipelineInput, RunState, StageState } from './types.js';

/** A run's state when its workflow starts: every stage pending, nothing spent. */
export function initialRunState(input: RunPipelineInput, startedAt: string, traceId?: string): RunState {
  return {
    pipeline: input.pipeline,
    status: 'RUNNING',
    startedAt,
    stages: input.stages.map((s) => ({ id: s.id, plugin: s.plugin, status: 'PENDING', attempts: 0, outputs: {}, metrics: {} })),
    pausedStages: [],
    events: [],
    ...(input.resumedFrom ? { resumedFrom: input.resumedFrom } : {}),
    ...(input.estimate ? { estimate: input.estimate } : {}),
    ...(input.budget ? { budget: initialBudget(input) } : {}),
    ...(traceId ? { traceId } : {}),
  };
}

/** A stage whose outputs a resumed run takes from the run it resumes: what the workflow records when it reaches it. */
export function markReused(st: StageState, reused: ReusedStage): void {
  Object.assign(st, { status: 'REUSED', outputs: reused.outputs, metrics: reused.metrics, reusedFrom: reused.fromRun });
}

/** A new run's budget state: nothing spent, no raises. */
export function initialBudget(input: RunPipelineInput): BudgetState {
  const b = input.budget!;
  return {
    currency: b.currency,
    ...(b.max !== undefined ? { max: b.max } : {}),
    onExceed: b.onExceed,
    spent: '0.00',
    stages: Object.fromEntries(Object.entries(b.stages).map(([id, s]) => [id, { max: s.max, onExceed: s.onExceed, spent: '0.00' }])),
    raises: [],
  };
}
