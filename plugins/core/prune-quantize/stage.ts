import { stat } from 'node:fs/promises';
import path from 'node:path';
import type * as TF from '@tensorflow/tfjs';
import { loadTf, type BackendName } from '../../../ml/backend.js';
import { readMasks } from '../../../ml/compression/masks.js';
import { countLiveZeros, encodeWeights, pruneModel, saveCompressedModel } from '../../../ml/compression/prune.js';
import {
  countZeros,
  decodeFloatWeights,
  encodeFloatWeights,
  joinWeightData,
  type FloatWeight,
  type ModelArtifacts,
  type WeightMask,
} from '../../../ml/compression/weights.js';
import { accuracy, checkCompatible, loadSplit, type EvalSplit } from '../../../ml/evaluation/evaluate.js';
import { folderLoadHandler } from '../../../ml/models/io.js';
import { runChildJob } from '../../../ml/training/child-runner.js';
import type { FineTuneJob, FineTuneProgress, FineTuneResult } from '../../../ml/training/jobs.js';
import { defineStage, PLUGIN_API_VERSION, type StageContext } from '../../contract.js';
import { fineTuneCheckpointSchema, pruneQuantizeParamsSchema, type FineTuneCheckpoint, type PruneQuantizeParams } from './params.js';
import { relayLogLine } from '../../../lib/logger.js';

export interface PruneQuantizeOptions {
  /** Backend to prefer, in process and in the fine-tune process (CAPSTAN_TF_BACKEND); default: best available. */
  tfBackend?: BackendName;
}

/**
 * `core:prune-quantize`: magnitude pruning (+ masks), optional masked fine-tune in a child process
 * (gradual pruning over its steps by default), post-training quantization.
 */
export function pruneQuantizeStage(opts: PruneQuantizeOptions = {}) {
  return defineStage({
    name: 'core:prune-quantize',
    estimateScale: { work: ['fineTuneEpochs'] },
    version: '1.2.0',
    apiVersion: PLUGIN_API_VERSION,
    description:
      'Prunes kernel weights by magnitude to a target sparsity (masks kept beside the model) — gradually over a fine-tune by default, or at once — fine-tunes with the masks applied, then quantizes weights to uint8/uint16/float16 in the tfjs weight-manifest format.',
    paramsSchema: pruneQuantizeParamsSchema,
    consumes: ['model', 'dataset'],
    produces: ['model'],
    resource: 'cpu',
    timeouts: { startToCloseMs: 30 * 60_000, heartbeatMs: 60_000 },
    async run(ctx, params, inputs) {
      const { tf, backend } = await loadTf(opts.tfBackend ? { prefer: opts.tfBackend } : {});
      const modelDir = await ctx.localPath(inputs.model);
      const datasetDir = await ctx.localPath(inputs.dataset);

      const original = await folderLoadHandler(tf, modelDir).load!();
      const pruned = pruneModel(original, params.sparsity);
      const test = await loadSplit(datasetDir, { split: 'test', ...(params.evalSamples ? { limit: params.evalSamples } : {}) });
      const accuracyBefore = await measure(tf, original, test);
      ctx.heartbeat({ phase: 'pruning' });

      let weights = pruned.weights;
      let fineTuned: FineTuneResult | undefined;
      const gradual = params.schedule === 'gradual' && params.fineTuneEpochs > 0 && params.sparsity > 0;
      if (gradual) {
        // The fine-tune starts from the unpruned weights and prunes them on its schedule.
        ({ weights, masks: pruned.masks, result: fineTuned } = await fineTune(ctx, tf, opts, params, original, [], datasetDir));
        ({ zeros: pruned.zeros, total: pruned.total } = countZeros(weights));
      } else if (params.fineTuneEpochs > 0 && params.sparsity > 0) {
        ({ weights, result: fineTuned } = await fineTune(
          ctx,
          tf,
          opts,
          params,
          { ...original, ...encodeFloatWeights(pruned.weights) },
          pruned.masks,
          datasetDir,
        ));
      }

      const encoded = encodeWeights(weights, params.quantize);
      const weightBytesAfter = joinWeightData(encoded.weightData).byteLength;
      const sparsity = pruned.total ? pruned.zeros / pruned.total : 0;
      let accuracyAfter = 0;
      let zerosAfter = 0;
      const ref = await ctx.output('model', async (dir) => {
        await saveCompressedModel(dir, original, encoded, pruned.masks, { capstan: { stage: 'core:prune-quantize', sparsity, quantize: params.quantize } });
        // Accuracy after: the folder as any consumer loads it (dequantized by tfjs itself).
        const after = await tf.loadLayersModel(folderLoadHandler(tf, dir));
        try {
          accuracyAfter = await accuracy(tf, after, test);
          zerosAfter = countLiveZeros(after, new Set(pruned.masks.map((m) => m.name)));
        } finally {
          after.dispose();
        }
        return { format: 'tfjs-layers', sparsity, quantization: params.quantize, masks: pruned.masks.length > 0 };
      });
      ctx.logger.info('pruned and quantized', {
        sparsity,
        quantize: params.quantize,
        weightBytesBefore: pruned.weightBytes,
        weightBytesAfter,
        accuracyBefore,
        accuracyAfter,
      });
      return {
        outputs: { model: ref },
        metrics: {
          sparsity,
          targetSparsity: params.sparsity,
          prunedWeights: pruned.zeros,
          prunableWeights: pruned.total,
          sparsityAfterQuantization: pruned.total ? zerosAfter / pruned.total : 0,
          quantization: params.quantize,
          weightBytesBefore: pruned.weightBytes,
          weightBytesAfter,
          compressionRatio: weightBytesAfter ? pruned.weightBytes / weightBytesAfter : 0,
          testAccuracyBefore: accuracyBefore,
          testAccuracyAfter: accuracyAfter,
          evalSplit: test.split,
          evalRows: test.count,
          fineTuneEpochs: fineTuned?.epochs ?? 0,
          pruningSchedule: gradual ? 'gradual' : 'oneshot',
          ...(fineTuned
            ? {
                fineTuneSteps: fineTuned.steps,
                fineTuneLoss: fineTuned.lastLoss,
                fineTuneResumedFromEpoch: fineTuned.resumedFromEpoch,
                fineTuneLoop: fineTuned.trainLoop,
              }
            : {}),
          ...(fineTuned?.fitBecause ? { fineTuneFitBecause: fineTuned.fitBecause } : {}),
          ...(fineTuned?.schedule ? { pruningEndStep: fineTuned.schedule.endStep, pruningFrequency: fineTuned.schedule.frequency } : {}),
          tfBackend: backend,
        },
      };
    },
  });
}

