import type * as TF from '@tensorflow/tfjs';
import type { Tf } from '../models/mlp.js';
import { sizeOf, type LoadedModel } from '../runtime/loaded-model.js';
import { batchTensor, type EvalSplit } from './evaluate.js';

/** Nearest-rank percentile of an ascending list. */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

/** Latency of one prediction at batch 1 (predict + read back), after a warm-up. Measured, never asserted. */
export async function measureLatency(
  tf: Tf,
  model: TF.LayersModel,
  split: EvalSplit,
  opts: { runs?: number; warmup?: number } = {},
): Promise<{ p50Ms: number; p99Ms: number; runs: number }> {
  const runs = opts.runs ?? 200;
  const warmup = opts.warmup ?? 10;
  const rowSize = split.featureShape.reduce((a, b) => a * b, 1);
  const times: number[] = [];
  for (let i = 0; i < warmup + runs; i++) {
    const row = split.count ? i % split.count : 0;
    const t0 = performance.now();
    const out = tf.tidy(() => model.predict(batchTensor(tf, model, split.x, rowSize, row, row + 1)) as TF.Tensor);
    await out.data();
    out.dispose();
    const dt = performance.now() - t0;
    if (i >= warmup) times.push(dt);
  }
  times.sort((a, b) => a - b);
  return { p50Ms: round3(percentile(times, 50)), p99Ms: round3(percentile(times, 99)), runs };
}

/** measureLatency for a model of any format: one row per predict call, read back, after a warm-up. */
export async function measureModelLatency(
  model: LoadedModel,
  split: EvalSplit,
  opts: { runs?: number; warmup?: number } = {},
): Promise<{ p50Ms: number; p99Ms: number; runs: number }> {
  const runs = opts.runs ?? 200;
  const warmup = opts.warmup ?? 10;
  const rowSize = sizeOf(split.featureShape);
  const empty = new Float32Array(rowSize);
  const times: number[] = [];
  for (let i = 0; i < warmup + runs; i++) {
    const row = split.count ? i % split.count : 0;
    const x = split.count ? split.x.subarray(row * rowSize, (row + 1) * rowSize) : empty;
    const t0 = performance.now();
    await model.predict(x, 1);
    const dt = performance.now() - t0;
    if (i >= warmup) times.push(dt);
  }
  times.sort((a, b) => a - b);
  return { p50Ms: round3(percentile(times, 50)), p99Ms: round3(percentile(times, 99)), runs };
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}
