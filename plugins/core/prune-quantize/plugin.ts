import { z } from 'zod';
import type * as TF from '@tensorflow/tfjs';
import { defineStage, PLUGIN_API_VERSION, type ArtifactRef, type StageContext, type StageResult } from '../../contract.js';
import { badInput, StageError } from '../../../lib/errors.js';
import { loadTf } from '../../../ml/backend.js';
import { folderLoadHandler, folderSaveHandler } from '../../../ml/models/io.js';
import { accuracy, batchTensor, checkCompatible, loadSplit, type EvalSplit } from '../../../serving/evaluate.js';
import { createMaskApplier } from './apply-masks.js';
import { writeMasks } from './masks.js';
import { applyMask, countZeros, decodeFloatWeights, encodeFloatWeights, joinWeightData, pruneWeights, quantizeWeights, type FloatWeight, type ModelArtifacts, type WeightMask } from './weights.js';

export const pruneQuantizeParamsSchema = z
  .object({
    /** Fraction of each kernel's weights set to zero (smallest magnitudes first). */
    sparsity: z.number().min(0).max(0.99).default(0.5),
    /** Epochs of fine-tuning after pruning (pruned weights stay zero). 0 = none. */
    fineTuneEpochs: z.number().int().min(0).max(100).default(0),
    /** Use at most this many training rows for fine-tuning. */
    fineTuneSamples: z.number().int().positive().optional(),
    batchSize: z.number().int().positive().max(4096).default(64),
    learningRate: z.number().positive().max(1).default(0.001),
    /** Post-training weight quantization; 'none' keeps float32. */
    quantize: z.enum(['none', 'uint8', 'uint16', 'float16']).default('uint8'),
    /** Measure test accuracy on at most this many rows. */
    evalSamples: z.number().int().positive().optional(),
  })
  .strict();
export type PruneQuantizeParams = z.infer<typeof pruneQuantizeParamsSchema>;

/** `core:prune-quantize`: magnitude pruning (+ masks), optional masked fine-tune, post-training quantization. */
export function pruneQuantizeStage() {
  return defineStage<PruneQuantizeParams>({
    name: 'core:prune-quantize',
    version: '1.0.0',
    apiVersion: PLUGIN_API_VERSION,
    description: 'Prunes kernel weights by magnitude to a target sparsity (masks kept beside the model), optionally fine-tunes with the masks applied, then quantizes weights to uint8/uint16/float16 in the tfjs weight-manifest format.',
    paramsSchema: pruneQuantizeParamsSchema as z.ZodType<PruneQuantizeParams>,
    consumes: ['model', 'dataset'],
    produces: ['model'],
    resource: 'cpu',
    retry: { nonRetryableErrorTypes: ['BAD_INPUT', 'MODEL_DATASET_MISMATCH', 'MODEL_UNSUPPORTED', 'DATASET_SPLIT_MISSING', 'ARTIFACT_CORRUPT'] },
    timeouts: { startToCloseMs: 30 * 60_000, heartbeatMs: 60_000 },
    run: runPruneQuantize,
  });
}

