import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { defineStage, PLUGIN_API_VERSION, type ArtifactRef, type StageContext, type StageResult } from '../../contract.js';
import type { StageServices } from '../../services.js';
import { badInput, StageError } from '../../../lib/errors.js';
import type { Db } from '../../../lib/db/types.js';
import { migrate } from '../../../lib/db/migrate.js';
import { loadTf } from '../../../ml/backend.js';
import { folderLoadHandler } from '../../../ml/models/io.js';
import { accuracy, checkCompatible, loadSplit, measureLatency } from '../../../serving/evaluate.js';
import { MODEL_NAME_RE, ModelRegistry, PRODUCTION_ALIAS, registryMigrations, type ModelMetrics } from '../../../serving/registry.js';
import { exportModelFolder } from './export.js';

export const promotionGatesSchema = z
  .object({
    /** Test accuracy (0..1) the new version must reach. */
    minTestAccuracy: z.number().min(0).max(1).optional(),
    /** p99 latency of one prediction at batch 1, in milliseconds. */
    maxP99LatencyMs: z.number().positive().optional(),
    /** Size of the exported folder (model.json + weights), in bytes. */
    maxSizeBytes: z.number().int().positive().optional(),
  })
  .strict();
export type PromotionGates = z.infer<typeof promotionGatesSchema>;

export const deployParamsSchema = z
  .object({
    /** Registry name of the model; defaults to the pipeline name. */
    modelName: z.string().regex(MODEL_NAME_RE, 'model name: letters, digits, ".", "_", "-" (max 64), starting with a letter or digit').optional(),
    gates: promotionGatesSchema.default({}),
    /** Point `alias` at the new version when all gates pass. */
    promote: z.boolean().default(true),
    alias: z.string().regex(/^[a-z][a-z0-9-]{0,31}$/).default(PRODUCTION_ALIAS),
    /** Predictions timed at batch 1 for p50/p99 (after 10 warm-up runs). */
    latencyRuns: z.number().int().min(10).max(100_000).default(200),
    /** Measure test accuracy on at most this many rows. */
    evalSamples: z.number().int().positive().optional(),
    /**
     * Quantize float32 weights while exporting (the weight-manifest format prune-quantize writes).
     * For pipelines where a fine-tune after prune-quantize wrote float32 weights again.
     * An input that is already quantized is exported as it is.
     */
    quantize: z.enum(['none', 'uint8', 'uint16', 'float16']).default('none'),
  })
  .strict();
export type DeployParams = z.infer<typeof deployParamsSchema>;

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

/**
 * The registry a stage uses: the worker's `modelRegistry` service, or one over its `db` service
 * (the registry tables are migrated first; migrating is idempotent).
 */
export async function registryFromServices(services: StageServices): Promise<ModelRegistry> {
  const reg = services.modelRegistry;
  if (reg instanceof ModelRegistry) return reg;
  const db = services.db as Db | undefined;
  if (!db) throw new Error('core:deploy needs the "modelRegistry" or "db" service, which this worker was not started with');
  await migrate(db, registryMigrations);
  return new ModelRegistry(db);
}

/** `core:deploy`: export to the registry, measure, register a version, promote when the gates pass. */
export function deployStage() {
  return defineStage<DeployParams>({
    name: 'core:deploy',
    version: '1.0.0',
    apiVersion: PLUGIN_API_VERSION,
    description: 'Exports the model to the registry, measures test accuracy, p50/p99 latency at batch 1 and size, registers a version, and points the production alias at it when the promotion gates pass.',
    paramsSchema: deployParamsSchema as z.ZodType<DeployParams>,
    consumes: ['model', 'dataset'],
    produces: ['deployment'],
    resource: 'cpu',
    retry: { nonRetryableErrorTypes: ['BAD_INPUT', 'PROMOTION_GATE_FAILED', 'MODEL_DATASET_MISMATCH', 'DATASET_SPLIT_MISSING', 'ARTIFACT_CORRUPT', 'REGISTRY_CONFLICT'] },
    timeouts: { startToCloseMs: 15 * 60_000, heartbeatMs: 60_000 },
    run: runDeploy,
  });
}

async function runDeploy(ctx: StageContext, params: DeployParams, inputs: Record<string, ArtifactRef>): Promise<StageResult> {
  const modelRef = inputs.model;
  const datasetRef = inputs.dataset;
  if (!modelRef) throw badInput('core:deploy needs a "model" input');
  if (!datasetRef) throw badInput('core:deploy needs a "dataset" input');
  const modelName = params.modelName ?? ctx.pipeline.replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 64);
  if (!MODEL_NAME_RE.test(modelName)) throw badInput(`cannot derive a model name from pipeline ${ctx.pipeline}; set params.modelName`);
  for (const ref of [modelRef, datasetRef]) {
    const v = await ctx.artifacts.verify(ref);
    if (!v.ok) throw badInput(v.reason, 'ARTIFACT_CORRUPT');
  }
  const registry = await registryFromServices(ctx.services);
  const { tf, backend } = await loadTf();

  // 1. Export to the stable, content-addressed registry location.
  const { ref: exported, weightFormat } = await exportModelFolder(ctx.artifacts, {
    model: modelName,
    sourceDir: ctx.artifacts.resolve(modelRef),
    stagingKey: `${ctx.runId}-${ctx.stageId}-${ctx.attempt}`,
    tf,
    quantize: params.quantize,
  });
  const exportedDir = ctx.artifacts.resolve(exported);
  ctx.heartbeat({ phase: 'exported', uri: exported.uri });

  // 2. Measure the exported folder exactly as serving will load it.
  const test = await loadSplit(ctx.artifacts.resolve(datasetRef), { split: 'test', ...(params.evalSamples ? { limit: params.evalSamples } : {}) });
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
  const { version: registered, created } = await registry.register({
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
    ({ previousVersion } = await registry.setAlias(modelName, params.alias, registered.version, `deploy ${ctx.runId}/${ctx.stageId}`));
  }

  // 5. The deployment record is this stage's artifact.
  const dir = await ctx.artifacts.freshDir(ctx.artifacts.dirFor(ctx.runId, ctx.stageId, 'deployment'));
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
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'deployment.json'), JSON.stringify(record, null, 2));
  const ref = await ctx.artifacts.seal('deployment', dir, { model: modelName, version: registered.version, promoted: params.promote });
  ctx.logger.info('deployed', { model: modelName, version: registered.version, promoted: params.promote, testAccuracy, p99LatencyMs: latency.p99Ms });
  return {
    outputs: { deployment: ref },
    metrics: { ...base, promoted: params.promote, alias: params.promote ? params.alias : '', newVersion: created, gatesChecked: gates.length },
  };
}
