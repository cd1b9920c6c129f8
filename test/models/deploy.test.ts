import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type * as TF from '@tensorflow/tfjs';
import type { ArtifactStore } from '../../lib/artifacts.js';
import type { Db } from '../../lib/db/types.js';
import { loadTf } from '../../ml/backend.js';
import { checkGates, deployParamsSchema, deployStage, type GateResult } from '../../plugins/core/deploy/index.js';
import { StageError } from '../../lib/errors.js';
import { inputsOf, readDataset } from '../../ml/data/dataset.js';
import { pruneQuantizeStage } from '../../plugins/core/prune-quantize/index.js';
import { contractProblems } from '../../plugins/registry.js';
import { ModelRegistry } from '../../serving/registry.js';
import type { ArtifactRef } from '../../workflows/types.js';
import { ApplicationFailure } from '@temporalio/common';
import type { StageServices } from '../../plugins/services.js';
import { dispatch } from '../ml/helpers.js';
import { freshRegistryDb } from './db.js';
import { TEST_OWNER, makeDatasetArtifact, makeModelArtifact, serveFolder, stageContext, tempStore } from './fixtures.js';

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
  quantized = (
    await pq.run(stageContext(store, { stageId: 'prune-quantize' }), pq.paramsSchema.parse({ sparsity: 0.5, quantize: 'uint8' }), { model, dataset })
  ).outputs.model!;
}, 120_000);
afterAll(async () => {
  await db.close();
  await cleanup();
});

const ADMIN = { name: 'ops', role: 'admin', tokenId: 'ad0000000000' };
/** Another operator than TEST_OWNER (who starts the runs unless a test says otherwise). */
const OPERATOR = { name: 'ci', role: 'operator', tokenId: 'c10000000000' };

function deploy(
  runId: string,
  params: Record<string, unknown>,
  inputModel = model,
  o: { pipeline?: string; startedBy?: { name: string; role: string; tokenId?: string } | null } = {},
) {
  const plugin = deployStage();
  const ctx = stageContext(store, {
    runId,
    stageId: 'deploy',
    pipeline: o.pipeline ?? 'mnist-default',
    services: { models: registry },
    ...(o.startedBy !== undefined ? { startedBy: o.startedBy } : {}),
  });
  return plugin.run(ctx, plugin.paramsSchema.parse(params), { model: inputModel, dataset });
}

async function failure(p: Promise<unknown>): Promise<StageError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(StageError);
  return e as StageError;
}

