import type * as TF from '@tensorflow/tfjs';
import { gatherRows } from '../data/dataset.js';
import { mixSeed, permutation } from '../data/rng.js';
import type { Tf } from '../models/mlp.js';
import { createStepLoop } from './step-loop.js';

export interface LabelledArrays {
  /** count × prod(featureShape) model inputs (already normalised). */
  x: Float32Array;
  y: Uint8Array;
  featureShape: number[];
}

export interface LossAccuracy {
  loss: number;
  accuracy: number;
}

export interface EpochStats {
  epoch: number;
  trainLoss: number;
  trainAccuracy: number;
  valLoss: number;
  valAccuracy: number;
  seconds: number;
  samplesPerSec: number;
}

function tensors(tf: Tf, d: LabelledArrays): { xs: TF.Tensor; ys: TF.Tensor } {
  const n = d.y.length;
  return { xs: tf.tensor(d.x, [n, ...d.featureShape], 'float32'), ys: tf.tensor1d(Float32Array.from(d.y), 'float32') };
}

/** Rows `idx` of a labelled set. */
export function subset(d: LabelledArrays, idx: ArrayLike<number>): LabelledArrays {
  const row = d.featureShape.reduce((a, b) => a * b, 1);
  return { x: gatherRows(d.x, row, idx), y: gatherRows(d.y, 1, idx), featureShape: d.featureShape };
}

/**
 * One pass over `d` in the given order with model.fit (no internal shuffle: the caller
 * shuffles with a seed). Returns the mean training loss and accuracy over the pass.
 */
export async function fitPass(tf: Tf, model: TF.LayersModel, d: LabelledArrays, opts: { batchSize: number }): Promise<LossAccuracy> {
  const { xs, ys } = tensors(tf, d);
  try {
    // The no-op onYield makes fit yield to the event loop every 125 ms (tfjs only yields when a
    // callback is given), so the process keeps answering timers and signals while it trains.
    const h = await model.fit(xs, ys, { epochs: 1, batchSize: opts.batchSize, shuffle: false, verbose: 0, callbacks: { onYield: () => undefined } });
    const loss = Number(h.history.loss?.[0] ?? NaN);
    const accuracy = Number((h.history.acc ?? h.history.accuracy)?.[0] ?? NaN);
    return { loss, accuracy };
  } finally {
    xs.dispose();
    ys.dispose();
  }
}

export function evaluate(tf: Tf, model: TF.LayersModel, d: LabelledArrays): LossAccuracy {
  if (d.y.length === 0) return { loss: NaN, accuracy: NaN };
  const { xs, ys } = tensors(tf, d);
  try {
    const out = model.evaluate(xs, ys, { batchSize: 512 }) as TF.Scalar[];
    const [loss, accuracy] = out.map((t) => t.dataSync()[0]!);
    out.forEach((t) => t.dispose());
    return { loss: loss!, accuracy: accuracy! };
  } finally {
    xs.dispose();
    ys.dispose();
  }
}

/** A seeded shuffle of the training set for one epoch. */
export function shuffledForEpoch(d: LabelledArrays, seed: number, epoch: number): LabelledArrays {
  return subset(d, permutation(d.y.length, mixSeed(seed, epoch)));
}

/** Which loop trains: the step loop (ml/training/step-loop.ts) when the model allows it, else model.fit. */
export type TrainLoopName = 'step' | 'model.fit';

/**
 * Trains epochs `fromEpoch+1 … epochs` (1-based), evaluating on the validation set after
 * each. `onEpoch` runs after every epoch (checkpoint, progress); it may be async. By default the
 * step loop trains (the model's variables and Adam state are brought up to date before each
 * `onEpoch`); `loop: 'model.fit'`, or a model the step loop does not support, uses model.fit.
 */
export async function trainEpochs(
  tf: Tf,
  model: TF.LayersModel,
  data: { train: LabelledArrays; validation: LabelledArrays },
  opts: { epochs: number; fromEpoch: number; batchSize: number; seed: number; loop?: TrainLoopName; onEpoch?: (s: EpochStats) => Promise<void> | void },
): Promise<{ stats: EpochStats[]; loop: TrainLoopName; fitBecause?: string }> {
  const out: EpochStats[] = [];
  const step = opts.loop === 'model.fit' ? { unsupported: 'asked for model.fit' } : await createStepLoop(tf, model);
  try {
    for (let epoch = opts.fromEpoch + 1; epoch <= opts.epochs; epoch++) {
      const shuffled = shuffledForEpoch(data.train, opts.seed, epoch);
      const t0 = performance.now();
      let train: LossAccuracy;
      if ('unsupported' in step) {
        train = await fitPass(tf, model, shuffled, { batchSize: opts.batchSize });
      } else {
        train = await step.trainPass(shuffled, { batchSize: opts.batchSize, seed: mixSeed(opts.seed, epoch) });
        await step.commit();
      }
      const seconds = (performance.now() - t0) / 1000;
      const val = evaluate(tf, model, data.validation);
      const s: EpochStats = {
        epoch,
        trainLoss: train.loss,
        trainAccuracy: train.accuracy,
        valLoss: val.loss,
        valAccuracy: val.accuracy,
        seconds,
        samplesPerSec: shuffled.y.length / seconds,
      };
      out.push(s);
      await opts.onEpoch?.(s);
    }
  } finally {
    if (!('unsupported' in step)) step.dispose();
  }
  return 'unsupported' in step ? { stats: out, loop: 'model.fit', fitBecause: step.unsupported } : { stats: out, loop: 'step' };
}
