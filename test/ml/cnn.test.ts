// Layer specs (core:pretrain's model.layers): the schema's errors, and a small conv net trained by
// the step loop and taken by prune-quantize (with a fine-tune), multi-device-fit and deploy, on this
// project's backend. pipelines/mnist-cnn.yaml is checked against the stages' params schemas.
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { loadTf } from '../../ml/backend.js';
import { buildFromLayers } from '../../ml/models/layers.js';
import type { ArtifactRef, StageResult } from '../../plugins/contract.js';
import { dataPrepStage } from '../../plugins/core/data-prep/index.js';
import { multiDeviceFitStage } from '../../plugins/core/multi-device-fit/index.js';
import { pretrainStage } from '../../plugins/core/pretrain/index.js';
import { pruneQuantizeStage } from '../../plugins/core/prune-quantize/index.js';
import { deployStage } from '../../plugins/core/deploy/index.js';
import type { StageServices } from '../../plugins/services.js';
import { ModelRegistry } from '../../serving/registry.js';
import { freshRegistryDb } from '../models/db.js';
import { makeContext, tmpStore } from './helpers.js';

let store: Awaited<ReturnType<typeof tmpStore>>;
let dataset: ArtifactRef;

const smallCnn = [
  { type: 'conv2d', filters: 8, kernelSize: 3 },
  { type: 'maxPooling2d' },
  { type: 'conv2d', filters: 8, kernelSize: 3, padding: 'same' },
  { type: 'maxPooling2d' },
  { type: 'dense', units: 32 },
];

beforeAll(async () => {
  store = await tmpStore();
  const prep = dataPrepStage();
  const res = await prep.run(makeContext({ store: store.store, stageId: 'prep' }), prep.paramsSchema.parse({ limit: 2400, seed: 5 }), {});
  dataset = res.outputs.dataset!;
});
afterAll(async () => {
  await store.cleanup();
});

describe('layer specs', () => {
  const schema = pretrainStage().paramsSchema;
  const issues = (model: unknown) => {
    const r = schema.safeParse({ model });
    return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
  };

  it('leave the default the seed MLP, with no layers key (existing specs parse as before)', () => {
    expect(schema.parse({}).model).toEqual({ hiddenUnits: [128], activation: 'relu', dropout: 0 });
    expect(schema.parse({ model: { hiddenUnits: [64, 32] } }).model).toEqual({ hiddenUnits: [64, 32], activation: 'relu', dropout: 0 });
  });

  it('fill layer defaults and refuse bad stacks with errors that name the layer', () => {
    expect(schema.parse({ model: { layers: [{ type: 'conv2d', filters: 4, kernelSize: 3 }] } }).model.layers).toEqual([
      { type: 'conv2d', filters: 4, kernelSize: 3, strides: 1, padding: 'valid', activation: 'relu' },
    ]);
    expect(
      issues({
        layers: [
          { type: 'dense', units: 8 },
          { type: 'conv2d', filters: 4, kernelSize: 3 },
        ],
      }),
    ).toEqual(['model.layers.1: conv2d must come before any flatten or dense layer (layers[0] is dense)']);
    expect(issues({ layers: [{ type: 'maxPooling2d' }] })).toEqual(['model.layers.0: the layers need at least one conv2d or dense layer']);
    expect(issues({ hiddenUnits: [64], layers: [{ type: 'dense', units: 8 }] })).toEqual([
      'model.layers: layers replaces hiddenUnits, activation and dropout: give either layers or those, not both',
    ]);
    expect(issues({ layers: [{ type: 'lstm', units: 8 }] })[0]).toMatch(/^model\.layers\.0\.type: /);
    expect(issues({ layers: [{ type: 'dense', units: 8, kernelSize: 3 }] })[0]).toMatch(/^model\.layers\.0: .*kernelSize/);
    expect(issues({ layers: [] })[0]).toMatch(/^model\.layers: /);
  });

  it('refuse, naming the layer, a stack that does not fit the input', async () => {
    const { tf } = await loadTf();
    expect(() =>
      buildFromLayers(tf, {
        inputShape: [28, 28],
        numClasses: 10,
        seed: 1,
        layers: [
          { type: 'conv2d', filters: 2, kernelSize: 15, strides: 1, padding: 'valid', activation: 'relu' },
          { type: 'conv2d', filters: 2, kernelSize: 15, strides: 1, padding: 'valid', activation: 'relu' },
        ],
      }),
    ).toThrow(/model\.layers\[1\]: conv2d \(size 15, valid\) does not fit its 14×14 input/);
    expect(() =>
      buildFromLayers(tf, {
        inputShape: [20],
        numClasses: 3,
        seed: 1,
        layers: [{ type: 'conv2d', filters: 2, kernelSize: 3, strides: 1, padding: 'valid', activation: 'relu' }],
      }),
    ).toThrow(/need image rows.*\[20\]/);
  });

  it("pipelines/mnist-cnn.yaml: every stage's params pass its schema", async () => {
    const spec = parse(await readFile(new URL('../../pipelines/mnist-cnn.yaml', import.meta.url), 'utf8')) as { stages: { plugin: string; params: unknown }[] };
    const schemas: Record<string, { safeParse(v: unknown): { success: boolean; error?: unknown } }> = {
      'core:pretrain': pretrainStage().paramsSchema,
      'core:prune-quantize': pruneQuantizeStage().paramsSchema,
      'core:multi-device-fit': multiDeviceFitStage().paramsSchema,
    };
    for (const s of spec.stages) {
      const r = schemas[s.plugin]?.safeParse(s.params);
      if (r) expect(r.success, `${s.plugin}: ${JSON.stringify(r.error)}`).toBe(true);
    }
    const pre = spec.stages.find((s) => s.plugin === 'core:pretrain')!;
    const { tf } = await loadTf();
    const model = buildFromLayers(tf, { inputShape: [28, 28], numClasses: 10, seed: 42, layers: pretrainStage().paramsSchema.parse(pre.params).model.layers! });
    expect(model.countParams()).toBe(56_714); // the figure the YAML's comment gives
  });
});

