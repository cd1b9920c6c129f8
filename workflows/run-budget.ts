// A run's budget while it runs: what a stage may start with, what the running stages hold, what was
// spent, and raises. State only (a `patched()` check aside): no command of its own. Workflow-safe.
import { patched } from '@temporalio/workflow';
import { formatMoneyExact, parseMoney } from '../ledger/money.js';
import { PATCH_BUDGET_RESERVE } from './patches.js';
import type { BudgetState, Decision, RunPipelineInput, RunStageInput } from './types.js';

/** Names, in a budget pause's reason, the running stages whose reservations hold the budget. */
const RESERVED_BY = 'reserved by running stage';

export class RunBudget {
  /** Bumped by every raise: stages paused on their budget look again. */
  version = 0;
  /** Bumped when a reservation is released: stages paused for reservations look again. */
  releases = 0;
  /** Estimates reserved out of the run's budget by the stages running now (stage id → micros). */
  private readonly reserved = new Map<string, bigint>();

  constructor(
    /** The budget in the run's state (queries and the API read it). */
    readonly state: BudgetState,
    private readonly input: RunPipelineInput,
  ) {}

  /** Why the stage may not start under the budget, or undefined when it may. */
  block(stageId: string): string | undefined {
    const b = this.state;
    const est = this.estimateOf(stageId);
    const cur = b.currency;
    // Reservations count against the run's budget only (a stage's own budget is its alone).
    const held = b.max !== undefined && patched(PATCH_BUDGET_RESERVE) ? this.reservedByOthers(stageId) : { amount: 0n, by: [] };
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
  }

  /** The block is only the running stages' reservations: the stage waits for one to end (nothing was spent over the budget). */
  static onlyReserved(why: string): boolean {
    return why.includes(RESERVED_BY);
  }

  /** What a pause on this stage's budget does: wait for a decision, or fail the run. */
  onExceed(stageId: string): 'pause' | 'fail' {
    return this.state.stages[stageId]?.onExceed ?? this.state.onExceed;
  }

  /** Holds the stage's estimate out of the run's budget while it runs (runs with a run-wide budget). */
  reserve(stageId: string): void {
    const est = this.estimateOf(stageId);
    if (this.state.max === undefined || est === undefined || !patched(PATCH_BUDGET_RESERVE)) return;
    this.reserved.set(stageId, parseMoney(est));
    this.showReserved();
  }

  /** The stage ended: its real spend (noted from its outcome) replaces its reservation. */
  release(stageId: string): void {
    if (!this.reserved.delete(stageId)) return;
    this.releases++;
    this.showReserved();
  }

  /** Spend only grows: take the larger of what is known and what an attempt reported. */
  noteSpend(stageId: string, spent: { run: string; stage: string } | undefined): void {
    if (!spent) return;
    if (parseMoney(spent.run) > parseMoney(this.state.spent)) this.state.spent = spent.run;
    const sb = this.state.stages[stageId];
    if (sb && parseMoney(spent.stage) > parseMoney(sb.spent)) sb.spent = spent.stage;
  }

  /** The limits one attempt must stay within (the activity checks its own spend against them while it runs). */
  forAttempt(stageId: string): NonNullable<RunStageInput['budget']> {
    const b = this.state;
    return {
      currency: b.currency,
      priceSheet: this.input.budget!.priceSheet,
      ...(b.max !== undefined ? { runMax: b.max } : {}),
      ...(b.stages[stageId] ? { stageMax: b.stages[stageId]!.max } : {}),
    };
  }

  /** A validated raise (validateRaise): the new limit, recorded among the raises. */
  raise(d: Extract<Decision, { action: 'raise-budget' }>, at: string): void {
    const b = this.state;
    const to = formatMoneyExact(parseMoney(d.max));
    const from = d.stageId === undefined ? b.max! : b.stages[d.stageId]!.max;
    if (d.stageId === undefined) b.max = to;
    else b.stages[d.stageId]!.max = to;
    b.raises.push({ at, ...(d.stageId !== undefined ? { stageId: d.stageId } : {}), from, to, ...(d.by ? { by: d.by } : {}) });
    this.version++;
  }

  /** The stage's expected cost in the run's estimate, if it has one. */
  private estimateOf(stageId: string): string | undefined {
    return this.input.estimate?.stages.find((s) => s.stageId === stageId)?.cost?.total.expected;
  }

  /** What the stages running now (other than `stageId`) reserved out of the run's budget, and who they are. */
  private reservedByOthers(stageId: string): { amount: bigint; by: string[] } {
    const others = [...this.reserved].filter(([id]) => id !== stageId);
    return { amount: others.reduce((n, [, v]) => n + v, 0n), by: others.map(([id]) => id) };
  }

  /** The reservations as the run's state shows them (queries, the API's `RunBudget.reserved`). */
  private showReserved(): void {
    if (this.reserved.size === 0) delete this.state.reserved;
    else this.state.reserved = Object.fromEntries([...this.reserved].map(([id, v]) => [id, formatMoneyExact(v)]));
  }
}