/** Test accuracy of in-memory model artifacts, after refusing a model that does not fit the data. */
async function measure(tf: typeof TF, artifacts: ModelArtifacts, test: EvalSplit): Promise<number> {
  const model = await tf.loadLayersModel({ load: async () => artifacts });
  try {
    checkCompatible(model, test);
    return await accuracy(tf, model, test);
  } finally {
    model.dispose();
  }
}

/**
 * The masked fine-tune, as a child-process job (ADR 0004): heartbeats `{ phase, epoch, checkpoint }`
 * after every epoch and, on a retry, resumes from the last checkpoint instead of epoch 0. With the
 * gradual schedule `pruned` is the unpruned model, `masks` is empty, and the masks come back from
 * the job (written beside its output).
 */
async function fineTune(
  ctx: StageContext,
  tf: typeof TF,
  opts: PruneQuantizeOptions,
  params: PruneQuantizeParams,
  pruned: ModelArtifacts,
  masks: WeightMask[],
  datasetDir: string,
): Promise<{ weights: FloatWeight[]; masks: WeightMask[]; result: FineTuneResult }> {
  const resume = await resumePoint(ctx, params);
  if (resume) ctx.logger.info('resuming fine-tune from checkpoint', { epoch: resume.epoch });
  // Pruning is deterministic, so the pruned model is simply written again on every attempt.
  const root = await ctx.checkpointDir(resume ? {} : { fresh: true });
  const modelDir = path.join(root, 'pruned');
  const outDir = path.join(root, 'fine-tuned');
  await saveCompressedModel(modelDir, pruned, { weightSpecs: pruned.weightSpecs ?? [], weightData: joinWeightData(pruned.weightData) }, masks);
  const job: FineTuneJob = {
    kind: 'fine-tune',
    ...(opts.tfBackend ? { backend: opts.tfBackend } : {}),
    datasetDir,
    modelDir,
    outDir,
    checkpointDir: path.join(root, 'epochs'),
    ...(resume ? { resume } : {}),
    epochs: params.fineTuneEpochs,
    batchSize: params.batchSize,
    learningRate: params.learningRate,
    ...(params.fineTuneSamples ? { samples: params.fineTuneSamples } : {}),
    seed: params.seed,
    ...(params.schedule === 'gradual'
      ? { prune: { target: params.sparsity, frequency: params.pruningFrequency, endFraction: params.pruningEndFraction } }
      : {}),
  };
  let lastBeat: FineTuneCheckpoint = resume
    ? { phase: 'fine-tune', epoch: resume.epoch, step: 0, checkpoint: ctx.checkpointUri(resume.dir) }
    : { phase: 'fine-tune', epoch: 0, step: 0 };
  const out = await runChildJob<FineTuneResult>({
    job,
    jobFile: path.join(root, `job-attempt-${ctx.attempt}.json`),
    signal: ctx.signal,
    onUsage: (u) => ctx.meter.running?.(u),
    onStderr: (line) => relayLogLine(ctx.logger, line),
    onAlive: () => ctx.heartbeat(lastBeat),
    onProgress: (d) => {
      const p = d as FineTuneProgress;
      lastBeat = { phase: 'fine-tune', epoch: p.epoch, step: p.step, ...(p.checkpointDir ? { checkpoint: ctx.checkpointUri(p.checkpointDir) } : {}) };
      ctx.heartbeat(lastBeat);
      if (p.epochDone) ctx.logger.info(`fine-tune epoch ${p.epoch}/${params.fineTuneEpochs}`, { loss: p.loss });
    },
  });
  ctx.meter.add({ cpuSeconds: out.cpuSeconds });
  const weights = decodeFloatWeights(await folderLoadHandler(tf, outDir).load!());
  return { weights, masks: job.prune ? ((await readMasks(outDir)) ?? []) : masks, result: out.result };
}

/** The fine-tune checkpoint of the previous attempt, if it is usable (well-formed and still on disk). */
async function resumePoint(ctx: StageContext, params: PruneQuantizeParams): Promise<{ epoch: number; dir: string } | undefined> {
  const parsed = fineTuneCheckpointSchema.safeParse(ctx.lastCheckpoint);
  if (!parsed.success || parsed.data.epoch === 0 || !parsed.data.checkpoint) return undefined;
  try {
    const dir = await ctx.localPath(parsed.data.checkpoint);
    await stat(path.join(dir, 'model.json'));
    return { epoch: Math.min(parsed.data.epoch, params.fineTuneEpochs), dir };
  } catch {
    ctx.logger.warn('last fine-tune checkpoint is not usable; fine-tuning from epoch 0', { checkpoint: parsed.data.checkpoint });
    return undefined;
  }
}
