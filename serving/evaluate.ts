// Measuring a model on a dataset artifact: test accuracy, latency at batch 1, input reshaping.
// Used by core:prune-quantize and core:deploy. No work at import time; tf is passed in.
import type * as TF from '@tensorflow/tfjs';
import { DataError } from '../ml/data/data-error.js';
import { inputsOf, readDataset, type Dataset, type SplitName } from '../ml/data/dataset.js';
import { badInput } from '../lib/errors.js';

type Tf = typeof TF;

/** One split of a dataset as model inputs (float32, normalised) and integer labels. */
export interface EvalSplit {
  split: SplitName;
  count: number;
  x: Float32Array;
  y: Uint8Array;
  featureShape: number[];
  numClasses: number;
}

/**
 * Loads a split of a dataset folder. `split: 'test'` falls back to 'validation' when the dataset
 * has no test split (the returned `split` says which one was used). `limit` keeps the first rows.
 */
export async function loadSplit(dir: string, opts: { split: SplitName; limit?: number }): Promise<EvalSplit> {
  const order: SplitName[] = opts.split === 'test' ? ['test', 'validation'] : [opts.split];
  let ds: Dataset;
  try {
    ds = await readDataset(dir, { splits: [...new Set<SplitName>(['train', ...order])] });
  } catch (e) {
    // A corrupt or missing dataset will not get better on retry.
    if (e instanceof DataError) throw badInput(`dataset: ${e.message}`, e.code);
    throw e;
  }
  for (const name of order) {
    const s = ds.splits[name];
    if (!s || s.count === 0) continue;
    const rowSize = ds.featureShape.reduce((a, b) => a * b, 1);
    const count = opts.limit !== undefined ? Math.min(opts.limit, s.count) : s.count;
    return {
      split: name,
      count,
      x: inputsOf(ds, s).slice(0, count * rowSize),
      y: s.y.slice(0, count),
      featureShape: ds.featureShape,
      numClasses: ds.numClasses,
    };
  }
  throw badInput(`dataset has no ${order.join(' or ')} split to evaluate on`, 'DATASET_SPLIT_MISSING');
}

/** The per-sample input shape a model expects (its first input without the batch dimension). */
export function modelSampleShape(model: TF.LayersModel): number[] {
  const shape = model.inputs[0]?.shape;
  if (!shape) throw new Error('model has no input');
  const dims = shape.slice(1);
  if (dims.some((d) => d === null || d === undefined)) throw new Error(`model input shape ${JSON.stringify(shape)} has unknown dimensions`);
  return dims as number[];
}

/** Fails with a clear, non-retryable error when the dataset's rows do not fit the model's input. */
export function checkCompatible(model: TF.LayersModel, split: EvalSplit): void {
  const want = modelSampleShape(model);
  const wantSize = want.reduce((a, b) => a * b, 1);
  const have = split.featureShape.reduce((a, b) => a * b, 1);
  if (wantSize !== have) {
    throw badInput(`model expects inputs of shape [${want.join(', ')}] (${wantSize} values) but the dataset rows have shape [${split.featureShape.join(', ')}] (${have} values)`, 'MODEL_DATASET_MISMATCH');
  }
  const out = model.outputs[0]?.shape;
  const classes = out?.[out.length - 1];
  if (typeof classes === 'number' && classes !== split.numClasses) {
    throw badInput(`model outputs ${classes} classes but the dataset has ${split.numClasses}`, 'MODEL_DATASET_MISMATCH');
  }
}

/** Rows [start, end) of a split as a tensor shaped for the model. */
export function batchTensor(tf: Tf, model: TF.LayersModel, x: Float32Array, rowSize: number, start: number, end: number): TF.Tensor {
  return tf.tensor(x.subarray(start * rowSize, end * rowSize), [end - start, ...modelSampleShape(model)], 'float32');
}

/** Fraction of rows whose argmax prediction equals the label. */
export async function accuracy(tf: Tf, model: TF.LayersModel, split: EvalSplit, batchSize = 256): Promise<number> {
  if (split.count === 0) return 0;
  const rowSize = split.featureShape.reduce((a, b) => a * b, 1);
  let correct = 0;
  for (let start = 0; start < split.count; start += batchSize) {
    const end = Math.min(split.count, start + batchSize);
    const pred = tf.tidy(() => (model.predict(batchTensor(tf, model, split.x, rowSize, start, end)) as TF.Tensor).argMax(-1));
    const labels = await pred.data();
    pred.dispose();
    for (let i = 0; i < labels.length; i++) if (labels[i] === split.y[start + i]) correct++;
    await tf.nextFrame();
  }
  return correct / split.count;
}

/** Nearest-rank percentile of an ascending list. */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

/** Latency of one prediction at batch 1 (predict + read back), after a warm-up. Measured, never asserted. */
export async function measureLatency(tf: Tf, model: TF.LayersModel, split: EvalSplit, opts: { runs?: number; warmup?: number } = {}): Promise<{ p50Ms: number; p99Ms: number; runs: number }> {
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

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}
