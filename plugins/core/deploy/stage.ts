import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { StageError, badInput } from '../../../lib/errors.js';
import { loadTf, type BackendName, type LoadedTf } from '../../../ml/backend.js';
import { DataError } from '../../../ml/data/data-error.js';
import { accuracyOf, checkFits, loadSplit, type EvalSplit } from '../../../ml/evaluation/evaluate.js';
import { measureModelLatency } from '../../../ml/evaluation/latency.js';
import { detectFormat, loadModelFolder, type ModelRuntimes } from '../../../ml/runtime/load-model.js';
import type { ModelFormat } from '../../../ml/runtime/loaded-model.js';
import type { OnnxRuntimeOptions } from '../../../ml/runtime/onnx-model.js';
import { MODEL_NAME_RE, PRODUCTION_ALIAS, RegistryError, nameTakenMessage, type ModelMetrics } from '../../../serving/registry.js';
import { defineStage, PLUGIN_API_VERSION, type ArtifactRef, type StageContext, type StageResult } from '../../contract.js';
import { checkExport, exportAs } from './export.js';
import { inputSpecOf } from './input-spec.js';
import { deployParamsSchema, hasGates, type DeployParams, type PromotionGates } from './params.js';

export interface DeployOptions {
  /** Backend to prefer for measuring tfjs models (CAPSTAN_TF_BACKEND); default: best available. */
  tfBackend?: BackendName;
  /** How ONNX Runtime runs ONNX models (CAPSTAN_ONNX_EP); default: the CPU. */
  onnx?: OnnxRuntimeOptions;
}

export interface GateResult {
  gate: Exclude<keyof PromotionGates, 'tolerance'>;
  threshold: number;
  measured: number;
  passed: boolean;
  /** noWorseThan: the production version compared against (absent when there was none). */
  productionVersion?: number;
  productionTestAccuracy?: number;
  /** noWorseThan: what the comparison came to, in words. */
  note?: string;
}

/** The current production version measured on the candidate's test set (or why it could not be). */
export type ProductionBaseline = { version: number; testAccuracy: number } | { version: number; problem: string } | null;

/** Compares measurements with the gates; only the gates that are set are checked. */
export function checkGates(
  gates: PromotionGates,
  measured: { testAccuracy: number; p99LatencyMs: number; sizeBytes: number; production?: ProductionBaseline },
): GateResult[] {
  const out: GateResult[] = [];
  if (gates.minTestAccuracy !== undefined)
    out.push({
      gate: 'minTestAccuracy',
      threshold: gates.minTestAccuracy,
      measured: measured.testAccuracy,
      passed: measured.testAccuracy >= gates.minTestAccuracy,
    });
  if (gates.maxP99LatencyMs !== undefined)
    out.push({
      gate: 'maxP99LatencyMs',
      threshold: gates.maxP99LatencyMs,
      measured: measured.p99LatencyMs,
      passed: measured.p99LatencyMs <= gates.maxP99LatencyMs,
    });
  if (gates.maxSizeBytes !== undefined)
    out.push({ gate: 'maxSizeBytes', threshold: gates.maxSizeBytes, measured: measured.sizeBytes, passed: measured.sizeBytes <= gates.maxSizeBytes });
  if (gates.noWorseThan !== undefined) out.push(noWorseThan(gates.tolerance ?? 0, measured.testAccuracy, measured.production ?? null));
  return out;
}

function noWorseThan(tolerance: number, candidate: number, prod: ProductionBaseline): GateResult {
  const acc = (x: number) => x.toFixed(4);
  if (prod === null) {
    return { gate: 'noWorseThan', threshold: 0, measured: candidate, passed: true, note: 'passed: no production version yet' };
  }
  if ('problem' in prod) {
    return {
      gate: 'noWorseThan',
      threshold: NaN,
      measured: candidate,
      passed: false,
      productionVersion: prod.version,
      note: `failed: production version ${prod.version} cannot be measured on this test set (${prod.problem})`,
    };
  }
  const threshold = prod.testAccuracy - tolerance;
  // Accuracies are ratios of counts: compare with a little slack for float rounding.
  const passed = candidate >= threshold - 1e-12;
  const tol = tolerance ? ` − tolerance ${tolerance}` : '';
  return {
    gate: 'noWorseThan',
    threshold,
    measured: candidate,
    passed,
    productionVersion: prod.version,
    productionTestAccuracy: prod.testAccuracy,
    note: `${passed ? 'passed' : 'failed'}: test accuracy ${acc(candidate)} ${passed ? '≥' : '<'} production version ${prod.version}'s ${acc(prod.testAccuracy)}${tol} on the same test set`,
  };
}

