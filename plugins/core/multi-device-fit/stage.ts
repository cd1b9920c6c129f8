import { createHash } from 'node:crypto';
import { copyFile, readFile, stat, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import { badInput, StageError } from '../../../lib/errors.js';
import type { BackendName } from '../../../ml/backend.js';
import { readDatasetManifest } from '../../../ml/data/dataset.js';
import { runChildJob, type ChildJobOutcome } from '../../../ml/training/child-runner.js';
import type { EvaluateJob, EvaluateResult, ReplicaJob, ReplicaProgress, ReplicaResult } from '../../../ml/training/jobs.js';
import { averageFile, latestAveragedRound } from '../../../ml/training/replica-job.js';
import { PLUGIN_API_VERSION, defineStage, type ArtifactRef, type StageContext, type StageResult } from '../../contract.js';
import { cleanMetrics } from '../clean-metrics.js';
import { multiDeviceFitParamsSchema, replicaCheckpointSchema, type MultiDeviceFitParams } from './params.js';
import { relayLogLine } from '../../../lib/logger.js';

type FitInputs = { model: ArtifactRef; dataset: ArtifactRef };

export interface MultiDeviceFitOptions {
  /** Backend to prefer in the replica processes; default: best available. */
  tfBackend?: BackendName;
}

/**
 * The folder the replicas of one stage synchronise through (shared by all replicas and the
 * reduce). Keyed by the training params and the input hashes, so a stage re-run with other
 * params or inputs in the same run never mixes with older rounds; and inside the operator
 * retry's own shared folder (`retry-<n>`, see the stage context), so a retry never meets
 * leftovers of an earlier round.
 */
export async function syncDirOf(ctx: Pick<StageContext, 'checkpointDir'>, params: MultiDeviceFitParams, inputs: FitInputs): Promise<string> {
  const { syncTimeoutMs: _ignored, ...training } = params;
  const key = createHash('sha256')
    .update(JSON.stringify({ training, model: inputs.model.sha256, dataset: inputs.dataset.sha256 }))
    .digest('hex')
    .slice(0, 12);
  return path.join(await ctx.checkpointDir({ shared: true }), `sync-${key}`);
}

/**
 * `core:multi-device-fit`: data-parallel fine-tuning with local SGD. Each replica (its own
 * activity and its own process) trains on a shard and averages weights with the others every
 * `syncEverySteps` steps through the artifact store; `reduce` publishes the averaged model.
 */
export function multiDeviceFitStage(opts: MultiDeviceFitOptions = {}) {
  return defineStage({
    name: 'core:multi-device-fit',
    estimateScale: { work: ['epochs'] },
    version: '1.2.0',
    apiVersion: PLUGIN_API_VERSION,
    description: 'Data-parallel training over N devices (GPUs or CPU processes), weights averaged every K steps (local SGD); keeps pruning masks.',
    paramsSchema: multiDeviceFitParamsSchema,
    consumes: ['model', 'dataset'],
    produces: ['model'],
    resource: 'gpu',
    retry: { maximumAttempts: 3 },
    timeouts: { startToCloseMs: 2 * 60 * 60_000, heartbeatMs: 60_000 },
    dataParallel: {
      replicas: (params) => params.replicas,
      reduce: (ctx, params, inputs, results) => reduce(ctx, params, inputs, results, opts),
    },
    run: (ctx, params, inputs) => runReplica(ctx, params, inputs, opts),
  });
}

async function checkInputs(ctx: StageContext, inputs: FitInputs): Promise<{ modelDir: string; datasetDir: string }> {
  const modelDir = await ctx.localPath(inputs.model);
  const datasetDir = await ctx.localPath(inputs.dataset);
  try {
    await stat(path.join(modelDir, 'model.json'));
  } catch {
    throw badInput(`${path.join(modelDir, 'model.json')}: input model has no model.json`, 'DATA_NOT_FOUND', { file: path.join(modelDir, 'model.json') });
  }
  await readDatasetManifest(datasetDir);
  return { modelDir, datasetDir };
}

async function runReplica(ctx: StageContext, params: MultiDeviceFitParams, inputs: FitInputs, opts: MultiDeviceFitOptions): Promise<StageResult> {
  const { modelDir, datasetDir } = await checkInputs(ctx, inputs);
  const replica = ctx.replica ?? { index: 0, count: params.replicas };
  if (replica.count !== params.replicas) throw badInput(`replica count ${replica.count} differs from params.replicas ${params.replicas}`, 'BAD_INPUT');
  const syncDir = await syncDirOf(ctx, params, inputs);
  const hint = replicaCheckpointSchema.safeParse(ctx.lastCheckpoint);
  // The device comes from the worker's pool (the dispatch holds it for this attempt), never from the replica index.
  const device = ctx.device;
  ctx.logger.info(`replica ${replica.index}/${replica.count} on ${device ? `${device.host} ${device.label}` : `${hostname()} (no device pool)`}`);
  let out!: ChildJobOutcome<ReplicaResult>;
  const ref = await ctx.output('model', async (outDir) => {
    const job: ReplicaJob = {
      kind: 'replica',
      ...(opts.tfBackend ? { backend: opts.tfBackend } : {}),
      datasetDir,
      modelDir,
      syncDir,
      outDir,
      replica,
      epochs: params.epochs,
      batchSize: params.batchSize,
      learningRate: params.learningRate,
      syncEverySteps: params.syncEverySteps,
      seed: params.seed,
      syncTimeoutMs: params.syncTimeoutMs,
      ...(hint.success ? { resumeRound: hint.data.round } : {}),
    };
    let lastBeat: { round: number; checkpoint?: string; barrier?: ReplicaProgress['barrier'] } = hint.success ? hint.data : { round: 0 };
    out = await runChildJob<ReplicaResult>({
      job,
      jobFile: path.join(await ctx.checkpointDir(), `job-attempt-${ctx.attempt}.json`),
      signal: ctx.signal,
      env: device?.env ?? {},
      onStderr: (line) => relayLogLine(ctx.logger, line),
      onAlive: () => ctx.heartbeat(lastBeat),
      onProgress: (d) => {
        const p = d as ReplicaProgress;
        lastBeat = p.round > 0 ? { round: p.round, checkpoint: ctx.checkpointUri(p.checkpoint) } : { round: 0 };
        // At a round's barrier: whom this replica waits for (StageRun.wait shows it, engine/read-model.ts).
        if (p.barrier) lastBeat.barrier = p.barrier;
        ctx.heartbeat(lastBeat);
        if (!p.waitingForPeers) ctx.logger.info(`replica ${replica.index}: round ${p.round}/${p.rounds}`);
      },
    });
    return { format: 'tfjs-layers', replica: replica.index, rounds: out.result.rounds };
  });
  ctx.meter.add({ cpuSeconds: out.cpuSeconds });
  const r = out.result;
  return {
    outputs: { model: ref },
    metrics: cleanMetrics({
      tfBackend: r.backend,
      trainLoop: r.trainLoop,
      fitBecause: r.fitBecause,
      averagedOptimizerState: r.averagedOptimizerState,
      replica: replica.index,
      replicas: replica.count,
      device: device?.label ?? `cpu-process:${replica.index}`,
      host: device?.host ?? hostname(),
      rounds: r.rounds,
      resumedFromRound: r.resumedFromRound,
      steps: r.steps,
      samples: r.samples,
      shardSize: r.shardSize,
      trainSeconds: r.trainSeconds,
      waitSeconds: r.waitSeconds,
      samplesPerSec: r.samplesPerSec,
      valLoss: r.validation.loss,
      valAccuracy: r.validation.accuracy,
      prunedWeights: r.prunedWeights,
      cpuSeconds: out.cpuSeconds,
      wallSeconds: out.wallSeconds,
    }),
  };
}

async function reduce(
  ctx: StageContext,
  params: MultiDeviceFitParams,
  inputs: FitInputs,
  results: StageResult[],
  opts: MultiDeviceFitOptions,
): Promise<StageResult> {
  const { modelDir: inputModelDir, datasetDir } = await checkInputs(ctx, inputs);
  if (results.length !== params.replicas)
    throw new StageError(`reduce got ${results.length} replica results, expected ${params.replicas}`, { type: 'REPLICA_RESULTS_MISSING', retryable: false });
  const syncDir = await syncDirOf(ctx, params, inputs);
  const round = await latestAveragedRound(syncDir);
  const firstModel = results[0]?.outputs.model;
  if (round === 0 || !firstModel) throw new StageError(`no averaged weights in ${syncDir}`, { type: 'REPLICA_RESULTS_MISSING', retryable: false });

  // The replicas' final weights are the average of the last round; publish that average with
  // the topology a replica saved (float32, same weight order), plus the input's pruning masks.
  // The average holds the weights, then (step loop) Adam's averaged moments: only the weights go out.
  const averaged = await readFile(averageFile(syncDir, round));
  const replicaModelDir = await ctx.localPath(firstModel);
  const modelJson = JSON.parse(await readFile(path.join(replicaModelDir, 'model.json'), 'utf8')) as { weightsManifest: { paths: string[] }[] };
  const replicaWeights = await stat(path.join(replicaModelDir, 'weights.bin'));
  if ((averaged.length !== replicaWeights.size && averaged.length !== 3 * replicaWeights.size) || modelJson.weightsManifest.length !== 1) {
    throw new StageError(`averaged weights (${averaged.length} bytes) do not fit the replica model (${replicaWeights.size} bytes)`, {
      type: 'MODEL_MISMATCH',
      retryable: false,
    });
  }
  const avg = averaged.subarray(0, replicaWeights.size);
  let test: EvaluateResult | undefined;
  let evalCpu = 0;
  const manifest = await readDatasetManifest(datasetDir);
  const ref = await ctx.output('model', async (outDir) => {
    await writeFile(path.join(outDir, 'weights.bin'), avg);
    await copyFile(path.join(replicaModelDir, 'model.json'), path.join(outDir, 'model.json'));
    for (const f of ['masks.json', 'masks.bin']) await copyFile(path.join(inputModelDir, f), path.join(outDir, f)).catch(() => undefined);
    ctx.heartbeat({ phase: 'evaluate' });
    if (manifest.splits.test) {
      const job: EvaluateJob = { kind: 'evaluate', ...(opts.tfBackend ? { backend: opts.tfBackend } : {}), datasetDir, modelDir: outDir, split: 'test' };
      const out = await runChildJob<EvaluateResult>({
        job,
        jobFile: path.join(await ctx.checkpointDir(), `reduce-attempt-${ctx.attempt}.json`),
        signal: ctx.signal,
        env: ctx.device?.env ?? {},
        onAlive: () => ctx.heartbeat({ phase: 'evaluate' }),
      });
      test = out.result;
      evalCpu = out.cpuSeconds;
    }
    return { format: 'tfjs-layers', replicas: params.replicas, rounds: round, ...(test ? { testAccuracy: test.accuracy } : {}) };
  });
  ctx.meter.add({ cpuSeconds: evalCpu });

  const num = (r: StageResult, k: string) => (typeof r.metrics[k] === 'number' ? (r.metrics[k] as number) : 0);
  const samples = results.reduce((s, r) => s + num(r, 'samples'), 0);
  const slowest = Math.max(...results.map((r) => num(r, 'trainSeconds') + num(r, 'waitSeconds')));
  const perReplica: Record<string, number | string> = {};
  results.forEach((r, i) => {
    perReplica[`samplesPerSecReplica${i}`] = num(r, 'samplesPerSec');
    // Where each replica ran: host and device (gpu:<id> or cpu:<n>).
    if (typeof r.metrics.device === 'string') perReplica[`deviceReplica${i}`] = `${String(r.metrics.host ?? '')}/${r.metrics.device}`;
    perReplica[`resumedFromRoundReplica${i}`] = num(r, 'resumedFromRound');
  });
  return {
    outputs: { model: ref },
    metrics: cleanMetrics({
      tfBackend: test?.backend ?? String(results[0]?.metrics.tfBackend ?? ''),
      replicas: params.replicas,
      rounds: round,
      syncEverySteps: params.syncEverySteps,
      samples,
      samplesPerSecTotal: slowest > 0 ? samples / slowest : 0,
      samplesPerSecComputeSum: results.reduce((s, r) => s + num(r, 'samplesPerSec'), 0),
      ...perReplica,
      testLoss: test?.loss,
      testAccuracy: test?.accuracy,
      testCount: test?.count,
      cpuSeconds: evalCpu,
      replicaCpuSeconds: results.reduce((s, r) => s + num(r, 'cpuSeconds'), 0),
    }),
  };
}
