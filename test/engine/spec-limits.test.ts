import { describe, expect, it } from 'vitest';
import { checkApiBinding, loadConfig } from '../../app/config.js';
import * as tf from '@tensorflow/tfjs';
import { EngineError } from '../../engine/errors.js';
import { checkParamsSize, maxParallel, resolveSpec, SPEC_LIMITS, SpecValidationError, type SpecIssue } from '../../engine/spec.js';
import { buildFromLayers, type LayerSpec } from '../../ml/models/layers.js';
import { buildMlp } from '../../ml/models/mlp.js';
import { buildDataset, writeDataset } from '../../ml/data/dataset.js';
import { StageError } from '../../lib/errors.js';
import { stageContext, tempStore } from '../models/fixtures.js';
import { dataPrepStage } from '../../plugins/core/data-prep/index.js';
import { DEFAULT_MAX_MODEL_PARAMETERS, modelArchSchema, modelParameters, pretrainStage } from '../../plugins/core/pretrain/index.js';
import { visibilityString } from '../../engine/run-list.js';
import { z } from '../../plugins/sdk.js';
import { defineStage, PLUGIN_API_VERSION } from '../../plugins/contract.js';
import { StageRegistry } from '../../plugins/registry.js';

const note = defineStage({
  name: 'test:note',
  version: '1.0.0',
  apiVersion: PLUGIN_API_VERSION,
  description: 'a note',
  // A lenient (stripping) schema, as many plugins write them: unknown keys must still be refused.
  paramsSchema: z.object({
    text: z.string().default('x'),
    source: z.discriminatedUnion('format', [z.object({ format: z.literal('csv'), path: z.string() }), z.object({ format: z.literal('mnist') })]).optional(),
    labels: z.record(z.string(), z.number()).optional(),
    layers: z.array(z.object({ units: z.number() })).optional(),
  }),
  consumes: [],
  produces: ['note'],
  resource: 'cpu',
  async run() {
    return { outputs: {}, metrics: {} };
  },
});
const registry = new StageRegistry().register(note).freeze();
const queues = { taskQueues: { cpu: 'c', gpu: 'g' } };

function issues(spec: unknown): SpecIssue[] {
  try {
    resolveSpec(spec, registry, queues);
    return [];
  } catch (e) {
    if (e instanceof SpecValidationError) return e.issues;
    throw e;
  }
}
const stage = (id: string, extra: Record<string, unknown> = {}) => ({ id, plugin: 'test:note', ...extra });

