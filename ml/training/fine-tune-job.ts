import type * as TF from '@tensorflow/tfjs';
import { loadTf } from '../backend.js';
import { createMaskApplier, type MaskApplier } from '../compression/apply-masks.js';
import { readMasks, writeMasks } from '../compression/masks.js';
import { gradualSchedule, isPruningStep, sparsityAfter, sparsityAt } from '../compression/schedule.js';
import { applyMask, decodeFloatWeights, encodeFloatWeights, isPrunable, magnitudePrune, type ModelArtifacts, type WeightMask } from '../compression/weights.js';
import { mixSeed, permutation } from '../data/rng.js';
import { batchTensor, loadSplit } from '../evaluation/evaluate.js';
import { folderLoadHandler, folderSaveHandler, loadModel } from '../models/io.js';
import { writeCheckpoint } from './checkpoints.js';
import { ensureConvFilterGrad } from './step-kernels.js';
import { createStepLoop } from './step-loop.js';
import { subset, type LabelledArrays } from './train-loop.js';
import type { FineTuneJob, FineTuneProgress, FineTuneResult } from './jobs.js';

/** The fine-tune's shuffle seed when the job names none. */
export const DEFAULT_FINE_TUNE_SEED = 42;

/**
 * The rows of epoch `epoch` (1-based) in their training order: a seeded permutation, different
 * every epoch and the same for the same seed and epoch (so a resumed fine-tune sees what the
 * first attempt would have).
 */
export function fineTuneOrder(count: number, seed: number, epoch: number): Uint32Array {
  return permutation(count, mixSeed(seed, epoch, 0xf1e7));
}

/** Masks pruning `sparsity` of each prunable weight by magnitude (the values are not changed). */
export function magnitudeMasks(weights: Map<string, Float32Array>, shapes: Map<string, number[]>, sparsity: number): WeightMask[] {
  return [...shapes].map(([name, shape]) => {
    const values = weights.get(name);
    if (!values) throw new Error(`no values for weight ${name}`);
    return { name, shape, keep: magnitudePrune(Float32Array.from(values), sparsity) };
  });
}

/** What the pruning needs of the loop that trains: read the weights, set new masks (zeroing what they prune). */
interface MaskTarget {
  read(): Map<string, Float32Array>;
  set(masks: WeightMask[]): void;
}

/**
 * Masked fine-tune of a pruned model (in the child process): each epoch in its own seeded order
 * (fineTuneOrder), the masks re-applied after every step, a checkpoint with optimizer state after
 * every epoch. With `job.prune` the input is the unpruned model and the pruning is gradual: the
 * masks are recomputed by magnitude on the polynomial schedule of ml/compression/schedule.ts and
 * written beside the output. The step loop trains when the model allows it (model.trainOnBatch
 * otherwise, with the reason in the result). Writes the float32 weights in the input's order with
 * pruned values exactly +0.
 */
