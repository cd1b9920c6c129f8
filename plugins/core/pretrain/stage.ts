import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { BackendName } from '../../../ml/backend.js';
import { readDatasetManifest } from '../../../ml/data/dataset.js';
import { runChildJob, type ChildJobOutcome } from '../../../ml/training/child-runner.js';
import type { PretrainJob, PretrainProgress, PretrainResult } from '../../../ml/training/jobs.js';
import { PLUGIN_API_VERSION, defineStage, type StageContext } from '../../contract.js';
import { cleanMetrics } from '../clean-metrics.js';
import { badInput } from '../../../lib/errors.js';
import { DEFAULT_MAX_MODEL_PARAMETERS, parameterCeilingProblem, pretrainCheckpointSchema, pretrainParamsSchemaFor, type PretrainParams } from './params.js';
import { relayLogLine } from '../../../lib/logger.js';

export interface PretrainOptions {
  /** Backend to prefer in the training process (CAPSTAN_TF_BACKEND at the entry point); default: best available. */
  tfBackend?: BackendName;
  /** Largest model it builds, in trainable parameters (CAPSTAN_MAX_MODEL_PARAMETERS; default 50 M): refused before anything trains. */
  maxParameters?: number;
}

/**
 * `core:pretrain`: trains the classifier on a dataset artifact in a child process, heartbeats
 * `{ epoch, checkpoint }` after every epoch, and on a retry resumes from that checkpoint.
 */
export function pretrainStage(opts: PretrainOptions = {}) {
  return defineStage({
    name: 'core:pretrain',
    estimateScale: { work: ['epochs'] },
    version: '1.1.0',
    apiVersion: PLUGIN_API_VERSION,
    description:
      'Trains a classifier (default: the seed MLP 784-128-10; or model.layers, e.g. a small conv net), Adam 1e-3, batch 32, with the step loop (model.fit when a model needs it), per-epoch checkpoints; resumes on retry.',
    paramsSchema: pretrainParamsSchemaFor(opts.maxParameters !== undefined ? { maxParameters: opts.maxParameters } : {}),
    consumes: ['dataset'],
    produces: ['model'],
    resource: 'cpu',
    retry: { maximumAttempts: 3 },
    timeouts: { startToCloseMs: 2 * 60 * 60_000, heartbeatMs: 60_000 },
    async run(ctx, params, inputs) {
      const datasetDir = await ctx.localPath(inputs.dataset);
      const manifest = await readDatasetManifest(datasetDir); // bad data fails here, before a process starts
      // Validation assumed MNIST-sized rows; the real rows may be wider (a CSV with many columns).
      const tooBig = parameterCeilingProblem(params.model, manifest, opts.maxParameters ?? DEFAULT_MAX_MODEL_PARAMETERS);
      if (tooBig) throw badInput(`stage ${ctx.stageId}: ${tooBig}`, 'RESOURCE_CEILING');

      const resume = await resumePoint(ctx, params);
      if (resume) ctx.logger.info('resuming pretrain from checkpoint', { epoch: resume.epoch, dir: resume.dir });
      const ckptRoot = await ctx.checkpointDir(resume ? {} : { fresh: true });
      let out!: ChildJobOutcome<PretrainResult>;
      const ref = await ctx.output('model', async (outDir) => {
        const job: PretrainJob = {
          kind: 'pretrain',
          ...(opts.tfBackend ? { backend: opts.tfBackend } : {}),
          datasetDir,
          outDir,
          checkpointDir: ckptRoot,
          ...(resume ? { resume } : {}),
          model: params.model,
          epochs: params.epochs,
          batchSize: params.batchSize,
          learningRate: params.learningRate,
          seed: params.seed,
        };
        let lastBeat: { epoch: number; checkpoint?: string } = resume ? { epoch: resume.epoch, checkpoint: ctx.checkpointUri(resume.dir) } : { epoch: 0 };
        out = await runChildJob<PretrainResult>({
          job,
          jobFile: path.join(ckptRoot, `job-attempt-${ctx.attempt}.json`),
          signal: ctx.signal,
          onUsage: (u) => ctx.meter.running?.(u),
          onStderr: (line) => relayLogLine(ctx.logger, line),
          onAlive: () => ctx.heartbeat(lastBeat),
          onProgress: (d) => {
            const p = d as PretrainProgress;
            lastBeat = { epoch: p.epoch, checkpoint: ctx.checkpointUri(p.checkpointDir) };
            ctx.heartbeat(lastBeat);
            ctx.logger.info(`epoch ${p.epoch}/${params.epochs}`, {
              trainLoss: p.trainLoss,
              trainAccuracy: p.trainAccuracy,
              valLoss: p.valLoss,
              valAccuracy: p.valAccuracy,
            });
          },
        });
        return { format: 'tfjs-layers', parameters: out.result.parameters, epochs: params.epochs, testAccuracy: out.result.test.accuracy };
      });
      ctx.meter.add({ cpuSeconds: out.cpuSeconds });
      const r = out.result;
      const last = r.history[r.history.length - 1];
      const perEpoch: Record<string, number> = {};
      for (const h of r.history) {
        const k = `epoch${String(h.epoch).padStart(2, '0')}`;
        perEpoch[`${k}TrainLoss`] = h.trainLoss;
        perEpoch[`${k}TrainAccuracy`] = h.trainAccuracy;
        perEpoch[`${k}ValLoss`] = h.valLoss;
        perEpoch[`${k}ValAccuracy`] = h.valAccuracy;
      }
      return {
        outputs: { model: ref },
        metrics: cleanMetrics({
          tfBackend: r.backend,
          trainLoop: r.trainLoop,
          fitBecause: r.fitBecause,
          epochs: params.epochs,
          epochsRun: r.history.length,
          resumedFromEpoch: r.resumedFromEpoch,
          trainLoss: last?.trainLoss,
          trainAccuracy: last?.trainAccuracy,
          valLoss: last?.valLoss,
          valAccuracy: last?.valAccuracy,
          testLoss: r.test.loss,
          testAccuracy: r.test.accuracy,
          testCount: r.test.count,
          samplesPerSec: r.samplesPerSec,
          trainSeconds: r.trainSeconds,
          parameters: r.parameters,
          cpuSeconds: out.cpuSeconds,
          wallSeconds: out.wallSeconds,
          ...perEpoch,
        }),
      };
    },
  });
}

/** The checkpoint of the previous attempt, if it is usable (well-formed and still on disk). */
async function resumePoint(ctx: StageContext, params: PretrainParams): Promise<{ epoch: number; dir: string } | undefined> {
  const parsed = pretrainCheckpointSchema.safeParse(ctx.lastCheckpoint);
  if (!parsed.success || parsed.data.epoch === 0) return undefined;
  try {
    const dir = await ctx.localPath(parsed.data.checkpoint);
    await stat(path.join(dir, 'model.json'));
    return { epoch: Math.min(parsed.data.epoch, params.epochs), dir };
  } catch {
    ctx.logger.warn('last checkpoint is not usable; training from epoch 0', { checkpoint: parsed.data.checkpoint });
    return undefined;
  }
}