describe('spec limits', () => {
  it('refuses unknown param keys at any depth, naming each path (lenient schemas included)', () => {
    const found = issues({
      name: 'p',
      stages: [
        stage('a', { params: { txt: 'typo', source: { format: 'csv', path: 'x.csv', lable: 'y' }, labels: { any: 1 }, layers: [{ units: 2, unit: 3 }] } }),
      ],
    });
    expect(found.filter((i) => i.code === 'UNKNOWN_PARAM').map((i) => i.path)).toEqual([
      'stages[0].params.txt',
      'stages[0].params.source.lable',
      'stages[0].params.layers[0].unit',
    ]);
    expect(issues({ name: 'p', stages: [stage('a', { params: { text: 'ok', labels: { free: 1 } } })] })).toEqual([]);
  });

  it('refuses an inputs entry for a kind the plugin does not consume', () => {
    const found = issues({ name: 'p', stages: [stage('a', { inputs: { nope: 'nowhere' } })] });
    expect(found.map((i) => `${i.path} ${i.code}`)).toEqual(['stages[0].inputs.nope MISSING_INPUT']);
  });

  it('bounds timeouts: zero, too long, and a heartbeat beyond startToClose are refused', () => {
    const at = (timeouts: unknown, retry?: unknown) =>
      issues({ name: 'p', stages: [stage('a', { timeouts, ...(retry ? { retry } : {}) })] }).map((i) => `${i.path}: ${i.message}`);
    expect(at({ startToClose: 0 })).toEqual(['stages[0].timeouts.startToClose: must be between 1s and 7d; got 0s']);
    expect(at({ startToClose: '30d' })[0]).toContain('must be between 1s and 7d');
    expect(at({ heartbeat: '0s' })[0]).toContain('stages[0].timeouts.heartbeat');
    expect(at({ startToClose: '1m', heartbeat: '5m' })).toEqual(['stages[0].timeouts.heartbeat: the heartbeat timeout (5m) must not exceed startToClose (1m)']);
    expect(at(undefined, { initialInterval: 0 })[0]).toContain('stages[0].retry.initialInterval');
    expect(issues({ name: 'p', onFailure: { action: 'pause', timeout: '90d' }, stages: [stage('a')] })[0]!.path).toBe('onFailure.timeout');
  });

  it('bounds the size of a spec: stage count, params bytes, whole spec', () => {
    const many = Array.from({ length: SPEC_LIMITS.stages + 1 }, (_, i) => stage(`s${i}`));
    expect(issues({ name: 'p', stages: many }).map((i) => i.path)).toContain('stages');
    const big = 'x'.repeat(SPEC_LIMITS.paramsBytes);
    expect(issues({ name: 'p', stages: [stage('a', { params: { text: big } })] })[0]!.path).toBe('stages[0].params');
    const huge = { name: 'p', description: 'd', stages: [stage('a')], padding: 'x'.repeat(SPEC_LIMITS.specBytes) };
    expect(issues(huge)[0]!.message).toMatch(/bytes of JSON; at most/);
  });

  it('refuses more stages running at once than the limit, and counts dependencies right', () => {
    const wide = Array.from({ length: SPEC_LIMITS.parallelStages + 1 }, (_, i) => stage(`s${i}`, { needs: [] }));
    const found = issues({ name: 'p', stages: wide });
    expect(found.map((i) => i.code)).toEqual(['TOO_PARALLEL']);
    expect(found[0]!.message).toContain(`${SPEC_LIMITS.parallelStages + 1} stages could run at the same time`);
    // Exactly at the limit, or a long chain, is fine.
    expect(issues({ name: 'p', stages: wide.slice(1) })).toEqual([]);
    expect(issues({ name: 'p', stages: Array.from({ length: SPEC_LIMITS.stages }, (_, i) => stage(`s${i}`)) })).toEqual([]);
    // Diamond a → (b, c) → d: two at most.
    const anc = new Map(Object.entries({ a: [], b: ['a'], c: ['a'], d: ['b', 'c', 'a'] }));
    expect(
      maxParallel(
        ['a', 'b', 'c', 'd'].map((id) => ({ id })),
        anc,
      ).sort(),
    ).toEqual(['b', 'c']);
  });

  it('escapes visibility query strings (quotes and backslashes)', () => {
    expect(visibilityString(`x' OR 1=1 \\`)).toBe(`'x\\' OR 1=1 \\\\'`);
  });

  it('refuses CAPSTAN_AUTH=off on a non-loopback address, allows it on loopback', () => {
    const cfg = (env: Record<string, string>) => loadConfig({ CAPSTAN_DATA_DIR: '/tmp/x', ...env }, '/tmp');
    expect(() => checkApiBinding(cfg({ CAPSTAN_AUTH: 'off', CAPSTAN_API_HOST: '0.0.0.0' }))).toThrow(
      /refusing to start: CAPSTAN_AUTH=off with CAPSTAN_API_HOST=0.0.0.0/,
    );
    expect(() => checkApiBinding(cfg({ CAPSTAN_AUTH: 'off', CAPSTAN_API_HOST: '127.0.0.1' }))).not.toThrow();
    expect(() => checkApiBinding(cfg({ CAPSTAN_API_HOST: '0.0.0.0' }))).not.toThrow();
  });

  it("bounds params on the paths outside a spec (retryStage params, event payloads) like a stage's params", () => {
    expect(() => checkParamsSize({ text: 'x'.repeat(SPEC_LIMITS.paramsBytes - 20) }, 'params')).not.toThrow();
    let err: unknown;
    try {
      checkParamsSize({ text: 'x'.repeat(SPEC_LIMITS.paramsBytes) }, 'params');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(EngineError);
    expect((err as EngineError).code).toBe('BAD_ARGUMENT');
    expect((err as EngineError).message).toMatch(/^params must be at most 64 KiB of JSON/);
  });

  it('reads the quota settings, refusing a minimum schedule interval under 1s', () => {
    const cfg = (env: Record<string, string>) => loadConfig({ CAPSTAN_DATA_DIR: '/tmp/x', ...env }, '/tmp');
    expect(cfg({}).quotas).toEqual({ maxConcurrentRuns: 20, maxSchedules: 20, minScheduleIntervalMs: 60_000 });
    expect(cfg({}).maxModelParameters).toBe(50_000_000);
    expect(cfg({ CAPSTAN_MAX_CONCURRENT_RUNS: '3', CAPSTAN_MAX_SCHEDULES: '1', CAPSTAN_MIN_SCHEDULE_INTERVAL: '5m' }).quotas).toEqual({
      maxConcurrentRuns: 3,
      maxSchedules: 1,
      minScheduleIntervalMs: 300_000,
    });
    expect(() => cfg({ CAPSTAN_MIN_SCHEDULE_INTERVAL: '500ms' })).toThrow(/CAPSTAN_MIN_SCHEDULE_INTERVAL: must be a duration of at least 1s/);
    expect(() => cfg({ CAPSTAN_MAX_CONCURRENT_RUNS: '0' })).toThrow(/CAPSTAN_MAX_CONCURRENT_RUNS/);
  });
});

describe('resource ceilings of built-in stages', () => {
  const mnist = { featureShape: [28, 28], numClasses: 10 };

  it("counts a model's parameters as TensorFlow.js builds it (MLP and layer stacks)", async () => {
    await tf.setBackend('cpu');
    const archs = [
      { hiddenUnits: [128] },
      { hiddenUnits: [300, 100], dropout: 0.2 },
      {
        layers: [
          { type: 'conv2d', filters: 8, kernelSize: 3 },
          { type: 'maxPooling2d' },
          { type: 'conv2d', filters: 4, kernelSize: 5, padding: 'same', strides: 2 },
          { type: 'dense', units: 32 },
          { type: 'dropout', rate: 0.1 },
        ],
      },
      {
        layers: [
          { type: 'dense', units: 64 },
          { type: 'dense', units: 16 },
        ],
      },
    ];
    for (const raw of archs) {
      const arch = modelArchSchema.parse(raw);
      const model = arch.layers
        ? buildFromLayers(tf, { inputShape: mnist.featureShape, numClasses: 10, seed: 1, layers: arch.layers as LayerSpec[] })
        : buildMlp(tf, {
            inputShape: mnist.featureShape,
            numClasses: 10,
            seed: 1,
            hiddenUnits: arch.hiddenUnits,
            activation: arch.activation,
            dropout: arch.dropout,
          });
      expect(modelParameters(arch, mnist), JSON.stringify(raw)).toBe(model.countParams());
      model.dispose();
    }
    expect(modelParameters(modelArchSchema.parse({ hiddenUnits: [128] }), { featureShape: [5], numClasses: 3 })).toBe(5 * 128 + 128 + 128 * 3 + 3);
  });

  it('refuses a core:pretrain model over the parameter ceiling at validation, naming the stage, the count and the ceiling', () => {
    const reg = (maxParameters?: number) =>
      new StageRegistry()
        .register(dataPrepStage({ dataRoots: ['/tmp'] }))
        .register(pretrainStage(maxParameters ? { maxParameters } : {}))
        .freeze();
    const spec = (model: unknown) => ({
      name: 'big',
      stages: [
        { id: 'data', plugin: 'core:data-prep' },
        { id: 'train', plugin: 'core:pretrain', params: { model } },
      ],
    });
    const problems = (r: StageRegistry, model: unknown) => {
      try {
        resolveSpec(spec(model), r, queues);
        return [];
      } catch (e) {
        if (e instanceof SpecValidationError) return e.issues;
        throw e;
      }
    };
    const huge = { hiddenUnits: [8192, 8192] };
    const n = modelParameters(modelArchSchema.parse(huge), mnist);
    expect(n).toBeGreaterThan(DEFAULT_MAX_MODEL_PARAMETERS);
    const found = problems(reg(), huge);
    expect(found).toHaveLength(1);
    expect(found[0]!.path).toBe('stages[1].params.model');
    expect(found[0]!.message).toContain(`the model has ${n.toLocaleString('en-US')} trainable parameters`);
    expect(found[0]!.message).toContain("this host's ceiling is 50,000,000 (CAPSTAN_MAX_MODEL_PARAMETERS)");
    // A conv stack with wide filters is counted too; the seed MLP fits; a lowered ceiling refuses it.
    expect(
      problems(reg(), {
        layers: [
          { type: 'conv2d', filters: 1024, kernelSize: 15 },
          { type: 'conv2d', filters: 1024, kernelSize: 15 },
        ],
      })[0]!.path,
    ).toBe('stages[1].params.model');
    expect(problems(reg(), { hiddenUnits: [128] })).toEqual([]);
    expect(problems(reg(50_000), { hiddenUnits: [128] })[0]!.message).toContain('ceiling is 50,000');
  });

  it("checks the ceiling again with the dataset's real shape before training (rows wider than validation assumed)", async () => {
    const { store, cleanup } = await tempStore();
    try {
      // 40×40 rows: a 128-unit MLP has 101,770 parameters on 28×28 (fits 150,000) but 206,218 here.
      const rows = (n: number) => ({ x: new Uint8Array(n * 1600).map((_, i) => i % 251), y: new Uint8Array(n).map((_, i) => i % 10) });
      const ds = buildDataset({
        featureShape: [40, 40],
        numClasses: 10,
        pool: rows(40),
        test: rows(10),
        validationFraction: 0.1,
        seed: 1,
        normalize: 'scale255',
      });
      const dir = await store.freshDir(store.dirFor('wide', 'data', 'dataset'));
      await writeDataset(dir, ds);
      const dataset = await store.seal('dataset', dir);
      const stage = pretrainStage({ maxParameters: 150_000 });
      const params = stage.paramsSchema.parse({ model: { hiddenUnits: [128] }, epochs: 1 });
      const err = await stage.run(stageContext(store, { stageId: 'train' }), params, { dataset }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(StageError);
      expect((err as StageError).type).toBe('RESOURCE_CEILING');
      expect((err as StageError).retryable).toBe(false);
      expect((err as StageError).message).toBe(
        "stage train: the model has 206,218 trainable parameters for 40×40 inputs and 10 classes; this host's ceiling is 150,000 (CAPSTAN_MAX_MODEL_PARAMETERS)",
      );
    } finally {
      await cleanup();
    }
  });
});