/**
 * `core:deploy`: export to the registry, measure, register a version, promote when the gates pass.
 * A model name belongs to the token that registered it first (or that an admin granted it to):
 * a run started by another token fails before any work (MODEL_NAME_TAKEN) unless it is an
 * admin's. Promoting with no gates set needs an admin's run. Every move of production also
 * passes champion/challenger against the current production on the same test set, unless an
 * admin opted the model out (setModelPromotionPolicy).
 */
export function deployStage(opts: DeployOptions = {}) {
  return defineStage({
    name: 'core:deploy',
    estimateScale: { work: ['latencyRuns'], ignore: ['modelName', 'alias', 'gates', 'promote'] },
    version: '1.2.0',
    apiVersion: PLUGIN_API_VERSION,
    description:
      'Exports the model to the registry (a tfjs layers folder, or ONNX: an ONNX folder as it is, or a tfjs model converted), measures test accuracy, p50/p99 latency at batch 1 and size with the runtime that serves it (TensorFlow.js or ONNX Runtime), compares with the production version of either format on the same test set, registers a version with its format and input spec, and points the production alias at it when the promotion gates pass.',
    paramsSchema: deployParamsSchema,
    consumes: ['model', 'dataset'],
    produces: ['deployment'],
    resource: 'cpu',
    timeouts: { startToCloseMs: 15 * 60_000, heartbeatMs: 60_000 },
    run: (ctx, params, inputs) => runDeploy(ctx, params, inputs, opts),
  });
}