export async function runFineTuneJob(job: FineTuneJob, progress: (p: FineTuneProgress) => void): Promise<FineTuneResult> {
  const { tf, backend } = await loadTf(job.backend ? { prefer: job.backend } : {});
  ensureConvFilterGrad(tf); // conv nets on wasm: its Conv2DBackpropFilter kernel is ours
  const train = await loadSplit(job.datasetDir, { split: 'train', ...(job.samples ? { limit: job.samples } : {}) });
  const input = await folderLoadHandler(tf, job.modelDir).load!();
  const seed = job.seed ?? DEFAULT_FINE_TUNE_SEED;

  let model: TF.LayersModel;
  let fromEpoch = 0;
  if (job.resume) {
    // A checkpoint carries its training config and Adam state. Compiled again with its own optimizer
    // (state kept) and integer labels' loss: checkpoints written before 1.2.0 say categorical
    // cross-entropy, which the step loop refuses and the fallback's integer labels would not fit.
    model = await loadModel(tf, job.resume.dir);
    model.compile({ optimizer: model.optimizer ?? tf.train.adam(job.learningRate), loss: 'sparseCategoricalCrossentropy' });
    fromEpoch = Math.min(job.resume.epoch, job.epochs);
  } else {
    model = await tf.loadLayersModel(memoryLoader(input));
    model.compile({ optimizer: tf.train.adam(job.learningRate), loss: 'sparseCategoricalCrossentropy' });
  }
  const stepsPerEpoch = Math.ceil(train.count / job.batchSize);
  const totalSteps = stepsPerEpoch * job.epochs;
  const prunable = new Map(
    model.weights.filter((w) => isPrunable({ name: w.originalName, shape: w.shape as number[] })).map((w) => [w.originalName, w.shape as number[]]),
  );
  const schedule = job.prune
    ? gradualSchedule({ target: job.prune.target, totalSteps, frequency: job.prune.frequency, endFraction: job.prune.endFraction })
    : undefined;
  let step = fromEpoch * stepsPerEpoch;

  // The masks to start from: the input's (one-shot), or those of the schedule at `step` computed from
  // the weights as they are (a resumed checkpoint already holds that many zeros; a fresh start none).
  let masks: WeightMask[] = schedule ? [] : ((await readMasks(job.modelDir)) ?? []);
  const loop = await createStepLoop(tf, model, { masks: masks.map((m) => ({ name: m.name, keep: m.keep })) });
  const fitBecause = 'unsupported' in loop ? loop.unsupported : undefined;
  let applier: MaskApplier = createMaskApplier(tf, model, masks);
  const target: MaskTarget =
    'unsupported' in loop
      ? {
          read: () => new Map(model.weights.map((w) => [w.originalName, Float32Array.from(w.read().dataSync() as Float32Array)])),
          set(next) {
            applier.dispose();
            applier = createMaskApplier(tf, model, next);
            applier.apply();
          },
        }
      : { read: () => loop.readWeights(), set: (next) => loop.setMasks(next) };
  let sparsity = -1; // of the current masks (gradual pruning only)
  const pruneTo = (s: number) => {
    masks = magnitudeMasks(target.read(), prunable, s);
    target.set(masks);
    sparsity = s;
  };
  const maybePrune = () => {
    if (schedule && isPruningStep(schedule, step) && sparsityAt(schedule, step) !== sparsity) pruneTo(sparsityAt(schedule, step));
  };
  if (schedule) pruneTo(sparsityAfter(schedule, step));

  let lastLoss = NaN;
  let checkpointDir = job.resume?.dir;
  try {
    for (let epoch = fromEpoch + 1; epoch <= job.epochs; epoch++) {
      const data = subset({ x: train.x, y: train.y, featureShape: train.featureShape }, fineTuneOrder(train.count, seed, epoch));
      const onStep = () => {
        step++;
        maybePrune();
        progress({ epoch: epoch - 1, step, ...(checkpointDir ? { checkpointDir } : {}), loss: lastLoss });
      };
      if ('unsupported' in loop) {
        lastLoss = await trainOnBatches(tf, model, data, job.batchSize, () => {
          applier.apply();
          onStep();
        });
      } else {
        lastLoss = (await loop.trainPass(data, { batchSize: job.batchSize, seed: mixSeed(seed, epoch), onStep })).loss;
        await loop.commit();
      }
      checkpointDir = await writeCheckpoint(model, job.checkpointDir, epoch);
      progress({ epoch, step, checkpointDir, loss: lastLoss, epochDone: true });
    }
    // The schedule ends within the steps, so this only matters when it was cut short.
    if (schedule && sparsity !== schedule.finalSparsity) pruneTo(schedule.finalSparsity);
    if (!('unsupported' in loop)) await loop.commit();

    let saved: ModelArtifacts | undefined;
    await model.save({
      save: async (a: ModelArtifacts) => {
        saved = a;
        return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
      },
    });
    if (!saved) throw new Error('fine-tuned model could not be captured');
    // Keep the original order and names of the input manifest.
    const byName = new Map(decodeFloatWeights(saved).map((w) => [w.name, w]));
    const weights = decodeFloatWeights(input).map((w) => byName.get(w.name) ?? w);
    // Masked values are written as +0 (x × 0 on a negative weight gives -0 in the live model).
    for (const m of masks) {
      const w = weights.find((x) => x.name === m.name);
      if (w) applyMask(w.values, m.keep);
    }
    await folderSaveHandler(job.outDir).save!({ ...input, ...encodeFloatWeights(weights) });
    if (schedule) await writeMasks(job.outDir, masks);
    return {
      backend,
      trainLoop: 'unsupported' in loop ? 'model.fit' : 'step',
      ...(fitBecause ? { fitBecause } : {}),
      resumedFromEpoch: fromEpoch,
      epochs: job.epochs,
      steps: step,
      lastLoss,
      ...(schedule
        ? { schedule: { kind: 'gradual' as const, endStep: schedule.endStep, frequency: schedule.frequency, finalSparsity: schedule.finalSparsity } }
        : {}),
      shuffleSeed: seed,
    };
  } finally {
    if (!('unsupported' in loop)) loop.dispose();
    applier.dispose();
    model.dispose();
  }
}

/** One pass with model.trainOnBatch (the fallback), integer labels as sparse cross-entropy takes them; the last batch's loss. */
async function trainOnBatches(tf: typeof TF, model: TF.LayersModel, d: LabelledArrays, batchSize: number, afterStep: () => void): Promise<number> {
  const rowSize = d.featureShape.reduce((a, b) => a * b, 1);
  let lastLoss = NaN;
  for (let start = 0; start < d.y.length; start += batchSize) {
    const end = Math.min(d.y.length, start + batchSize);
    const xs = batchTensor(tf, model, d.x, rowSize, start, end);
    const ys = tf.tensor1d(Float32Array.from(d.y.subarray(start, end)), 'float32');
    try {
      const loss = await model.trainOnBatch(xs, ys);
      lastLoss = Array.isArray(loss) ? loss[0]! : loss;
    } finally {
      xs.dispose();
      ys.dispose();
    }
    afterStep();
    // Let the child's timers and output run between batches.
    await tf.nextFrame();
  }
  return lastLoss;
}

function memoryLoader(artifacts: ModelArtifacts): TF.io.IOHandler {
  return { load: async () => artifacts };
}
