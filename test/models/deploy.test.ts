import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type * as TF from '@tensorflow/tfjs';
import type { ArtifactStore } from '../../lib/artifacts.js';
import type { Db } from '../../lib/db/types.js';
import { loadTf } from '../../ml/backend.js';
import { checkGates, deployParamsSchema, deployStage } from '../../plugins/core/deploy/index.js';
import { pruneQuantizeStage } from '../../plugins/core/prune-quantize/index.js';
import { contractProblems } from '../../plugins/registry.js';
import { ModelRegistry } from '../../serving/registry.js';
import type { ArtifactRef } from '../../workflows/types.js';
import { ApplicationFailure } from '@temporalio/common';
import type { StageServices } from '../../plugins/services.js';
import { dispatch } from '../ml/helpers.js';
import { freshRegistryDb } from './db.js';
import { makeDatasetArtifact, makeModelArtifact, serveFolder, stageContext, tempStore } from './fixtures.js';

let tf: typeof TF;
let backend: string;
let store: ArtifactStore;
let cleanup: () => Promise<void>;
let db: Db;
let registry: ModelRegistry;
let dataset: ArtifactRef;
let model: ArtifactRef;
let quantized: ArtifactRef;

beforeAll(async () => {
  ({ tf, backend } = await loadTf());
  const t = await tempStore();
  store = t.store;
  cleanup = t.cleanup;
  db = await freshRegistryDb('sqlite', t.root);
  registry = new ModelRegistry(db);
  dataset = await makeDatasetArtifact(store);
  model = await makeModelArtifact(tf, store, dataset);
  const pq = pruneQuantizeStage();
  quantized = (await pq.run(stageContext(store, { stageId: 'prune-quantize' }), pq.paramsSchema.parse({ sparsity: 0.5, quantize: 'uint8' }), { model, dataset })).outputs.model!;
}, 120_000);
afterAll(async () => {
  await db.close();
  await cleanup();
});

function deploy(runId: string, params: Record<string, unknown>, inputModel = model) {
  const plugin = deployStage();
  const ctx = stageContext(store, { runId, stageId: 'deploy', pipeline: 'mnist-default', services: { models: registry } });
  return plugin.run(ctx, plugin.paramsSchema.parse(params), { model: inputModel, dataset });
}