describe('a small conv net through the ML stages', () => {
  it('is trained by the step loop, pruned (conv kernels too) and fine-tuned, fitted on 2 replicas, then deployed', async () => {
    const pre = pretrainStage();
    const trained = await pre.run(
      makeContext({ store: store.store, stageId: 'cnn-train' }),
      pre.paramsSchema.parse({ epochs: 2, model: { layers: smallCnn } }),
      { dataset },
    );
    expect(trained.metrics.trainLoop).toBe('step');
    expect(trained.metrics.parameters).toBe(8 * 9 + 8 + (8 * 9 * 8 + 8) + 6 * 6 * 8 * 32 + 32 + 32 * 10 + 10);
    expect(trained.metrics.testAccuracy as number).toBeGreaterThan(0.6); // chance is 0.1; 2,000 images, 2 epochs

    const pq = pruneQuantizeStage();
    const pruned = await pq.run(
      makeContext({ store: store.store, stageId: 'cnn-prune' }),
      pq.paramsSchema.parse({ sparsity: 0.5, fineTuneEpochs: 1, quantize: 'none' }),
      { model: trained.outputs.model!, dataset },
    );
    expect(pruned.metrics.sparsity as number).toBeCloseTo(0.5, 3);
    expect(pruned.metrics.fineTuneLoop).toBe('step');
    // conv_1, conv_3, dense_5 and output kernels are all pruned
    expect(pruned.metrics.prunableWeights).toBe(8 * 9 + 8 * 9 * 8 + 6 * 6 * 8 * 32 + 32 * 10);
    expect(pruned.metrics.testAccuracyAfter as number).toBeGreaterThan(0.5);

    const fit = multiDeviceFitStage();
    const params = fit.paramsSchema.parse({ replicas: 2, epochs: 1, syncEverySteps: 10 });
    const inputs = { model: pruned.outputs.model!, dataset };
    const results: StageResult[] = await Promise.all(
      [0, 1].map((index) => fit.run(makeContext({ store: store.store, stageId: 'cnn-fit', replica: { index, count: 2 } }), params, inputs)),
    );
    for (const r of results) expect(r.metrics.trainLoop).toBe('step');
    const reduced = await fit.dataParallel!.reduce(makeContext({ store: store.store, stageId: 'cnn-fit' }), params, inputs, results);
    expect(reduced.metrics.testAccuracy as number).toBeGreaterThan(0.5);

    // Deploy quantizes it to uint8, registers and promotes it, and serves it at batch 1.
    const db = await freshRegistryDb('sqlite', store.root);
    try {
      const dep = deployStage();
      const ctx = makeContext({
        store: store.store,
        stageId: 'cnn-deploy',
        startedBy: { name: 'cnn-test', role: 'operator', tokenId: '0123456789ab' },
        services: { models: new ModelRegistry(db) } as unknown as StageServices,
      });
      const out = await dep.run(
        ctx,
        dep.paramsSchema.parse({ modelName: 'mnist-cnn-test', quantize: 'uint8', latencyRuns: 20, gates: { minTestAccuracy: 0.5 } }),
        { model: reduced.outputs.model!, dataset },
      );
      expect(out.metrics).toMatchObject({ model: 'mnist-cnn-test', alias: 'production' });
      expect(out.metrics.p50LatencyMs as number).toBeGreaterThan(0);
    } finally {
      await db.close();
    }
  });
});
