import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { StageError, badInput } from '../../../lib/errors.js';
import { loadTf, type BackendName } from '../../../ml/backend.js';
import { exportModel } from '../../../ml/compression/export-model.js';
import { accuracy, checkCompatible, loadSplit } from '../../../ml/evaluation/evaluate.js';
import { measureLatency } from '../../../ml/evaluation/latency.js';
import { folderLoadHandler } from '../../../ml/models/io.js';
import { MODEL_NAME_RE, type ModelMetrics } from '../../../serving/registry.js';
import { defineStage, PLUGIN_API_VERSION, type ArtifactRef, type StageContext, type StageResult } from '../../contract.js';
import { deployParamsSchema, type DeployParams, type PromotionGates } from './params.js';

export interface DeployOptions {
  /** Backend to prefer for measuring (CAPSTAN_TF_BACKEND); default: best available. */
  tfBackend?: BackendName;
}

export interface GateResult {
  gate: keyof PromotionGates;
  threshold: number;
  measured: number;
  passed: boolean;
}

/** Compares measurements with the gates; only the gates that are set are checked. */
export function checkGates(gates: PromotionGates, measured: { testAccuracy: number; p99LatencyMs: number; sizeBytes: number }): GateResult[] {
  const out: GateResult[] = [];
  if (gates.minTestAccuracy !== undefined) out.push({ gate: 'minTestAccuracy', threshold: gates.minTestAccuracy, measured: measured.testAccuracy, passed: measured.testAccuracy >= gates.minTestAccuracy });
  if (gates.maxP99LatencyMs !== undefined) out.push({ gate: 'maxP99LatencyMs', threshold: gates.maxP99LatencyMs, measured: measured.p99LatencyMs, passed: measured.p99LatencyMs <= gates.maxP99LatencyMs });
  if (gates.maxSizeBytes !== undefined) out.push({ gate: 'maxSizeBytes', threshold: gates.maxSizeBytes, measured: measured.sizeBytes, passed: measured.sizeBytes <= gates.maxSizeBytes });
  return out;
}

/** `core:deploy`: export to the registry, measure, register a version, promote when the gates pass. */
export function deployStage(opts: DeployOptions = {}) {
  return defineStage({
    name: 'core:deploy',
    version: '1.0.0',
    apiVersion: PLUGIN_API_VERSION,
    description: 'Exports the model to the registry, measures test accuracy, p50/p99 latency at batch 1 and size, registers a version, and points the production alias at it when the promotion gates pass.',
    paramsSchema: deployParamsSchema,
    consumes: ['model', 'dataset'],
    produces: ['deployment'],
    resource: 'cpu',
    timeouts: { startToCloseMs: 15 * 60_000, heartbeatMs: 60_000 },
    run: (ctx, params, inputs) => runDeploy(ctx, params, inputs, opts),
  });
}