async function runDeploy(
  ctx: StageContext,
  params: DeployParams,
  inputs: { model: ArtifactRef; dataset: ArtifactRef },
  opts: DeployOptions,
): Promise<StageResult> {
  const modelRef = inputs.model;
  const modelName = params.modelName ?? ctx.pipeline.replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 64);
  if (!MODEL_NAME_RE.test(modelName)) throw badInput(`cannot derive a model name from pipeline ${ctx.pipeline}; set params.modelName`);
  const models = ctx.services.models;
  const who = ctx.startedBy;
  const admin = who?.role === 'admin';
  const claimant = { admin, ...(who?.tokenId ? { tokenId: who.tokenId, name: who.name } : {}) };

  // 0. Who may deploy here: checked before any work. A name belongs to a token (or to admins);
  //    the pipeline name proves nothing, since any operator may write it in a spec.
  if (!admin && !who?.tokenId) {
    throw new StageError(
      `model ${modelName}: deploying needs a run started with an API token (this run records none: started before token ids were recorded, or by a schedule made then); start it again, or ask an admin`,
      {
        type: 'MODEL_NAME_TAKEN',
        details: { model: modelName },
      },
    );
  }
  if (!(await models.mayWrite(modelName, claimant))) {
    throw new StageError(nameTakenMessage(modelName, await models.owner(modelName)), { type: 'MODEL_NAME_TAKEN', details: { model: modelName } });
  }
  if (params.promote && !hasGates(params.gates) && !admin) {
    throw new StageError(
      `model ${modelName}: promoting to ${params.alias} with no promotion gates set needs a run started with an admin token; set gates (e.g. noWorseThan: production, minTestAccuracy) or promote: false`,
      { type: 'PROMOTION_UNGATED', details: { model: modelName } },
    );
  }
  // Champion/challenger on every move of production, whoever started the run and whatever the
  // spec says, unless an admin opted this model out; a spec's tolerance is capped by the policy.
  const policy = await models.promotionPolicy(modelName);
  const enforced = params.promote && params.alias === PRODUCTION_ALIAS && policy.requireChampionChallenger;
  const gatesToCheck: PromotionGates = enforced
    ? { ...params.gates, noWorseThan: 'production', tolerance: Math.min(params.gates.tolerance ?? 0, policy.maxTolerance) }
    : params.gates;
  // TensorFlow.js is loaded only when a tfjs model is exported or measured.
  let tfLoaded: Promise<LoadedTf> | undefined;
  const runtimes: ModelRuntimes = {
    tf: () => (tfLoaded ??= loadTf(opts.tfBackend ? { prefer: opts.tfBackend } : {})),
    ...(opts.onnx ? { onnx: opts.onnx } : {}),
  };

  // 1. Export to the stable, content-addressed registry location, in the format asked for
  //    (quantizing on the way if asked). What cannot be exported is refused before any work.
  const sourceDir = await ctx.localPath(modelRef);
  const sourceFormat = await detectFormat(sourceDir);
  const format: ModelFormat = params.format ?? sourceFormat;
  const datasetDir = await ctx.localPath(inputs.dataset);
  const inputSpec = await inputSpecOf(datasetDir);
  const plan = { sourceDir, sourceFormat, format, quantize: params.quantize, inputSpec };
  await checkExport(plan);
  let weightFormat = 'float32';
  const exported = await ctx.output(
    'model',
    async (dir) => {
      weightFormat = await exportAs({ ...plan, destDir: dir, runtimes });
      return { format, weights: weightFormat, input: { shape: inputSpec.shape, dtype: inputSpec.dtype, encoding: inputSpec.raw?.kind ?? 'none' } };
    },
    { contentAddressed: `registry/${modelName}` },
  );
  const exportedDir = await ctx.localPath(exported);
  ctx.heartbeat({ phase: 'exported', uri: exported.uri, format });

  // 2. Measure the exported folder exactly as serving will load it; and production on the same rows.
  const test = await loadSplit(datasetDir, { split: 'test', ...(params.evalSamples ? { limit: params.evalSamples } : {}) });
  const model = await loadModelFolder(exportedDir, format, runtimes);
  let testAccuracy: number;
  let latency: { p50Ms: number; p99Ms: number; runs: number };
  try {
    checkFits(model, test);
    testAccuracy = await accuracyOf(model, test);
    ctx.heartbeat({ phase: 'measured-accuracy' });
    latency = await measureModelLatency(model, test, { runs: params.latencyRuns });
  } finally {
    await model.dispose();
  }
  let production: ProductionBaseline | undefined;
  if (gatesToCheck.noWorseThan === 'production') {
    production = await measureProduction(ctx, runtimes, modelName, exported.sha256, testAccuracy, test);
    ctx.heartbeat({ phase: 'measured-production' });
  }
  const sizeBytes = exported.bytes;
  const measured: ModelMetrics = {
    testAccuracy,
    p50LatencyMs: latency.p50Ms,
    p99LatencyMs: latency.p99Ms,
    latencyRuns: latency.runs,
    sizeBytes,
    weightFormat,
    format,
    runtime: model.runtime,
    evalSplit: test.split,
    evalRows: test.count,
    ...(format === 'tfjs-layers' && tfLoaded ? { tfBackend: (await tfLoaded).backend } : {}),
  };

  // 3. Register (idempotent per run + stage), claiming the name for this run's token if it is free.
  let registration: Awaited<ReturnType<typeof models.register>>;
  try {
    registration = await models.register({
      model: modelName,
      runId: ctx.runId,
      stageId: ctx.stageId,
      artifactUri: exported.uri,
      sha256: exported.sha256,
      bytes: exported.bytes,
      metrics: { ...measured, pipeline: ctx.pipeline, sourceModelUri: modelRef.uri },
      inputSpec,
      format,
      owner: { pipeline: ctx.pipeline, ...claimant },
    });
  } catch (e) {
    if (e instanceof RegistryError && e.code === 'MODEL_NAME_TAKEN')
      throw new StageError(e.message, { type: 'MODEL_NAME_TAKEN', details: { model: modelName } });
    throw e;
  }
  const { version: registered, created } = registration;
  if (!created && registered.sha256 !== exported.sha256) {
    throw new StageError(
      `run ${ctx.runId} stage ${ctx.stageId} already registered ${modelName} version ${registered.version} with different content (${registered.sha256.slice(0, 12)}… vs ${exported.sha256.slice(0, 12)}…)`,
      {
        type: 'REGISTRY_CONFLICT',
        details: { model: modelName, version: registered.version },
      },
    );
  }

  // 4. Gates → promote, or fail without promoting.
  const gates = checkGates(gatesToCheck, { testAccuracy, p99LatencyMs: latency.p99Ms, sizeBytes, ...(production !== undefined ? { production } : {}) });
  const failed = gates.filter((g) => !g.passed);
  const champion = gates.find((g) => g.gate === 'noWorseThan');
  const base = {
    model: modelName,
    version: registered.version,
    ...measured,
    championChallenger:
      !params.promote || params.alias !== PRODUCTION_ALIAS ? 'not moving production' : enforced ? 'required' : `opted out by ${policy.setBy ?? 'an admin'}`,
    ...(champion
      ? {
          noWorseThan: champion.note ?? '',
          noWorseThanPassed: champion.passed,
          ...(champion.productionVersion !== undefined ? { productionVersion: champion.productionVersion } : {}),
          ...(champion.productionTestAccuracy !== undefined ? { productionTestAccuracy: champion.productionTestAccuracy } : {}),
        }
      : {}),
  };
  if (failed.length > 0) {
    const what = failed
      .map((g) => (g.gate === 'noWorseThan' ? `noWorseThan production ${g.note}` : `${g.gate} ${g.threshold} not met (measured ${g.measured})`))
      .join('; ');
    ctx.logger.warn('promotion gate failed', { model: modelName, version: registered.version, failed });
    throw new StageError(`model ${modelName} version ${registered.version} is registered but not promoted: ${what}`, {
      type: 'PROMOTION_GATE_FAILED',
      details: { ...base, gates: failed },
    });
  }
  let previousVersion: number | null = null;
  if (params.promote) {
    // Compare-and-set: production must still be the version champion/challenger measured; if
    // another promotion moved it meanwhile, a retry of this stage measures against the new one.
    const expectPrevious = enforced && production !== undefined ? (production?.version ?? null) : undefined;
    try {
      ({ previousVersion } = await models.setAlias(
        modelName,
        params.alias,
        registered.version,
        `deploy ${ctx.runId}/${ctx.stageId}`,
        expectPrevious !== undefined ? { expectPrevious } : {},
      ));
    } catch (e) {
      if (e instanceof RegistryError && e.code === 'ALIAS_MOVED')
        throw new StageError(`model ${modelName} version ${registered.version} is registered but not promoted yet: ${e.message}`, {
          type: 'ALIAS_MOVED',
          retryable: true,
          details: base,
        });
      throw e;
    }
  }

  // 5. The deployment record is this stage's artifact.
  const record = {
    model: modelName,
    version: registered.version,
    format,
    runtime: model.runtime,
    alias: params.promote ? params.alias : null,
    previousVersion,
    artifact: exported,
    registeredAt: registered.createdAt,
    metrics: measured,
    gates,
    inputSpec: { shape: inputSpec.shape, dtype: inputSpec.dtype, range: inputSpec.range, describe: inputSpec.describe, raw: inputSpec.raw?.kind ?? null },
  };
  const ref = await ctx.output('deployment', async (dir) => {
    await writeFile(path.join(dir, 'deployment.json'), JSON.stringify(record, null, 2));
    return { model: modelName, version: registered.version, promoted: params.promote };
  });
  ctx.logger.info('deployed', { model: modelName, version: registered.version, format, promoted: params.promote, testAccuracy, p99LatencyMs: latency.p99Ms });
  return {
    outputs: { deployment: ref },
    metrics: {
      ...base,
      promoted: params.promote,
      alias: params.promote ? params.alias : '',
      newVersion: created,
      gatesChecked: gates.length,
      inputRange: `[${inputSpec.range.map((v) => Number(v.toPrecision(4))).join(', ')}] (${inputSpec.describe})`,
    },
  };
}