describe('core:deploy', () => {
  it('satisfies the plugin contract and validates gates', () => {
    expect(contractProblems(deployStage())).toEqual([]);
    expect(deployParamsSchema.safeParse({ gates: { minTestAccuracy: 2 } }).success).toBe(false);
    expect(deployParamsSchema.safeParse({ gates: { minAccuracy: 0.9 } }).success).toBe(false);
    expect(deployParamsSchema.safeParse({ modelName: '../x' }).success).toBe(false);
    expect(checkGates({ minTestAccuracy: 0.9, maxSizeBytes: 10 }, { testAccuracy: 0.95, p99LatencyMs: 3, sizeBytes: 11 })).toEqual([
      { gate: 'minTestAccuracy', threshold: 0.9, measured: 0.95, passed: true },
      { gate: 'maxSizeBytes', threshold: 10, measured: 11, passed: false },
    ]);
  });

  it('exports, measures, registers version 1 and promotes it when the gates pass', async () => {
    const r = await deploy('run-1', { modelName: 'mnist', gates: { minTestAccuracy: 0.5, maxSizeBytes: 10_000_000, maxP99LatencyMs: 60_000 } });
    const m = r.metrics;
    expect(m).toMatchObject({ model: 'mnist', version: 1, promoted: true, alias: 'production', newVersion: true, tfBackend: backend, evalSplit: 'test', gatesChecked: 3 });
    for (const k of ['testAccuracy', 'p50LatencyMs', 'p99LatencyMs', 'sizeBytes']) expect(typeof m[k]).toBe('number');
    expect(m.p99LatencyMs as number).toBeGreaterThanOrEqual(m.p50LatencyMs as number);
    expect((await registry.resolveAlias('mnist'))?.version).toBe(1);

    const v = (await registry.getVersion('mnist', 1))!;
    expect(v.runId).toBe('run-1');
    expect(v.artifactUri).toMatch(/^artifact:registry\/mnist\/sha256-[0-9a-f]{64}$/);
    expect(await store.verify({ kind: 'model', uri: v.artifactUri, sha256: v.sha256, bytes: v.bytes })).toEqual({ ok: true });
    expect((await readdir(store.resolve(v.artifactUri))).sort()).toEqual(['model.json', 'weights.bin']);

    const record = JSON.parse(await readFile(path.join(store.resolve(r.outputs.deployment!), 'deployment.json'), 'utf8'));
    expect(record).toMatchObject({ model: 'mnist', version: 1, alias: 'production', previousVersion: null });
    expect(r.outputs.deployment!.kind).toBe('deployment');
  });

  it('is idempotent: the same run + stage deploying again returns the same version', async () => {
    const r = await deploy('run-1', { modelName: 'mnist' });
    expect(r.metrics).toMatchObject({ version: 1, newVersion: false });
    expect((await registry.listVersions('mnist')).length).toBe(1);
  });

  it('a quantized model deploys as version 2 and loads with plain tf.loadLayersModel from the registry', async () => {
    const r = await deploy('run-2', { modelName: 'mnist', gates: { minTestAccuracy: 0.5 } });
    expect(r.metrics).toMatchObject({ version: 2, promoted: true });
    const r2 = await deploy('run-3', { modelName: 'mnist' }, quantized);
    expect(r2.metrics).toMatchObject({ version: 3, promoted: true });
    expect(r2.metrics.sizeBytes as number).toBeLessThan(r.metrics.sizeBytes as number);
    const v3 = (await registry.resolveAlias('mnist'))!;
    expect(v3.version).toBe(3);
    const http = await serveFolder(store.resolve(v3.artifactUri));
    try {
      const loaded = await tf.loadLayersModel(`${http.url}/model.json`);
      expect(loaded.outputs[0]!.shape).toEqual([null, 10]);
      loaded.dispose();
    } finally {
      await http.close();
    }
  });

  it('quantizes a float32 model at export when asked, and exports an already quantized one as it is', async () => {
    const r = await deploy('run-q', { modelName: 'mnist-q', quantize: 'uint8' });
    expect(r.metrics).toMatchObject({ version: 1, weightFormat: 'uint8' });
    const v = (await registry.getVersion('mnist-q', 1))!;
    const json = JSON.parse(await readFile(path.join(store.resolve(v.artifactUri), 'model.json'), 'utf8'));
    expect(json.weightsManifest[0].weights.every((w: { quantization?: { dtype: string } }) => w.quantization?.dtype === 'uint8')).toBe(true);
    const float = (await registry.getVersion('mnist', 2))!;
    expect(float.metrics.weightFormat).toBe('float32');
    expect(v.bytes).toBeLessThan(float.bytes / 2);
    const again = await deploy('run-q2', { modelName: 'mnist-q', quantize: 'float16' }, quantized);
    expect(again.metrics.weightFormat).toBe('uint8');
  });

  it('a missed gate registers the version but does not promote, and fails non-retryably naming the gate', async () => {
    const err = await deploy('run-4', { modelName: 'mnist', gates: { minTestAccuracy: 0.9999, maxSizeBytes: 1 } }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ type: 'PROMOTION_GATE_FAILED', retryable: false });
    const msg = (err as Error).message;
    expect(msg).toContain('version 4 is registered but not promoted');
    expect(msg).toMatch(/minTestAccuracy 0\.9999 not met \(measured 0\.\d+\)/);
    expect(msg).toMatch(/maxSizeBytes 1 not met \(measured \d+\)/);
    expect((await registry.getVersion('mnist', 4))?.runId).toBe('run-4');
    expect((await registry.resolveAlias('mnist'))?.version).toBe(3);
  });

  it('fails clearly when the model does not fit the dataset', async () => {
    {
      const { buildMlp } = await import('../../ml/models/mlp.js');
      const { saveModel } = await import('../../ml/models/io.js');
      const wrong = buildMlp(tf, { inputShape: [5, 1], hiddenUnits: [4], activation: 'relu', dropout: 0, numClasses: 10, seed: 1 });
      const dir = await store.freshDir(store.dirFor('run-5', 'pretrain', 'model'));
      await saveModel(wrong, dir);
      wrong.dispose();
      const ref = await store.seal('model', dir);
      const err = await dispatch({ plugin: deployStage(), store, stageId: 'deploy', params: { modelName: 'mnist' }, inputs: { model: ref, dataset }, services: { models: registry } as StageServices }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ApplicationFailure);
      expect(err).toMatchObject({ type: 'MODEL_DATASET_MISMATCH', nonRetryable: true, message: expect.stringContaining('model expects inputs of shape [5, 1]') });
    }
  });
});
