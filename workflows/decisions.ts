// An operator's decisions on a paused run: which are valid for its state (the Update's validator,
// so a refused decision records nothing), and how they read in events. Pure: workflow-safe.
import { formatMoneyExact, parseMoney } from '../ledger/money.js';
import type { Decision, ResolvedStage, RunStarter, RunState } from './types.js';

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

/** The same principal: the same token id when both have one, else the same name and role. */
export function sameStarter(a: RunStarter, b: RunStarter | undefined): boolean {
  if (!b) return false;
  if (a.tokenId && b.tokenId) return a.tokenId === b.tokenId;
  return a.name === b.name && a.role === b.role;
}

/** " by <name> (<role>)" for a decision that says who made it; "" for one from before it was recorded. */
export function byText(by: RunStarter | undefined): string {
  return by ? ` by ${by.name} (${by.role})` : '';
}
