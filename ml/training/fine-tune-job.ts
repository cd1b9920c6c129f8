import type * as TF from '@tensorflow/tfjs';
import { loadTf } from '../backend.js';
import { createMaskApplier } from '../compression/apply-masks.js';
import { readMasks } from '../compression/masks.js';
import { applyMask, decodeFloatWeights, encodeFloatWeights, type ModelArtifacts } from '../compression/weights.js';
import { batchTensor, loadSplit } from '../evaluation/evaluate.js';
import { folderLoadHandler, folderSaveHandler, loadModel } from '../models/io.js';
import { writeCheckpoint } from './checkpoints.js';
import { ensureConvFilterGrad } from './step-kernels.js';
import { createStepLoop } from './step-loop.js';
import type { FineTuneJob, FineTuneProgress, FineTuneResult } from './jobs.js';

/**
 * Masked fine-tune of a pruned model (in the child process): one train step per batch in data
 * order, the masks re-applied after each step, a checkpoint with optimizer state after every
 * epoch. The step loop trains when the model allows it (model.trainOnBatch otherwise). Writes the float32 weights in the input's order with pruned values exactly +0.
 */
export async function runFineTuneJob(job: FineTuneJob, progress: (p: FineTuneProgress) => void): Promise<FineTuneResult> {
  const { tf, backend } = await loadTf(job.backend ? { prefer: job.backend } : {});
  ensureConvFilterGrad(tf); // conv nets on wasm: its Conv2DBackpropFilter kernel is ours
  const train = await loadSplit(job.datasetDir, { split: 'train', ...(job.samples ? { limit: job.samples } : {}) });
  const pruned = await folderLoadHandler(tf, job.modelDir).load!();
  const masks = (await readMasks(job.modelDir)) ?? [];

  let model: TF.LayersModel;
  let fromEpoch = 0;
  if (job.resume) {
    // A checkpoint carries its training config and Adam state; compile only if it did not.
    model = await loadModel(tf, job.resume.dir);
    if (!model.optimizer) model.compile({ optimizer: tf.train.adam(job.learningRate), loss: 'categoricalCrossentropy' });
    fromEpoch = Math.min(job.resume.epoch, job.epochs);
  } else {
    model = await tf.loadLayersModel(memoryLoader(pruned));
    model.compile({ optimizer: tf.train.adam(job.learningRate), loss: 'categoricalCrossentropy' });
  }
  const applier = createMaskApplier(tf, model, masks);
  // The step loop (ml/training/step-loop.ts) keeps the masks itself, after every Adam update.
  const loop = await createStepLoop(tf, model, { masks: masks.map((m) => ({ name: m.name, keep: m.keep })) });
  const stepsPerEpoch = Math.ceil(train.count / job.batchSize);
  let lastLoss = NaN;
  let step = fromEpoch * stepsPerEpoch;
  let checkpointDir = job.resume?.dir;
  try {
    const rowSize = train.featureShape.reduce((a, b) => a * b, 1);
    for (let epoch = fromEpoch + 1; epoch <= job.epochs && !('unsupported' in loop); epoch++) {
      const r = await loop.trainPass(
        { x: train.x, y: train.y, featureShape: train.featureShape },
        {
          batchSize: job.batchSize,
          seed: epoch,
          onStep: () => {
            step++;
            progress({ epoch: epoch - 1, step, ...(checkpointDir ? { checkpointDir } : {}), loss: lastLoss });
          },
        },
      );
      lastLoss = r.loss;
      await loop.commit();
      checkpointDir = await writeCheckpoint(model, job.checkpointDir, epoch);
      progress({ epoch, step, checkpointDir, loss: lastLoss, epochDone: true });
    }
    for (let epoch = fromEpoch + 1; epoch <= job.epochs && 'unsupported' in loop; epoch++) {
      for (let start = 0; start < train.count; start += job.batchSize) {
        const end = Math.min(train.count, start + job.batchSize);
        const xs = batchTensor(tf, model, train.x, rowSize, start, end);
        const ys = tf.tidy(() => tf.oneHot(tf.tensor1d(Int32Array.from(train.y.subarray(start, end)), 'int32'), train.numClasses));
        try {
          const loss = await model.trainOnBatch(xs, ys);
          lastLoss = Array.isArray(loss) ? loss[0]! : loss;
        } finally {
          xs.dispose();
          ys.dispose();
        }
        applier.apply();
        step++;
        progress({ epoch: epoch - 1, step, ...(checkpointDir ? { checkpointDir } : {}), loss: lastLoss });
        // Let the child's timers and output run between batches.
        await tf.nextFrame();
      }
      checkpointDir = await writeCheckpoint(model, job.checkpointDir, epoch);
      progress({ epoch, step, checkpointDir, loss: lastLoss, epochDone: true });
    }

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
    const weights = decodeFloatWeights(pruned).map((w) => byName.get(w.name) ?? w);
    // Masked values are written as +0 (x × 0 on a negative weight gives -0 in the live model).
    for (const m of masks) {
      const w = weights.find((x) => x.name === m.name);
      if (w) applyMask(w.values, m.keep);
    }
    await folderSaveHandler(job.outDir).save!({ ...pruned, ...encodeFloatWeights(weights) });
    return { backend, trainLoop: 'unsupported' in loop ? 'model.fit' : 'step', resumedFromEpoch: fromEpoch, epochs: job.epochs, steps: step, lastLoss };
  } finally {
    if (!('unsupported' in loop)) loop.dispose();
    applier.dispose();
    model.dispose();
  }
}

function memoryLoader(artifacts: ModelArtifacts): TF.io.IOHandler {
  return { load: async () => artifacts };
}