async function runDeploy(ctx: StageContext, params: DeployParams, inputs: { model: ArtifactRef; dataset: ArtifactRef }, opts: DeployOptions): Promise<StageResult> {
  const modelRef = inputs.model;
  const modelName = params.modelName ?? ctx.pipeline.replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 64);
  if (!MODEL_NAME_RE.test(modelName)) throw badInput(`cannot derive a model name from pipeline ${ctx.pipeline}; set params.modelName`);
  const models = ctx.services.models;
  const { tf, backend } = await loadTf(opts.tfBackend ? { prefer: opts.tfBackend } : {});

  // 1. Export to the stable, content-addressed registry location (quantizing on the way if asked).
  const sourceDir = await ctx.localPath(modelRef);
  let weightFormat = 'float32';
  const exported = await ctx.output(
    'model',
    async (dir) => {
      ({ weightFormat } = await exportModel(tf, { sourceDir, destDir: dir, quantize: params.quantize }));
      return { format: 'tfjs-layers', weights: weightFormat };
    },
    { contentAddressed: `registry/${modelName}` },
  );
  const exportedDir = await ctx.localPath(exported);
  ctx.heartbeat({ phase: 'exported', uri: exported.uri });

  // 2. Measure the exported folder exactly as serving will load it.
  const test = await loadSplit(await ctx.localPath(inputs.dataset), { split: 'test', ...(params.evalSamples ? { limit: params.evalSamples } : {}) });
  const model = await tf.loadLayersModel(folderLoadHandler(tf, exportedDir));
  let testAccuracy: number;
  let latency: { p50Ms: number; p99Ms: number; runs: number };
  try {
    checkCompatible(model, test);
    testAccuracy = await accuracy(tf, model, test);
    ctx.heartbeat({ phase: 'measured-accuracy' });
    latency = await measureLatency(tf, model, test, { runs: params.latencyRuns });
  } finally {
    model.dispose();
  }
  const sizeBytes = exported.bytes;
  const measured: ModelMetrics = {
    testAccuracy,
    p50LatencyMs: latency.p50Ms,
    p99LatencyMs: latency.p99Ms,
    latencyRuns: latency.runs,
    sizeBytes,
    weightFormat,
    evalSplit: test.split,
    evalRows: test.count,
    tfBackend: backend,
  };

  // 3. Register (idempotent per run + stage).
  const { version: registered, created } = await models.register({
    model: modelName,
    runId: ctx.runId,
    stageId: ctx.stageId,
    artifactUri: exported.uri,
    sha256: exported.sha256,
    bytes: exported.bytes,
    metrics: { ...measured, pipeline: ctx.pipeline, sourceModelUri: modelRef.uri },
  });
  if (!created && registered.sha256 !== exported.sha256) {
    throw new StageError(`run ${ctx.runId} stage ${ctx.stageId} already registered ${modelName} version ${registered.version} with different content (${registered.sha256.slice(0, 12)}… vs ${exported.sha256.slice(0, 12)}…)`, {
      type: 'REGISTRY_CONFLICT',
      details: { model: modelName, version: registered.version },
    });
  }

  // 4. Gates → promote, or fail without promoting.
  const gates = checkGates(params.gates, { testAccuracy, p99LatencyMs: latency.p99Ms, sizeBytes });
  const failed = gates.filter((g) => !g.passed);
  const base = { model: modelName, version: registered.version, ...measured };
  if (failed.length > 0) {
    const what = failed.map((g) => `${g.gate} ${g.threshold} not met (measured ${g.measured})`).join('; ');
    ctx.logger.warn('promotion gate failed', { model: modelName, version: registered.version, failed });
    throw new StageError(`model ${modelName} version ${registered.version} is registered but not promoted: ${what}`, {
      type: 'PROMOTION_GATE_FAILED',
      details: { ...base, gates: failed },
    });
  }
  let previousVersion: number | null = null;
  if (params.promote) {
    ({ previousVersion } = await models.setAlias(modelName, params.alias, registered.version, `deploy ${ctx.runId}/${ctx.stageId}`));
  }

  // 5. The deployment record is this stage's artifact.
  const record = {
    model: modelName,
    version: registered.version,
    alias: params.promote ? params.alias : null,
    previousVersion,
    artifact: exported,
    registeredAt: registered.createdAt,
    metrics: measured,
    gates,
  };
  const ref = await ctx.output('deployment', async (dir) => {
    await writeFile(path.join(dir, 'deployment.json'), JSON.stringify(record, null, 2));
    return { model: modelName, version: registered.version, promoted: params.promote };
  });
  ctx.logger.info('deployed', { model: modelName, version: registered.version, promoted: params.promote, testAccuracy, p99LatencyMs: latency.p99Ms });
  return {
    outputs: { deployment: ref },
    metrics: { ...base, promoted: params.promote, alias: params.promote ? params.alias : '', newVersion: created, gatesChecked: gates.length },
  };
}