/**
 * The production version's test accuracy on the candidate's test rows, whatever its format, or
 * why it cannot be measured. Identical content (e.g. a retry after this stage promoted) is not
 * measured twice.
 */
async function measureProduction(
  ctx: StageContext,
  runtimes: ModelRuntimes,
  modelName: string,
  candidateSha: string,
  candidateAccuracy: number,
  test: EvalSplit,
): Promise<ProductionBaseline> {
  const prod = await ctx.services.models.resolveAlias(modelName, PRODUCTION_ALIAS);
  if (!prod) return null;
  if (prod.sha256 === candidateSha) return { version: prod.version, testAccuracy: candidateAccuracy };
  let dir: string;
  try {
    dir = await ctx.localPath(prod.artifactUri);
  } catch (e) {
    return { version: prod.version, problem: `its artifact cannot be found: ${(e as Error).message}` };
  }
  const net = await loadModelFolder(dir, prod.format, runtimes).catch((e: unknown) => e as Error);
  if (net instanceof Error) return { version: prod.version, problem: `it cannot be loaded (${prod.format}): ${net.message}` };
  try {
    checkFits(net, test);
    return { version: prod.version, testAccuracy: await accuracyOf(net, test) };
  } catch (e) {
    if (e instanceof DataError) return { version: prod.version, problem: e.message };
    throw e;
  } finally {
    await net.dispose();
  }
}
