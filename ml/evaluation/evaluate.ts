// Measuring a model on a dataset folder: splits as model inputs, shape checks, test accuracy.
// Used by core:prune-quantize, core:deploy and the fine-tune job. No work at import time; tf is passed in.
// Unusable data or a model that does not fit the data throw DataError (never worth a retry).
import type * as TF from '@tensorflow/tfjs';
import { DataError } from '../data/data-error.js';
import { inputsOf, readDataset, type Dataset, type SplitName } from '../data/dataset.js';
import type { Tf } from '../models/mlp.js';
import { sizeOf, type LoadedModel } from '../runtime/loaded-model.js';

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
  const ds: Dataset = await readDataset(dir, { splits: [...new Set<SplitName>(['train', ...order])] });
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
  throw new DataError(`dataset has no ${order.join(' or ')} split to evaluate on`, { code: 'DATASET_SPLIT_MISSING' });
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
  const out = model.outputs[0]?.shape;
  const classes = out?.[out.length - 1];
  checkFits({ sampleShape: modelSampleShape(model), numClasses: typeof classes === 'number' ? classes : undefined }, split);
}

/** checkCompatible for a model of any format: the same DataError MODEL_DATASET_MISMATCH. */
export function checkFits(model: Pick<LoadedModel, 'sampleShape' | 'numClasses'>, split: EvalSplit): void {
  const want = model.sampleShape;
  const wantSize = sizeOf(want);
  const have = sizeOf(split.featureShape);
  if (wantSize !== have) {
    throw new DataError(
      `model expects inputs of shape [${want.join(', ')}] (${wantSize} values) but the dataset rows have shape [${split.featureShape.join(', ')}] (${have} values)`,
      { code: 'MODEL_DATASET_MISMATCH' },
    );
  }
  if (model.numClasses !== undefined && model.numClasses !== split.numClasses) {
    throw new DataError(`model outputs ${model.numClasses} classes but the dataset has ${split.numClasses}`, { code: 'MODEL_DATASET_MISMATCH' });
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

/** Index of the largest of `classes` values from `offset` (the first one on ties, as tf.argMax). */
export function argmax(p: Float32Array, offset: number, classes: number): number {
  let best = 0;
  for (let c = 1; c < classes; c++) if (p[offset + c]! > p[offset + best]!) best = c;
  return best;
}

/** accuracy for a model of any format (tfjs or ONNX): the fraction of rows whose argmax equals the label. */
export async function accuracyOf(model: LoadedModel, split: EvalSplit, batchSize = 256): Promise<number> {
  if (split.count === 0) return 0;
  const rowSize = sizeOf(split.featureShape);
  let correct = 0;
  for (let start = 0; start < split.count; start += batchSize) {
    const end = Math.min(split.count, start + batchSize);
    const { probabilities, classes } = await model.predict(split.x.subarray(start * rowSize, end * rowSize), end - start);
    for (let i = 0; i < end - start; i++) if (argmax(probabilities, i * classes, classes) === split.y[start + i]) correct++;
    // Let heartbeats and other requests through between batches.
    await new Promise<void>((r) => setImmediate(r));
  }
  return correct / split.count;
}
