// Gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune"; TensorFlow Model
// Optimization's `PolynomialDecay`): the sparsity rises from `initialSparsity` to `finalSparsity`
// over the fine-tune steps `beginStep … endStep` as
//     s(t) = s_f + (s_i − s_f) · (1 − (t − t₀) / (t_end − t₀))³
// and the masks are recomputed by magnitude every `frequency` steps (and at `endStep`, so the target
// is reached exactly). The steps after `endStep` train at the full target sparsity: recovery.
// A step count t means "t optimizer updates done": pruning at t happens before update t + 1.

export interface PolynomialSchedule {
  initialSparsity: number;
  finalSparsity: number;
  beginStep: number;
  endStep: number;
  /** Steps between two mask updates. */
  frequency: number;
  /** The polynomial's power; 3 in the paper and in TF MOT. */
  power: number;
}

/**
 * The schedule for a fine-tune of `totalSteps` steps: from `initialSparsity` (default 0) at step 0 to
 * `target` at round(endFraction × totalSteps), masks updated every `frequency` steps.
 */
export function gradualSchedule(opts: {
  target: number;
  totalSteps: number;
  frequency: number;
  endFraction: number;
  initialSparsity?: number;
}): PolynomialSchedule {
  if (!(opts.endFraction > 0 && opts.endFraction <= 1)) throw new Error(`endFraction must be in (0, 1], got ${opts.endFraction}`);
  if (!(opts.frequency >= 1)) throw new Error(`frequency must be at least 1 step, got ${opts.frequency}`);
  const endStep = Math.max(1, Math.round(opts.endFraction * opts.totalSteps));
  return {
    initialSparsity: opts.initialSparsity ?? 0,
    finalSparsity: opts.target,
    beginStep: 0,
    endStep,
    frequency: Math.max(1, Math.round(opts.frequency)),
    power: 3,
  };
}

/** s(t), clamped: the initial sparsity before `beginStep`, the final one from `endStep` on. */
export function sparsityAt(s: PolynomialSchedule, step: number): number {
  if (step <= s.beginStep) return s.initialSparsity;
  if (step >= s.endStep) return s.finalSparsity;
  const p = (step - s.beginStep) / (s.endStep - s.beginStep);
  return s.finalSparsity + (s.initialSparsity - s.finalSparsity) * (1 - p) ** s.power;
}

/** Whether the masks are recomputed at step `step`: every `frequency` steps from `beginStep`, and at `endStep`. */
export function isPruningStep(s: PolynomialSchedule, step: number): boolean {
  if (step < s.beginStep || step > s.endStep) return false;
  return step === s.endStep || (step - s.beginStep) % s.frequency === 0;
}

/** The sparsity the masks have after `step` steps: that of the last pruning step at or before it. */
export function sparsityAfter(s: PolynomialSchedule, step: number): number {
  if (step >= s.endStep) return s.finalSparsity;
  if (step < s.beginStep) return s.initialSparsity;
  return sparsityAt(s, s.beginStep + Math.floor((step - s.beginStep) / s.frequency) * s.frequency);
}