describe('core:deploy', () => {
  it('satisfies the plugin contract and validates gates', () => {
    expect(contractProblems(deployStage())).toEqual([]);
    expect(deployParamsSchema.safeParse({ gates: { minTestAccuracy: 2 } }).success).toBe(false);
    expect(deployParamsSchema.safeParse({ gates: { minAccuracy: 0.9 } }).success).toBe(false);
    expect(deployParamsSchema.safeParse({ modelName: '../x' }).success).toBe(false);
    expect(deployParamsSchema.safeParse({ gates: { noWorseThan: 'staging' } }).success).toBe(false);
    expect(deployParamsSchema.safeParse({ gates: { tolerance: 0.01 } }).error?.issues[0]?.message).toBe(
      'tolerance applies to noWorseThan: set noWorseThan: production too',
    );
    expect(deployParamsSchema.parse({ gates: { noWorseThan: 'production', tolerance: 0.01 } }).gates).toEqual({ noWorseThan: 'production', tolerance: 0.01 });
    expect(checkGates({ minTestAccuracy: 0.9, maxSizeBytes: 10 }, { testAccuracy: 0.95, p99LatencyMs: 3, sizeBytes: 11 })).toEqual([
      { gate: 'minTestAccuracy', threshold: 0.9, measured: 0.95, passed: true },
      { gate: 'maxSizeBytes', threshold: 10, measured: 11, passed: false },
    ]);
    const m = { testAccuracy: 0.9, p99LatencyMs: 1, sizeBytes: 1 };
    expect(checkGates({ noWorseThan: 'production' }, { ...m, production: null })).toEqual([
      { gate: 'noWorseThan', threshold: 0, measured: 0.9, passed: true, note: 'passed: no production version yet' },
    ]);
    expect(checkGates({ noWorseThan: 'production', tolerance: 0.02 }, { ...m, production: { version: 4, testAccuracy: 0.91 } })[0]).toMatchObject({
      passed: true,
      productionVersion: 4,
      productionTestAccuracy: 0.91,
    });
    expect(checkGates({ noWorseThan: 'production' }, { ...m, production: { version: 4, testAccuracy: 0.91 } })[0]).toMatchObject({
      passed: false,
      note: "failed: test accuracy 0.9000 < production version 4's 0.9100 on the same test set",
    });
    expect(checkGates({ noWorseThan: 'production' }, { ...m, production: { version: 4, problem: 'model expects 5 values' } })[0]).toMatchObject({
      passed: false,
      note: 'failed: production version 4 cannot be measured on this test set (model expects 5 values)',
    });
  });

  it('exports, measures, registers version 1 and promotes it when the gates pass', async () => {
    const r = await deploy('run-1', { modelName: 'mnist', gates: { minTestAccuracy: 0.5, maxSizeBytes: 10_000_000, maxP99LatencyMs: 60_000 } });
    const m = r.metrics;
    expect(m).toMatchObject({
      model: 'mnist',
      version: 1,
      promoted: true,
      alias: 'production',
      newVersion: true,
      tfBackend: backend,
      evalSplit: 'test',
      gatesChecked: 4,
      championChallenger: 'required',
    });
    for (const k of ['testAccuracy', 'p50LatencyMs', 'p99LatencyMs', 'sizeBytes']) expect(typeof m[k]).toBe('number');
    // Measured, not made up: positive latencies, the real export's size, an accuracy a trained model
    // has (the fixture trains far above chance), and the same figures in the registry.
    expect(m.p50LatencyMs as number).toBeGreaterThan(0);
    expect(Number.isFinite(m.p99LatencyMs)).toBe(true);
    expect(m.p99LatencyMs as number).toBeGreaterThanOrEqual(m.p50LatencyMs as number);
    expect(m.testAccuracy as number).toBeGreaterThan(0.5);
    expect((await registry.resolveAlias('mnist'))?.version).toBe(1);

    const v = (await registry.getVersion('mnist', 1))!;
    expect(v.metrics).toMatchObject({ testAccuracy: m.testAccuracy, p50LatencyMs: m.p50LatencyMs, p99LatencyMs: m.p99LatencyMs });
    expect(m.sizeBytes).toBe(v.bytes);
    expect(v.runId).toBe('run-1');
    expect(v.artifactUri).toMatch(/^artifact:registry\/mnist\/sha256-[0-9a-f]{64}$/);
    expect(await store.verify({ kind: 'model', uri: v.artifactUri, sha256: v.sha256, bytes: v.bytes })).toEqual({ ok: true });
    expect((await readdir(store.resolve(v.artifactUri))).sort()).toEqual(['model.json', 'weights.bin']);

    const record = JSON.parse(await readFile(path.join(store.resolve(r.outputs.deployment!), 'deployment.json'), 'utf8'));
    expect(record).toMatchObject({ model: 'mnist', version: 1, alias: 'production', previousVersion: null });
    expect(r.outputs.deployment!.kind).toBe('deployment');
  });

  it('is idempotent: the same run + stage deploying again returns the same version', async () => {
    const r = await deploy('run-1', { modelName: 'mnist', gates: { minTestAccuracy: 0.5 } });
    expect(r.metrics).toMatchObject({ version: 1, newVersion: false });
    expect((await registry.listVersions('mnist')).length).toBe(1);
  });

  it('a quantized model deploys as version 2 and loads with plain tf.loadLayersModel from the registry', async () => {
    const r = await deploy('run-2', { modelName: 'mnist', gates: { minTestAccuracy: 0.5 } });
    expect(r.metrics).toMatchObject({ version: 2, promoted: true });
    // Quantized and pruned, it may measure a little below production: an admin opts the model out of champion/challenger.
    await registry.setPromotionPolicy('mnist', { requireChampionChallenger: false }, ADMIN.name);
    const r2 = await deploy('run-3', { modelName: 'mnist' }, quantized, { startedBy: ADMIN });
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
    const r = await deploy('run-q', { modelName: 'mnist-q', quantize: 'uint8', gates: { minTestAccuracy: 0.5 } });
    expect(r.metrics).toMatchObject({ version: 1, weightFormat: 'uint8' });
    const v = (await registry.getVersion('mnist-q', 1))!;
    const json = JSON.parse(await readFile(path.join(store.resolve(v.artifactUri), 'model.json'), 'utf8'));
    const weights: { quantization?: { dtype: string } }[] = json.weightsManifest[0].weights;
    expect(weights.length).toBeGreaterThan(0);
    expect(weights.every((w) => w.quantization?.dtype === 'uint8')).toBe(true);
    const float = (await registry.getVersion('mnist', 2))!;
    expect(float.metrics.weightFormat).toBe('float32');
    expect(v.bytes).toBeLessThan(float.bytes / 2);
    const again = await deploy('run-q2', { modelName: 'mnist-q', quantize: 'float16', promote: false }, quantized);
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
      const err = await dispatch({
        plugin: deployStage(),
        store,
        stageId: 'deploy',
        pipeline: 'mnist-default',
        startedBy: TEST_OWNER,
        params: { modelName: 'mnist', promote: false },
        inputs: { model: ref, dataset },
        services: { models: registry } as StageServices,
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ApplicationFailure);
      expect(err).toMatchObject({
        type: 'MODEL_DATASET_MISMATCH',
        nonRetryable: true,
        message: expect.stringContaining('model expects inputs of shape [5, 1]'),
      });
    }
  });

  it('records the input spec the model was trained on with the version', async () => {
    const v = (await registry.getVersion('mnist', 1))!;
    const spec = v.inputSpec!;
    expect(spec).toMatchObject({ shape: [8, 8], dtype: 'float32', describe: 'z-scored features', raw: { kind: 'zscore', describe: 'raw feature values' } });
    expect(spec.raw?.kind === 'zscore' && spec.raw.mean.length).toBe(64);
    const ds = await readDataset(store.resolve(dataset), { splits: ['train', 'test'] });
    const x = inputsOf(ds, ds.splits.test!);
    expect(x.length).toBeGreaterThan(0);
    const [lo, hi] = spec.range;
    expect(x.every((val) => val >= lo && val <= hi)).toBe(true);
    expect(hi - lo).toBeLessThan(100);
  });

  it('a model name belongs to the token that registered it first: the same pipeline name from another token is refused before any work; an admin may', async () => {
    expect(await registry.owner('mnist')).toMatchObject({
      model: 'mnist',
      tokenId: TEST_OWNER.tokenId,
      name: TEST_OWNER.name,
      pipeline: 'mnist-default',
      runId: 'run-1',
    });
    const before = (await registry.listVersions('mnist')).length;
    const e = await failure(
      deploy('run-other', { modelName: 'mnist', gates: { minTestAccuracy: 0 } }, model, { pipeline: 'mnist-default', startedBy: OPERATOR }),
    );
    expect(e).toMatchObject({ type: 'MODEL_NAME_TAKEN', retryable: false, details: { model: 'mnist' } });
    expect(e.message).toBe("model name mnist belongs to another token; registering versions of it or moving its aliases needs the owning token or an admin's");
    expect((await registry.listVersions('mnist')).length).toBe(before);
    // A run that records no token (older runs, old schedules) owns nothing, not even a new name.
    expect((await failure(deploy('run-anon', { modelName: 'unclaimed', promote: false }, model, { startedBy: null }))).type).toBe('MODEL_NAME_TAKEN');
    expect((await failure(deploy('run-anon', { modelName: 'unclaimed', promote: false }, model, { startedBy: { name: 'old', role: 'operator' } }))).type).toBe(
      'MODEL_NAME_TAKEN',
    );
    expect(await registry.hasModel('unclaimed')).toBe(false);

    // Through the real dispatch: the starter arrives with the activity input.
    const services = { models: registry } as StageServices;
    const refused = await dispatch({
      plugin: deployStage(),
      store,
      stageId: 'deploy-x',
      pipeline: 'mnist-default',
      startedBy: OPERATOR,
      params: { modelName: 'mnist', promote: false },
      inputs: { model, dataset },
      services,
    }).catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(ApplicationFailure);
    expect(refused).toMatchObject({ type: 'MODEL_NAME_TAKEN', nonRetryable: true });
    const ok = await dispatch({
      plugin: deployStage(),
      store,
      stageId: 'deploy-x',
      pipeline: 'intruder',
      startedBy: ADMIN,
      params: { modelName: 'mnist', promote: false },
      inputs: { model, dataset },
      services,
    });
    expect(ok.metrics).toMatchObject({ model: 'mnist', version: before + 1, promoted: false });
    expect(await registry.owner('mnist')).toMatchObject({ tokenId: TEST_OWNER.tokenId });

    // A new name is claimed by the token of the first run that registers it, whatever its pipeline.
    await deploy('run-new', { modelName: 'fresh-name', promote: false }, model, { pipeline: 'newcomer', startedBy: OPERATOR });
    expect(await registry.owner('fresh-name')).toMatchObject({ tokenId: OPERATOR.tokenId, name: 'ci', pipeline: 'newcomer', runId: 'run-new' });
  });

  it('promoting with no gates set needs a run started by an admin; registering without promoting does not', async () => {
    const e = await failure(deploy('run-u1', { modelName: 'mnist' }));
    expect(e).toMatchObject({ type: 'PROMOTION_UNGATED', retryable: false });
    expect(e.message).toBe(
      'model mnist: promoting to production with no promotion gates set needs a run started with an admin token; set gates (e.g. noWorseThan: production, minTestAccuracy) or promote: false',
    );
    expect((await registry.listVersions('mnist')).some((v) => v.runId === 'run-u1')).toBe(false);
    // tolerance alone is no gate
    expect((await failure(deploy('run-u1', { modelName: 'mnist', gates: {} }))).type).toBe('PROMOTION_UNGATED');
    const admin = await deploy('run-u2', { modelName: 'mnist-admin' }, model, { startedBy: ADMIN });
    expect(admin.metrics).toMatchObject({ promoted: true, gatesChecked: 1, noWorseThan: 'passed: no production version yet', championChallenger: 'required' });
  });

  it('every promotion to production passes champion/challenger, whatever the spec says, unless an admin opted the model out', async () => {
    const weak = await makeModelArtifact(tf, store, dataset, { runId: 'weak-cc', hidden: [2], epochs: 1 });
    await deploy('run-cc1', { modelName: 'cc', gates: { minTestAccuracy: 0 } });
    // A trivial gate, and a tolerance as large as the schema allows: capped at the policy's 0.02.
    const e = await failure(deploy('run-cc2', { modelName: 'cc', gates: { minTestAccuracy: 0, noWorseThan: 'production', tolerance: 1 } }, weak));
    expect(e.type).toBe('PROMOTION_GATE_FAILED');
    expect(e.message).toMatch(
      /noWorseThan production failed: test accuracy 0\.\d{4} < production version 1's 0\.\d{4} − tolerance 0\.02 on the same test set$/,
    );
    // An admin's run is held to it as well.
    expect((await failure(deploy('run-cc3', { modelName: 'cc', gates: { minTestAccuracy: 0 } }, weak, { startedBy: ADMIN }))).type).toBe(
      'PROMOTION_GATE_FAILED',
    );
    expect((await registry.resolveAlias('cc'))?.version).toBe(1);
    // Another alias is not production: no champion/challenger.
    expect((await deploy('run-cc4', { modelName: 'cc', alias: 'canary', gates: { minTestAccuracy: 0 } }, weak)).metrics).toMatchObject({
      promoted: true,
      championChallenger: 'not moving production',
    });

    await registry.setPromotionPolicy('cc', { requireChampionChallenger: false }, ADMIN.name);
    const out = await deploy('run-cc5', { modelName: 'cc', gates: { minTestAccuracy: 0 } }, weak);
    expect(out.metrics).toMatchObject({ promoted: true, championChallenger: 'opted out by ops', gatesChecked: 1 });
    expect((await registry.resolveAlias('cc'))?.version).toBe(out.metrics.version);
  });

  it('a promotion that another promotion overtook while it measured fails retryably (ALIAS_MOVED) instead of replacing the newer production', async () => {
    await deploy('run-m1', { modelName: 'moved', gates: { minTestAccuracy: 0 } });
    await deploy('run-m2', { modelName: 'moved', promote: false });
    // Between the champion/challenger measurement and the promotion, production moves to version 2.
    const racing = new Proxy(registry, {
      get(t, name, r) {
        if (name !== 'register') return Reflect.get(t, name, r);
        return async (...args: Parameters<ModelRegistry['register']>) => {
          await t.setAlias('moved', 'production', 2, 'promote');
          return t.register(...args);
        };
      },
    });
    const plugin = deployStage();
    const ctx = stageContext(store, { runId: 'run-m3', stageId: 'deploy', pipeline: 'mnist-default', services: { models: racing } });
    const e = await failure(plugin.run(ctx, plugin.paramsSchema.parse({ modelName: 'moved', gates: { minTestAccuracy: 0 } }), { model, dataset }));
    expect(e).toMatchObject({ type: 'ALIAS_MOVED', retryable: true });
    expect(e.message).toBe(
      'model moved version 3 is registered but not promoted yet: production of moved moved to version 2 while version 3 was compared with version 1',
    );
    expect((await registry.resolveAlias('moved'))?.version).toBe(2);
    // The retry measures against the production of now.
    expect((await deploy('run-m3', { modelName: 'moved', gates: { minTestAccuracy: 0 } })).metrics).toMatchObject({
      version: 3,
      promoted: true,
      productionVersion: 2,
    });
  });

  it('noWorseThan production compares the candidate with the production version on the same test set', async () => {
    const first = await deploy('run-c1', { modelName: 'champ', gates: { noWorseThan: 'production' } });
    expect(first.metrics).toMatchObject({
      version: 1,
      promoted: true,
      noWorseThan: 'passed: no production version yet',
      noWorseThanPassed: true,
      gatesChecked: 1,
    });
    expect(first.metrics.productionVersion).toBeUndefined();

    const weak = await makeModelArtifact(tf, store, dataset, { runId: 'weak', hidden: [2], epochs: 1 });
    const e = await failure(deploy('run-c2', { modelName: 'champ', gates: { noWorseThan: 'production' } }, weak));
    expect(e.type).toBe('PROMOTION_GATE_FAILED');
    expect(e.message).toMatch(
      /^model champ version 2 is registered but not promoted: noWorseThan production failed: test accuracy 0\.\d{4} < production version 1's 0\.\d{4} on the same test set$/,
    );
    const gate = (e.details!.gates as GateResult[])[0]!;
    expect(gate).toMatchObject({ gate: 'noWorseThan', passed: false, productionVersion: 1, productionTestAccuracy: first.metrics.testAccuracy });
    expect(gate.measured).toBeLessThan(first.metrics.testAccuracy as number);
    expect(e.details).toMatchObject({ productionVersion: 1, productionTestAccuracy: first.metrics.testAccuracy, noWorseThanPassed: false });
    expect((await registry.resolveAlias('champ'))?.version).toBe(1);

    // A tolerance that covers the gap lets it through, once an admin's policy allows that much.
    const gap = (first.metrics.testAccuracy as number) - gate.measured;
    await registry.setPromotionPolicy('champ', { requireChampionChallenger: true, maxTolerance: 1 }, ADMIN.name);
    const tolerant = await deploy('run-c3', { modelName: 'champ', gates: { noWorseThan: 'production', tolerance: Math.min(1, gap + 0.01) } }, weak);
    expect(tolerant.metrics).toMatchObject({
      version: 3,
      promoted: true,
      productionVersion: 1,
      productionTestAccuracy: first.metrics.testAccuracy,
      noWorseThanPassed: true,
    });
    expect(tolerant.metrics.noWorseThan).toMatch(/^passed: test accuracy 0\.\d{4} ≥ production version 1's 0\.\d{4} − tolerance [\d.]+ on the same test set$/);

    // The stronger model then beats the weak production version.
    const back = await deploy('run-c4', { modelName: 'champ', gates: { noWorseThan: 'production' } });
    expect(back.metrics).toMatchObject({ version: 4, promoted: true, productionVersion: 3, noWorseThanPassed: true });
    expect(back.metrics.productionTestAccuracy as number).toBeLessThan(back.metrics.testAccuracy as number);
    const record = JSON.parse(await readFile(path.join(store.resolve(back.outputs.deployment!), 'deployment.json'), 'utf8'));
    expect(record.gates[0]).toMatchObject({ gate: 'noWorseThan', productionVersion: 3, passed: true });
  });
});