async function runPruneQuantize(ctx: StageContext, params: PruneQuantizeParams, inputs: Record<string, ArtifactRef>): Promise<StageResult> {
  const modelRef = inputs.model;
  const datasetRef = inputs.dataset;
  if (!modelRef) throw badInput('core:prune-quantize needs a "model" input');
  if (!datasetRef) throw badInput('core:prune-quantize needs a "dataset" input');
  for (const ref of [modelRef, datasetRef]) {
    const v = await ctx.artifacts.verify(ref);
    if (!v.ok) throw badInput(v.reason, 'ARTIFACT_CORRUPT');
  }
  const { tf, backend } = await loadTf();
  const modelDir = ctx.artifacts.resolve(modelRef);
  const datasetDir = ctx.artifacts.resolve(datasetRef);

  const original = await folderLoadHandler(tf, modelDir).load!();
  let weights: FloatWeight[];
  try {
    weights = decodeFloatWeights(original);
  } catch (e) {
    throw badInput(`input model: ${(e as Error).message}`, 'MODEL_UNSUPPORTED');
  }
  const weightBytesBefore = weights.reduce((n, w) => n + w.values.byteLength, 0);

  const test = await loadSplit(datasetDir, { split: 'test', ...(params.evalSamples ? { limit: params.evalSamples } : {}) });
  const before = await tf.loadLayersModel(memoryLoader(original));
  let accuracyBefore: number;
  try {
    checkCompatible(before, test);
    accuracyBefore = await accuracy(tf, before, test);
  } finally {
    before.dispose();
  }
  ctx.heartbeat({ phase: 'pruning' });

  const masks = pruneWeights(weights, params.sparsity);
  if (masks.length === 0 && params.sparsity > 0) throw badInput('the model has no kernel weights to prune (only dense/conv kernels are pruned)', 'MODEL_UNSUPPORTED');
  const { zeros, total } = countZeros(weights);
  const sparsity = total ? zeros / total : 0;

  let fineTuned: { epochs: number; steps: number; lastLoss: number } | undefined;
  if (params.fineTuneEpochs > 0 && params.sparsity > 0) {
    const r = await fineTune(ctx, tf, { ...original, ...encodeFloatWeights(weights) }, masks, datasetDir, params);
    weights = r.weights;
    fineTuned = r.stats;
  }

  const encoded = params.quantize === 'none' ? encodeFloatWeights(weights) : quantizeWeights(weights, params.quantize);
  const outDir = await ctx.artifacts.freshDir(ctx.artifacts.dirFor(ctx.runId, ctx.stageId, 'model'));
  const weightBytesAfter = joinWeightData(encoded.weightData).byteLength;
  await folderSaveHandler(outDir).save!({
    ...original,
    ...encoded,
    generatedBy: original.generatedBy ?? 'capstan',
    userDefinedMetadata: {
      ...(original.userDefinedMetadata as Record<string, unknown> | undefined),
      capstan: { stage: 'core:prune-quantize', sparsity, quantize: params.quantize },
    },
  });
  if (masks.length) await writeMasks(outDir, masks);

  // Accuracy after: the folder as any consumer loads it (dequantized by tfjs itself).
  const after = await tf.loadLayersModel(folderLoadHandler(tf, outDir));
  let accuracyAfter: number;
  let zerosAfter: number;
  try {
    accuracyAfter = await accuracy(tf, after, test);
    zerosAfter = countLiveZeros(after, new Set(masks.map((m) => m.name)));
  } finally {
    after.dispose();
  }

  const ref = await ctx.artifacts.seal('model', outDir, {
    format: 'tfjs-layers',
    sparsity,
    quantization: params.quantize,
    masks: masks.length > 0,
  });
  ctx.logger.info('pruned and quantized', { sparsity, quantize: params.quantize, weightBytesBefore, weightBytesAfter, accuracyBefore, accuracyAfter });
  return {
    outputs: { model: ref },
    metrics: {
      sparsity,
      targetSparsity: params.sparsity,
      prunedWeights: zeros,
      prunableWeights: total,
      sparsityAfterQuantization: total ? zerosAfter / total : 0,
      quantization: params.quantize,
      weightBytesBefore,
      weightBytesAfter,
      compressionRatio: weightBytesAfter ? weightBytesBefore / weightBytesAfter : 0,
      testAccuracyBefore: accuracyBefore,
      testAccuracyAfter: accuracyAfter,
      evalSplit: test.split,
      evalRows: test.count,
      fineTuneEpochs: fineTuned?.epochs ?? 0,
      ...(fineTuned ? { fineTuneSteps: fineTuned.steps, fineTuneLoss: fineTuned.lastLoss } : {}),
      tfBackend: backend,
    },
  };
}

function memoryLoader(artifacts: ModelArtifacts): TF.io.IOHandler {
  return { load: async () => artifacts };
}

function countLiveZeros(model: TF.LayersModel, names: Set<string>): number {
  let zeros = 0;
  for (const w of model.weights) {
    if (!names.has(w.originalName)) continue;
    for (const v of w.read().dataSync()) if (v === 0) zeros++;
  }
  return zeros;
}

/**
 * Masked fine-tune, in process: one train step per batch, masks re-applied after each step, the
 * event loop yielded between batches (heartbeats and cancellation get through).
 */
async function fineTune(
  ctx: StageContext,
  tf: typeof TF,
  pruned: ModelArtifacts,
  masks: WeightMask[],
  datasetDir: string,
  params: PruneQuantizeParams,
): Promise<{ weights: FloatWeight[]; stats: { epochs: number; steps: number; lastLoss: number } }> {
  const train: EvalSplit = await loadSplit(datasetDir, { split: 'train', ...(params.fineTuneSamples ? { limit: params.fineTuneSamples } : {}) });
  const model = await tf.loadLayersModel(memoryLoader(pruned));
  const applier = createMaskApplier(tf, model, masks);
  let steps = 0;
  let lastLoss = NaN;
  try {
    model.compile({ optimizer: tf.train.adam(params.learningRate), loss: 'categoricalCrossentropy' });
    const rowSize = train.featureShape.reduce((a, b) => a * b, 1);
    for (let epoch = 0; epoch < params.fineTuneEpochs; epoch++) {
      for (let start = 0; start < train.count; start += params.batchSize) {
        if (ctx.signal.aborted) throw new StageError('fine-tuning cancelled', { type: 'CANCELLED', retryable: true });
        const end = Math.min(train.count, start + params.batchSize);
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
        steps++;
        ctx.heartbeat({ phase: 'fine-tune', epoch, step: steps });
        await tf.nextFrame();
      }
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
    return { weights, stats: { epochs: params.fineTuneEpochs, steps, lastLoss } };
  } finally {
    applier.dispose();
    model.dispose();
  }
}
